import RoutingCore

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

    /// Hashed blocks held (pinned or evictable); the list holds the evictable ones, least
    /// recently released at the head. Pinned blocks are in the table, not in the list.
    private var blocks: HashedList
    /// Pin count per node.
    private var pins: [Int32] = []
    /// Hashed blocks held (pinned or evictable).
    public var usedBlocks: Int { self.blocks.count }
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
        self.blocks = HashedList(capacity: self.capacityBlocks)
    }

    /// Blocks a request may use without eviction: every free or evictable block.
    public var availableBlocks: Int { self.capacityBlocks - self.pinnedBlocks }

    /// Fraction of capacity holding pinned (running) blocks, as `vllm:kv_cache_usage_perc`.
    public var usage: Double { Double(self.pinnedBlocks) / Double(self.capacityBlocks) }

    /// Leading blocks of `chain` that are cached.
    public func cachedPrefix(_ chain: [UInt64]) -> Int {
        var n = 0
        for hash in chain {
            guard self.blocks.node(of: hash) != nil else { break }
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
            if i < cachedBlocks, let node = self.blocks.node(of: hash), self.pins[Int(node)] > 0 { continue }
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
        if let node = self.blocks.node(of: hash) {
            guard self.pins[Int(node)] == 0 else { return }
            if node != self.blocks.tail {
                self.blocks.unlink(node)
                self.blocks.pushBack(node)
            }
            return
        }
        guard self.makeRoom() else { return }
        self.blocks.pushBack(self.addBlock(hash, pins: 0))
    }

    /// Forgets everything (as `POST /reset_prefix_cache`); pinned blocks stay.
    public mutating func reset() {
        while self.blocks.head >= 0 { self.blocks.remove(self.blocks.head) }
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
        if let node = self.blocks.node(of: hash) {
            if self.pins[Int(node)] == 0 {
                self.blocks.unlink(node)
                self.pinnedBlocks += 1
            }
            self.pins[Int(node)] += 1
            return true
        }
        guard self.makeRoom() else { return false }
        _ = self.addBlock(hash, pins: 1)
        self.pinnedBlocks += 1
        return true
    }

    private mutating func unpin(_ hash: UInt64) {
        guard let node = self.blocks.node(of: hash), self.pins[Int(node)] > 0 else { return }
        self.pins[Int(node)] -= 1
        if self.pins[Int(node)] == 0 {
            self.pinnedBlocks -= 1
            // Most recently released goes to the tail (evicted last).
            self.blocks.pushBack(node)
        }
    }

    /// Evicts the least recently released block when the cache is full; false when every block
    /// is pinned or reserved.
    @inline(__always)
    private mutating func makeRoom() -> Bool {
        guard self.usedBlocks + self.reservedBlocks >= self.capacityBlocks else { return true }
        guard self.blocks.head >= 0 else { return false }
        self.blocks.remove(self.blocks.head)
        return true
    }

    /// A new block node (not linked) with its pin count.
    @inline(__always)
    private mutating func addBlock(_ hash: UInt64, pins: Int32) -> Int32 {
        let node = self.blocks.add(hash)
        if Int(node) < self.pins.count { self.pins[Int(node)] = pins } else { self.pins.append(pins) }
        return node
    }
}
