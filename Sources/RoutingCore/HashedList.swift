/// Nodes keyed by 64-bit hashes in flat arrays: an open-addressing table (linear probing,
/// backward-shift deletion, no tombstones) from key to node, one doubly linked list threaded
/// through the nodes, and a free list so removed nodes are reused before the arrays grow.
/// The keys are already uniform hashes, so their low bits index the table directly.
///
/// The base of both block LRUs: the router's approximate index (`BlockLRU`) and the emulated
/// engine's KV cache (`EngineCache`, where pinned nodes are held outside the list).
public struct HashedList: Sendable {
    /// Table of node index + 1 (0: empty slot); size a power of two, at least twice the capacity.
    @usableFromInline var table: [Int32] = []
    @usableFromInline var mask = 0
    @usableFromInline var keys: [UInt64] = []
    @usableFromInline var prev: [Int32] = []
    @usableFromInline var next: [Int32] = []
    @usableFromInline var free: [Int32] = []
    @usableFromInline var first: Int32 = -1
    @usableFromInline var last: Int32 = -1
    @usableFromInline var nodes = 0

    /// First and last nodes of the list (-1: empty).
    public var head: Int32 { self.first }
    public var tail: Int32 { self.last }
    /// Nodes in the table (linked or not).
    public var count: Int { self.nodes }

    public init(capacity: Int) {
        self.reserve(capacity: capacity)
        self.keys.reserveCapacity(min(capacity, 1 << 20))
    }

    /// Grows the table so `capacity` nodes keep it at most half full.
    public mutating func reserve(capacity: Int) {
        guard self.table.count < max(16, 2 * capacity) else { return }
        var size = 16
        while size < 2 * capacity { size <<= 1 }
        self.table = [Int32](repeating: 0, count: size)
        self.mask = size - 1
        let live = Set(self.free)
        for node in 0..<Int32(self.keys.count) where !live.contains(node) { self.insertSlot(node) }
    }

    /// The node holding `key`.
    @inlinable
    public func node(of key: UInt64) -> Int32? {
        var i = Int(truncatingIfNeeded: key) & self.mask
        while true {
            let entry = self.table[i]
            if entry == 0 { return nil }
            if self.keys[Int(entry - 1)] == key { return entry - 1 }
            i = (i + 1) & self.mask
        }
    }

    @inlinable
    public func key(of node: Int32) -> UInt64 { self.keys[Int(node)] }

    /// Adds `key` (not present) as a new node, not linked into the list.
    @inlinable
    public mutating func add(_ key: UInt64) -> Int32 {
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
        self.nodes += 1
        return node
    }

    /// Removes a node: out of the list and the table, its index free for reuse.
    @inlinable
    public mutating func remove(_ node: Int32) {
        self.unlink(node)
        self.removeSlot(of: node)
        self.free.append(node)
        self.nodes -= 1
    }

    /// Takes a node out of the list (a no-op for a node not in it); it stays in the table.
    @inlinable
    public mutating func unlink(_ node: Int32) {
        let p = self.prev[Int(node)]
        let n = self.next[Int(node)]
        if p >= 0 { self.next[Int(p)] = n } else if self.first == node { self.first = n }
        if n >= 0 { self.prev[Int(n)] = p } else if self.last == node { self.last = p }
        self.prev[Int(node)] = -1
        self.next[Int(node)] = -1
    }

    /// Links an unlinked node at the head.
    @inlinable
    public mutating func pushFront(_ node: Int32) {
        self.prev[Int(node)] = -1
        self.next[Int(node)] = self.first
        if self.first >= 0 { self.prev[Int(self.first)] = node } else { self.last = node }
        self.first = node
    }

    /// Links an unlinked node at the tail.
    @inlinable
    public mutating func pushBack(_ node: Int32) {
        self.prev[Int(node)] = self.last
        self.next[Int(node)] = -1
        if self.last >= 0 { self.next[Int(self.last)] = node } else { self.first = node }
        self.last = node
    }

    @inlinable
    mutating func insertSlot(_ node: Int32) {
        var i = Int(truncatingIfNeeded: self.keys[Int(node)]) & self.mask
        while self.table[i] != 0 { i = (i + 1) & self.mask }
        self.table[i] = node + 1
    }

    @inlinable
    mutating func removeSlot(of node: Int32) {
        var i = Int(truncatingIfNeeded: self.keys[Int(node)]) & self.mask
        while self.table[i] != node + 1 {
            if self.table[i] == 0 { return }
            i = (i + 1) & self.mask
        }
        var j = i
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
}
