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

    /// Number of blocks held for replica `id`.
    public func count(replicaID id: Int) -> Int { self.slices.read(id) { $0.count } ?? 0 }

    /// Blocks held over all replicas (bounded by the sum of capacities).
    public var totalBlocks: Int { self.slices.allValues.reduce(0) { $0 + $1.count } }
}

/// A fixed-capacity LRU set of 64-bit hashes, in flat arrays: an open-addressing table (linear
/// probing, backward-shift deletion) from hash to node, and the recency list as node links.
/// The keys are already uniform hashes, so their low bits index the table directly.
struct BlockLRU: Sendable {
    private(set) var capacity: Int
    /// Table of node index + 1 (0: empty slot); size a power of two, at least twice the capacity.
    private var table: [Int32] = []
    private var mask = 0
    private var keys: [UInt64] = []
    private var prev: [Int32] = []
    private var next: [Int32] = []
    /// Most and least recently used nodes.
    private var head: Int32 = -1
    private var tail: Int32 = -1
    /// Nodes freed by eviction, reused before the arrays grow.
    private var free: [Int32] = []
    private(set) var count = 0

    init(capacity: Int) {
        self.capacity = max(1, capacity)
        self.resizeTable(for: self.capacity)
    }

    mutating func setCapacity(_ capacity: Int) {
        let capacity = max(1, capacity)
        guard capacity != self.capacity else { return }
        self.capacity = capacity
        while self.count > capacity { self.evictTail() }
        if self.table.count < 2 * capacity { self.resizeTable(for: capacity) }
    }

    private mutating func resizeTable(for capacity: Int) {
        var size = 16
        while size < 2 * capacity { size <<= 1 }
        self.table = [Int32](repeating: 0, count: size)
        self.mask = size - 1
        var node = self.head
        while node >= 0 {
            self.insertSlot(node)
            node = self.next[Int(node)]
        }
    }

    @inline(__always)
    private func slot(of key: UInt64) -> Int? {
        var i = Int(truncatingIfNeeded: key) & self.mask
        while true {
            let entry = self.table[i]
            if entry == 0 { return nil }
            if self.keys[Int(entry - 1)] == key { return i }
            i = (i + 1) & self.mask
        }
    }

    private mutating func insertSlot(_ node: Int32) {
        var i = Int(truncatingIfNeeded: self.keys[Int(node)]) & self.mask
        while self.table[i] != 0 { i = (i + 1) & self.mask }
        self.table[i] = node + 1
    }

    private mutating func removeSlot(_ start: Int) {
        var i = start
        var j = start
        while true {
            j = (j + 1) & self.mask
            let entry = self.table[j]
            if entry == 0 { break }
            let ideal = Int(truncatingIfNeeded: self.keys[Int(entry - 1)]) & self.mask
            // Move j back to i unless its ideal slot lies cyclically in (i, j].
            let between = i <= j ? (ideal > i && ideal <= j) : (ideal > i || ideal <= j)
            if !between {
                self.table[i] = entry
                i = j
            }
        }
        self.table[i] = 0
    }

    func contains(_ key: UInt64) -> Bool { self.slot(of: key) != nil }

    /// Marks `key` most recently used, inserting it (and evicting the least recent) if needed.
    mutating func touch(_ key: UInt64) {
        if let s = self.slot(of: key) {
            let node = self.table[s] - 1
            if node != self.head {
                self.unlink(node)
                self.linkFront(node)
            }
            return
        }
        if self.count >= self.capacity { self.evictTail() }
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
        self.insertSlot(node)
        self.linkFront(node)
        self.count += 1
    }

    private mutating func evictTail() {
        let node = self.tail
        guard node >= 0 else { return }
        self.unlink(node)
        if let s = self.slot(of: self.keys[Int(node)]) { self.removeSlot(s) }
        self.free.append(node)
        self.count -= 1
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
