/// Per-replica state keyed by replica id, for the per-request path.
///
/// A decision looks up every candidate's load and index slice; with `Dictionary` that is a
/// SipHash per lookup and a copy of the value (for an LRU, a retain and release of each of its
/// arrays), which together were a fifth of a decision's time. This is open addressing with a
/// multiplicative hash, values read in place. Removal (a replica left) rebuilds the table:
/// it is rare, and the table holds one entry per replica.
struct ReplicaTable<Value: Sendable>: Sendable {
    /// Replica id per slot, -1 when empty.
    private var ids: [Int]
    private var values: [Value?]
    private var mask: Int
    private(set) var count = 0

    init() {
        self.ids = Array(repeating: -1, count: 8)
        self.values = Array(repeating: nil, count: 8)
        self.mask = 7
    }

    @inline(__always)
    private func slot(of id: Int) -> Int? {
        var i = Self.hash(id) & self.mask
        while true {
            let k = self.ids[i]
            if k == id { return i }
            if k == -1 { return nil }
            i = (i + 1) & self.mask
        }
    }

    @inline(__always)
    private static func hash(_ id: Int) -> Int {
        Int(truncatingIfNeeded: (UInt64(truncatingIfNeeded: id) &* 0x9E37_79B9_7F4A_7C15) >> 29)
    }

    /// A copy of the value (for small values; read large ones in place with `read`).
    subscript(id: Int) -> Value? {
        guard let i = self.slot(of: id) else { return nil }
        return self.values[i]
    }

    /// Applies `body` to the value in place, without copying it.
    @inline(__always)
    func read<R>(_ id: Int, _ body: (borrowing Value) -> R) -> R? {
        guard let i = self.slot(of: id) else { return nil }
        return self.values[i].map(body)
    }

    /// Changes the value in place, inserting `make()` first when absent.
    @inline(__always)
    mutating func modify<R>(_ id: Int, default make: () -> Value, _ body: (inout Value) -> R) -> R {
        let i: Int
        if let found = self.slot(of: id) {
            i = found
        } else {
            i = self.insertSlot(id)
            self.values[i] = make()
        }
        return body(&self.values[i]!)
    }

    private mutating func insertSlot(_ id: Int) -> Int {
        if (self.count + 1) * 2 > self.ids.count { self.rehash(capacity: self.ids.count * 2, keeping: { _ in true }) }
        var i = Self.hash(id) & self.mask
        while self.ids[i] != -1 { i = (i + 1) & self.mask }
        self.ids[i] = id
        self.count += 1
        return i
    }

    /// Keeps the entries whose id and value pass `keep`.
    mutating func removeAll(where remove: (Int, borrowing Value) -> Bool) {
        var drop = false
        for i in self.ids.indices where self.ids[i] != -1 {
            if let v = self.values[i], remove(self.ids[i], v) { drop = true }
        }
        guard drop else { return }
        let ids = self.ids
        let values = self.values
        self.rehash(capacity: self.ids.count) { i in !remove(ids[i], values[i]!) }
    }

    private mutating func rehash(capacity: Int, keeping keep: (Int) -> Bool) {
        let oldIDs = self.ids
        var oldValues = self.values
        self.ids = Array(repeating: -1, count: capacity)
        self.values = Array(repeating: nil, count: capacity)
        self.mask = capacity - 1
        self.count = 0
        for i in oldIDs.indices where oldIDs[i] != -1 && keep(i) {
            let slot = self.insertSlot(oldIDs[i])
            self.values[slot] = oldValues[i].take()
        }
    }

    /// Every value (order unspecified).
    var allValues: [Value] { self.values.compactMap { $0 } }
}
