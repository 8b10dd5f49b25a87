/// An approximate, bounded index of which prompt blocks this router recently sent to which replica.
///
/// Each replica has an LRU of block-chain hashes sized to its KV capacity, so the index forgets
/// roughly when the replica's cache would. Blocks of a request are touched last-to-first, leaving
/// a prompt's first blocks the most recent: eviction eats prefixes from their tail, as the engine's
/// LRU does, and the set stays prefix-closed enough to binary-search the matched depth.
public struct PrefixIndex: Sendable {
    var slices = ReplicaTable<BlockLRU>()

    public init() {}

    /// Records that a prompt with this block chain (and session) went to replica `id`.
    ///
    /// The session key is kept as one more entry (domain-separated from block hashes): a short
    /// turn may add no full block beyond the shared prefix, yet the replica now holds the
    /// conversation, and the next turn should find it there.
    public mutating func record(_ chain: [UInt64], session: UInt64? = nil, replicaID id: Int, capacityBlocks: Int) {
        guard !chain.isEmpty || session != nil, capacityBlocks > 0 else { return }
        self.slices.modify(id, default: { BlockLRU(capacity: capacityBlocks) }) { slice in
            slice.setCapacity(capacityBlocks)
            for hash in chain.reversed() { slice.touch(hash) }
            if let session { slice.touch(Self.sessionEntry(session)) }
        }
    }

    /// Whether replica `id` recently received a request of this session.
    public func hasSeen(session: UInt64, replicaID id: Int) -> Bool {
        self.withSlice(id) { $0.contains(Self.sessionEntry(session)) } ?? false
    }

    /// Reads a replica's slice in place (no copy of its arrays per candidate per request).
    @inline(__always)
    func withSlice<R>(_ id: Int, _ body: (borrowing BlockLRU) -> R) -> R? {
        self.slices.read(id, body)
    }

    @inline(__always)
    static func sessionEntry(_ session: UInt64) -> UInt64 {
        session ^ 0x5E55_1011_5E55_1011
    }

    /// How many leading blocks of `chain` replica `id` probably holds.
    public func matchedBlocks(_ chain: [UInt64], replicaID id: Int) -> Int {
        guard !chain.isEmpty else { return 0 }
        return self.withSlice(id) { slice in
            guard slice.contains(chain[0]) else { return 0 }
            var lo = 0
            var hi = chain.count
            while lo + 1 < hi {
                let mid = (lo + hi) >> 1
                if slice.contains(chain[mid]) { lo = mid } else { hi = mid }
            }
            return lo + 1
        } ?? 0
    }

    /// Drops what is known about replicas not in `ids` (they left the fleet).
    public mutating func retain(replicaIDs ids: Set<Int>) {
        self.slices.removeAll { id, _ in !ids.contains(id) }
    }

    /// Forgets everything held for replica `id` (its cache is gone); the number of entries dropped.
    @discardableResult
    public mutating func forget(replicaID id: Int) -> Int {
        let n = self.count(replicaID: id)
        self.slices.removeAll { slice, _ in slice == id }
        return n
    }

    /// Number of blocks held for replica `id`.
    public func count(replicaID id: Int) -> Int { self.slices.read(id) { $0.count } ?? 0 }

    /// Blocks held over all replicas (bounded by the sum of capacities).
    public var totalBlocks: Int { self.slices.allValues.reduce(0) { $0 + $1.count } }
}

/// A fixed-capacity LRU set of 64-bit hashes: a `HashedList` whose list runs from the most
/// recently used node (head) to the least (tail).
struct BlockLRU: Sendable {
    private(set) var capacity: Int
    private var list: HashedList

    init(capacity: Int) {
        self.capacity = max(1, capacity)
        self.list = HashedList(capacity: self.capacity)
    }

    var count: Int { self.list.count }

    mutating func setCapacity(_ capacity: Int) {
        let capacity = max(1, capacity)
        guard capacity != self.capacity else { return }
        self.capacity = capacity
        while self.list.count > capacity { self.list.remove(self.list.tail) }
        self.list.reserve(capacity: capacity)
    }

    func contains(_ key: UInt64) -> Bool { self.list.node(of: key) != nil }

    /// Marks `key` most recently used, inserting it (and evicting the least recent) if needed.
    mutating func touch(_ key: UInt64) {
        if let node = self.list.node(of: key) {
            if node != self.list.head {
                self.list.unlink(node)
                self.list.pushFront(node)
            }
            return
        }
        if self.list.count >= self.capacity, self.list.tail >= 0 { self.list.remove(self.list.tail) }
        self.list.pushFront(self.list.add(key))
    }
}
