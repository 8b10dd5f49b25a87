import XXHash

/// Chain hashing of fixed-size blocks: `h[i] = XXH3(block[i], seed: h[i-1])`, `h[-1] = seed`.
///
/// Two byte strings share `h[i]` exactly when they share their first i+1 blocks (up to hash
/// collisions), which is how the engine's prefix cache shares KV blocks. The router hashes its
/// canonical prompt this way; the emulator and the simulator hash the engine's token blocks the
/// same way (with the salt in the seed, as vLLM mixes it into the first block).
public enum BlockChain {
    /// Hashes of every full block of `bytes` (a trailing partial block is not part of the chain).
    public static func hashes(_ bytes: UnsafeRawBufferPointer, blockBytes: Int, seed: UInt64) -> [UInt64] {
        precondition(blockBytes > 0, "block size must be positive")
        let blocks = bytes.count / blockBytes
        var result: [UInt64] = []
        result.reserveCapacity(blocks)
        var previous = seed
        var offset = 0
        for _ in 0..<blocks {
            previous = XXH3.hash(UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + blockBytes]), seed: previous)
            result.append(previous)
            offset += blockBytes
        }
        return result
    }

    /// Hashes of every full block of a byte array.
    public static func hashes(_ bytes: [UInt8], blockBytes: Int, seed: UInt64) -> [UInt64] {
        bytes.withUnsafeBytes { Self.hashes($0, blockBytes: blockBytes, seed: seed) }
    }
}

/// The canonical prompt held as three pieces (head, main, tail) that read as one byte string,
/// so tools parsed after the messages need not be copied in front of them.
struct PromptPieces {
    let head: [UInt8]
    let main: [UInt8]
    let tail: [UInt8]

    var count: Int { self.head.count + self.main.count + self.tail.count }

    func withPieces<R>(_ body: ([UnsafeRawBufferPointer]) -> R) -> R {
        self.head.withUnsafeBytes { h in
            self.main.withUnsafeBytes { m in
                self.tail.withUnsafeBytes { t in body([h, m, t]) }
            }
        }
    }

    /// The block chain over the concatenation.
    func chain(blockBytes: Int, seed: UInt64) -> [UInt64] {
        if self.head.isEmpty, self.tail.isEmpty {
            return BlockChain.hashes(self.main, blockBytes: blockBytes, seed: seed)
        }
        return self.withPieces { pieces in
            var result: [UInt64] = []
            result.reserveCapacity(self.count / blockBytes)
            var previous = seed
            var staging: [UInt8] = []
            staging.reserveCapacity(blockBytes)
            for piece in pieces {
                var offset = 0
                if !staging.isEmpty {
                    let take = min(blockBytes - staging.count, piece.count)
                    staging.append(contentsOf: UnsafeRawBufferPointer(rebasing: piece[0..<take]))
                    offset = take
                    if staging.count == blockBytes {
                        previous = XXH3.hash(staging, seed: previous)
                        result.append(previous)
                        staging.removeAll(keepingCapacity: true)
                    }
                }
                while offset + blockBytes <= piece.count {
                    previous = XXH3.hash(
                        UnsafeRawBufferPointer(rebasing: piece[offset..<offset + blockBytes]),
                        seed: previous
                    )
                    result.append(previous)
                    offset += blockBytes
                }
                if offset < piece.count {
                    staging.append(contentsOf: UnsafeRawBufferPointer(rebasing: piece[offset...]))
                }
            }
            return result
        }
    }

    /// The chain hash of the first `length` bytes: a block hash when `length` is a multiple of the
    /// block size, else the hash of the partial block seeded with the chain before it.
    func prefixHash(at length: Int, chain: [UInt64], blockBytes: Int, seed: UInt64) -> UInt64 {
        let fullBlocks = length / blockBytes
        let previous = fullBlocks == 0 ? seed : chain[fullBlocks - 1]
        let start = fullBlocks * blockBytes
        guard length > start else { return previous }
        // At most one block: staged in a temporary (stack) buffer.
        return withUnsafeTemporaryAllocation(byteCount: length - start, alignment: 8) { partial in
            var filled = 0
            self.withPieces { pieces in
                var base = 0
                for piece in pieces {
                    let lo = max(start, base)
                    let hi = min(length, base + piece.count)
                    if lo < hi {
                        let bytes = UnsafeRawBufferPointer(rebasing: piece[(lo - base)..<(hi - base)])
                        UnsafeMutableRawBufferPointer(rebasing: partial[filled...]).copyMemory(from: bytes)
                        filled += bytes.count
                    }
                    base += piece.count
                }
            }
            return XXH3.hash(UnsafeRawBufferPointer(rebasing: partial[0..<filled]), seed: previous)
        }
    }
}
