import CXXHash

/// XXH3-64 from the system libxxhash.
///
/// Every key cacheroute derives (block chains, ring points, rendezvous scores) goes through these
/// functions, so a change here is a change to every placement: golden tests pin the values.
public enum XXH3 {
    /// XXH3-64 of `bytes` with `seed` (seed 0 equals the unseeded XXH3-64 that `xxhsum -H3` prints).
    @inlinable
    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        XXH3_64bits_withSeed(bytes.baseAddress, bytes.count, seed)
    }

    /// XXH3-64 of the UTF-8 bytes of `string`.
    @inlinable
    public static func hash(_ string: String, seed: UInt64 = 0) -> UInt64 {
        var string = string
        return string.withUTF8 { XXH3_64bits_withSeed($0.baseAddress, $0.count, seed) }
    }

    /// XXH3-64 of a byte array.
    @inlinable
    public static func hash(_ bytes: [UInt8], seed: UInt64 = 0) -> UInt64 {
        bytes.withUnsafeBytes { XXH3_64bits_withSeed($0.baseAddress, $0.count, seed) }
    }

    /// XXH3-64 of the 8 little-endian bytes of `value`: used to combine two hashes.
    @inlinable
    public static func hash(_ value: UInt64, seed: UInt64) -> UInt64 {
        withUnsafeBytes(of: value.littleEndian) { XXH3_64bits_withSeed($0.baseAddress, $0.count, seed) }
    }

    /// XXH3-128 of `bytes` as (high, low) 64-bit halves: for keys where a collision would serve
    /// one request another's answer (the response cache), 64 bits are not enough.
    @inlinable
    public static func hash128(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> (high: UInt64, low: UInt64) {
        let h = XXH3_128bits_withSeed(bytes.baseAddress, bytes.count, seed)
        return (h.high64, h.low64)
    }

    /// The libxxhash version number, e.g. 801 for 0.8.1.
    public static var libraryVersion: UInt32 { XXH_versionNumber() }
}

extension UInt64 {
    /// The 16-digit lower-case hexadecimal form used for keys in logs, `explain` and fixtures.
    public var hex16: String {
        String(unsafeUninitializedCapacity: 16) { buffer in
            self.writeHex16(to: UnsafeMutableRawPointer(buffer.baseAddress!))
            return 16
        }
    }

    /// Writes the 16 ASCII digits of `hex16` at `out`, which must have room for them.
    public func writeHex16(to out: UnsafeMutableRawPointer) {
        for i in 0..<16 {
            let nibble = UInt8(truncatingIfNeeded: self >> UInt64(60 - 4 * i)) & 0xF
            out.storeBytes(of: nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10, toByteOffset: i, as: UInt8.self)
        }
    }
}
