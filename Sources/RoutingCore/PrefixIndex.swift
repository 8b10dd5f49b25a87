/// An approximate, bounded index of which prompt blocks this router recently sent to which replica.
///
/// Each replica has an LRU of block-chain hashes sized to its KV capacity, so the index forgets
/// roughly when the replica's cache would. Blocks of a request are touched last-to-first, leaving
/// a prompt's first blocks the most recent: eviction eats prefixes from their tail, as the engine's
/// LRU does, and the set stays prefix-closed enough to binary-search the matched depth.
public struct PrefixIndex: Sendable {
    var slices: [Int: BlockLRU] = [:]

    public init() {}

    /// Records that the first `blocks` blocks of `chain` went to replica `id`.
    public mutating func record(_ chain: [UInt64], replicaID id: Int, capacityBlocks: Int) {
        guard !chain.isEmpty, capacityBlocks > 0 else { return }
        var slice = self.slices.removeValue(forKey: id) ?? BlockLRU(capacity: capacityBlocks)
        slice.capacity = capacityBlocks
        for hash in chain.reversed() { slice.touch(hash) }
        self.slices[id] = slice
    }

    /// How many leading blocks of `chain` replica `id` probably holds.
    public func matchedBlocks(_ chain: [UInt64], replicaID id: Int) -> Int {
        guard let slice = self.slices[id], !chain.isEmpty, slice.contains(chain[0]) else { return 0 }
        var lo = 0
        var hi = chain.count
        while lo + 1 < hi {
            let mid = (lo + hi) >> 1
            if slice.contains(chain[mid]) { lo = mid } else { hi = mid }
        }
        return lo + 1
    }

    /// Drops what is known about replicas not in `ids` (they left the fleet).
    public mutating func retain(replicaIDs ids: Set<Int>) {
        for id in self.slices.keys where !ids.contains(id) { self.slices[id] = nil }
    }

    /// Number of blocks held for replica `id`.
    public func count(replicaID id: Int) -> Int { self.slices[id]?.count ?? 0 }

    /// Blocks held over all replicas (bounded by the sum of capacities).
    public var totalBlocks: Int { self.slices.values.reduce(0) { $0 + $1.count } }
}

/// A fixed-capacity LRU set of 64-bit hashes, with nodes in flat arrays (no per-entry allocation).
struct BlockLRU: Sendable {
    var capacity: Int
    private var nodes: [UInt64: Int32] = [:]
    private var keys: [UInt64] = []
    private var prev: [Int32] = []
    private var next: [Int32] = []
    /// Most recently used node.
    private var head: Int32 = -1
    /// Least recently used node.
    private var tail: Int32 = -1

    init(capacity: Int) {
        self.capacity = capacity
        self.nodes.reserveCapacity(min(capacity, 1 << 16))
    }

    var count: Int { self.nodes.count }

    func contains(_ key: UInt64) -> Bool { self.nodes[key] != nil }

    /// Marks `key` most recently used, inserting it (and evicting the least recent) if needed.
    mutating func touch(_ key: UInt64) {
        if let node = self.nodes[key] {
            self.moveToFront(node)
            return
        }
        while self.nodes.count > self.capacity - 1, self.tail >= 0 {
            self.evictTail()
        }
        let node: Int32
        if let reused = self.free.popLast() {
            node = reused
            self.keys[Int(node)] = key
        } else {
            node = Int32(self.keys.count)
            self.keys.append(key)
            self.prev.append(-1)
            self.next.append(-1)
        }
        self.nodes[key] = node
        self.linkFront(node)
    }

    /// Nodes freed by eviction, reused before the arrays grow (storage stays within the largest capacity).
    private var free: [Int32] = []

    private mutating func evictTail() {
        let node = self.tail
        self.unlink(node)
        self.nodes[self.keys[Int(node)]] = nil
        self.free.append(node)
    }

    private mutating func moveToFront(_ node: Int32) {
        guard node != self.head else { return }
        self.unlink(node)
        self.linkFront(node)
    }

    private mutating func unlink(_ node: Int32) {
        let p = self.prev[Int(node)]
        let n = self.next[Int(node)]
        if p >= 0 { self.next[Int(p)] = n } else { self.head = n }
        if n >= 0 { self.prev[Int(n)] = p } else { self.tail = p }
        self.prev[Int(node)] = -1
        self.next[Int(node)] = -1
    }

    private mutating func linkFront(_ node: Int32) {
        self.prev[Int(node)] = -1
        self.next[Int(node)] = self.head
        if self.head >= 0 { self.prev[Int(self.head)] = node }
        self.head = node
        if self.tail < 0 { self.tail = node }
    }
}
