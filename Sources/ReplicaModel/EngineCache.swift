/// A vLLM-style prefix cache of KV blocks, in tokens.
///
/// Blocks are identified by chain hashes (`BlockChain`, the salt in the first seed), so a block is
/// shared exactly when the whole prefix up to it is. Blocks of running requests are pinned
/// (reference counted); a released block stays cached and becomes evictable, least recently
/// released first, and a request releases its blocks tail first, so prefixes are evicted from
/// their ends as in vLLM's free-block queue.
///
/// Capacity is in blocks; memory never exceeds it. Admission fails (the request waits) when the
/// new blocks do not fit beside the pinned ones.
public struct EngineCache: Sendable {
    public let capacityBlocks: Int
    public let blockTokens: Int

    /// Open-addressing table: hash -> node + 1 (0 empty).
    private var table: [Int32]
    private var mask: Int
    private var keys: [UInt64]
    private var pins: [Int32]
    /// Evictable list (unpinned cached blocks), least recent at `head`.
    private var prev: [Int32]
    private var next: [Int32]
    private var head: Int32 = -1
    private var tail: Int32 = -1
    private var free: [Int32] = []
    /// Hashed blocks held (pinned or evictable).
    public private(set) var usedBlocks = 0
    /// Blocks in use by running requests: their pinned prompt blocks plus reserved output blocks.
    public private(set) var pinnedBlocks = 0
    /// Anonymous blocks reserved for outputs being generated.
    public private(set) var reservedBlocks = 0

    /// Counters in tokens, as vLLM's `prefix_cache_queries` / `prefix_cache_hits`.
    public private(set) var queriedTokens = 0
    public private(set) var hitTokens = 0

    public init(capacityTokens: Int, blockTokens: Int = 16) {
        self.blockTokens = max(1, blockTokens)
        self.capacityBlocks = max(1, capacityTokens / self.blockTokens)
        var size = 16
        while size < 2 * self.capacityBlocks { size <<= 1 }
        self.table = [Int32](repeating: 0, count: size)
        self.mask = size - 1
        self.keys = []
        self.pins = []
        self.prev = []
        self.next = []
        self.keys.reserveCapacity(min(self.capacityBlocks, 1 << 20))
    }

    /// Blocks a request may use without eviction: every free or evictable block.
    public var availableBlocks: Int { self.capacityBlocks - self.pinnedBlocks }

    /// Fraction of capacity holding pinned (running) blocks, as `vllm:kv_cache_usage_perc`.
    public var usage: Double { Double(self.pinnedBlocks) / Double(self.capacityBlocks) }

    /// Leading blocks of `chain` that are cached.
    public func cachedPrefix(_ chain: [UInt64]) -> Int {
        var n = 0
        for hash in chain {
            guard self.slot(of: hash) != nil else { break }
            n += 1
        }
        return n
    }

    /// Tokens a prompt of `promptTokens` with this chain would get from cache. As in vLLM, at least
    /// one token is always computed, so a fully cached prompt gives up its last block.
    public func cachedTokens(_ chain: [UInt64], promptTokens: Int) -> Int {
        let usable = max(0, (promptTokens - 1) / self.blockTokens)
        return min(self.cachedPrefix(chain), usable) * self.blockTokens
    }

    /// Admits a request whose prompt blocks are `chain` (plus `extraBlocks` for its output):
    /// pins the cached prefix, allocates the rest (evicting as needed). Returns the cached tokens,
    /// or nil when the blocks do not fit beside the pinned ones (nothing changes then).
    public mutating func admit(_ chain: [UInt64], promptTokens: Int, extraBlocks: Int = 0) -> Int? {
        let cached = self.cachedTokens(chain, promptTokens: promptTokens)
        let cachedBlocks = cached / self.blockTokens
        // Blocks that must become pinned: the uncached ones, plus cached ones that are evictable now.
        var needed = extraBlocks
        for (i, hash) in chain.enumerated() {
            if i < cachedBlocks, let s = self.slot(of: hash), self.pins[Int(self.table[s] - 1)] > 0 { continue }
            needed += 1
        }
        guard needed <= self.availableBlocks else { return nil }
        self.queriedTokens += promptTokens
        self.hitTokens += cached
        self.reservedBlocks += extraBlocks
        self.pinnedBlocks += extraBlocks
        for hash in chain { _ = self.pin(hash) }
        return cached
    }

    /// Releases a request's blocks: they stay cached, evictable, the last block first.
    public mutating func release(_ chain: [UInt64], extraBlocks: Int = 0) {
        for hash in chain.reversed() { self.unpin(hash) }
        self.pinnedBlocks -= extraBlocks
        self.reservedBlocks -= extraBlocks
    }

    /// Adds generated blocks (the output's full blocks) as cached, evictable entries.
    public mutating func insertReleased(_ chain: ArraySlice<UInt64>) {
        for hash in chain { self.touchReleased(hash) }
    }

    /// Counts a lookup of `chain` and then records its blocks as cached and evictable, the last
    /// block least recent, without pinning (no running request holds them). For cache bounds.
    @discardableResult
    public mutating func lookupThenRecord(_ chain: [UInt64], promptTokens: Int) -> Int {
        let cached = self.cachedTokens(chain, promptTokens: promptTokens)
        self.queriedTokens += promptTokens
        self.hitTokens += cached
        for hash in chain.reversed() { self.touchReleased(hash) }
        return cached
    }

    /// Makes `hash` the most recently released block (inserting it if needed), with one lookup.
    /// A block pinned by a running request is left to its owner.
    @inline(__always)
    private mutating func touchReleased(_ hash: UInt64) {
        if let s = self.slot(of: hash) {
            let node = self.table[s] - 1
            guard self.pins[Int(node)] == 0 else { return }
            if node != self.tail {
                self.unlink(node)
                self.appendTail(node)
            }
            return
        }
        if self.usedBlocks + self.reservedBlocks >= self.capacityBlocks {
            guard self.head >= 0 else { return }
            self.evictHead()
        }
        let node: Int32
        if let reused = self.free.popLast() {
            node = reused
            self.keys[Int(node)] = hash
            self.pins[Int(node)] = 0
        } else {
            node = Int32(self.keys.count)
            self.keys.append(hash)
            self.pins.append(0)
            self.prev.append(-1)
            self.next.append(-1)
        }
        var i = Int(truncatingIfNeeded: hash) & self.mask
        while self.table[i] != 0 { i = (i + 1) & self.mask }
        self.table[i] = node + 1
        self.usedBlocks += 1
        self.appendTail(node)
    }

    @inline(__always)
    private mutating func appendTail(_ node: Int32) {
        self.prev[Int(node)] = self.tail
        self.next[Int(node)] = -1
        if self.tail >= 0 { self.next[Int(self.tail)] = node } else { self.head = node }
        self.tail = node
    }

    /// Forgets everything (as `POST /reset_prefix_cache`); pinned blocks stay.
    public mutating func reset() {
        while self.head >= 0 { self.evictHead() }
        self.queriedTokens = 0
        self.hitTokens = 0
    }

    /// Resets the counters only.
    public mutating func resetCounters() {
        self.queriedTokens = 0
        self.hitTokens = 0
    }

    // MARK: - Blocks

    /// Pins a block, inserting it if needed; false when there is no room (every block pinned).
    private mutating func pin(_ hash: UInt64) -> Bool {
        if let s = self.slot(of: hash) {
            let node = self.table[s] - 1
            if self.pins[Int(node)] == 0 {
                self.unlink(node)
                self.pinnedBlocks += 1
            }
            self.pins[Int(node)] += 1
            return true
        }
        if self.usedBlocks + self.reservedBlocks >= self.capacityBlocks {
            guard self.head >= 0 else { return false }
            self.evictHead()
        }
        let node: Int32
        if let reused = self.free.popLast() {
            node = reused
            self.keys[Int(node)] = hash
            self.pins[Int(node)] = 1
        } else {
            node = Int32(self.keys.count)
            self.keys.append(hash)
            self.pins.append(1)
            self.prev.append(-1)
            self.next.append(-1)
        }
        var i = Int(truncatingIfNeeded: hash) & self.mask
        while self.table[i] != 0 { i = (i + 1) & self.mask }
        self.table[i] = node + 1
        self.usedBlocks += 1
        self.pinnedBlocks += 1
        return true
    }

    private mutating func unpin(_ hash: UInt64) {
        guard let s = self.slot(of: hash) else { return }
        let node = self.table[s] - 1
        guard self.pins[Int(node)] > 0 else { return }
        self.pins[Int(node)] -= 1
        if self.pins[Int(node)] == 0 {
            self.pinnedBlocks -= 1
            // Most recently released goes to the tail (evicted last).
            self.appendTail(node)
        }
    }

    private mutating func evictHead() {
        let node = self.head
        guard node >= 0 else { return }
        self.unlink(node)
        if let s = self.slot(of: self.keys[Int(node)]) { self.removeSlot(s) }
        self.free.append(node)
        self.usedBlocks -= 1
    }

    private mutating func unlink(_ node: Int32) {
        let p = self.prev[Int(node)]
        let n = self.next[Int(node)]
        if p >= 0 { self.next[Int(p)] = n } else if self.head == node { self.head = n }
        if n >= 0 { self.prev[Int(n)] = p } else if self.tail == node { self.tail = p }
        self.prev[Int(node)] = -1
        self.next[Int(node)] = -1
    }

    @inline(__always)
    private func slot(of hash: UInt64) -> Int? {
        var i = Int(truncatingIfNeeded: hash) & self.mask
        while true {
            let entry = self.table[i]
            if entry == 0 { return nil }
            if self.keys[Int(entry - 1)] == hash { return i }
            i = (i + 1) & self.mask
        }
    }

    private mutating func removeSlot(_ start: Int) {
        var i = start
        var j = start
        while true {
            j = (j + 1) & self.mask
            let entry = self.table[j]
            if entry == 0 { break }
            let ideal = Int(truncatingIfNeeded: self.keys[Int(entry - 1)]) & self.mask
            let between = i <= j ? (ideal > i && ideal <= j) : (ideal > i || ideal <= j)
            if !between {
                self.table[i] = entry
                i = j
            }
        }
        self.table[i] = 0
    }
}
