import NIOConcurrencyHelpers

/// The in-memory store: a byte-bounded LRU with a TTL per entry.
///
/// What it counts per entry is its key and value bytes plus `overhead` (the dictionary slot, the
/// list links, both arrays' headers), so the bound holds for a million small entries as for a
/// few large ones. Entries live in a slab (arrays indexed by slot) linked in use order: a hit
/// moves its slot to the front, room is made from the back.
struct LRUStore {
    static let overhead = 224

    var index: [String: Int32] = [:]
    var keys: [String] = []
    var values: [[UInt8]] = []
    var expiry: [Double] = []
    var prev: [Int32] = []
    var next: [Int32] = []
    var free: [Int32] = []
    var headSlot: Int32 = -1
    var tailSlot: Int32 = -1
    var bytes = 0
    var evictions = 0
    let maxBytes: Int

    init(maxBytes: Int) {
        self.maxBytes = maxBytes
    }

    var count: Int { self.index.count }

    static func cost(_ key: String, _ value: [UInt8]) -> Int { key.utf8.count + value.count + Self.overhead }

    mutating func get(_ key: String, now: Double) -> [UInt8]? {
        guard let slot = self.index[key] else { return nil }
        if self.expiry[Int(slot)] <= now {
            self.remove(slot: slot)
            return nil
        }
        self.unlink(slot)
        self.pushFront(slot)
        return self.values[Int(slot)]
    }

    mutating func set(_ key: String, _ value: [UInt8], expiresAt: Double) {
        let cost = Self.cost(key, value)
        guard cost <= self.maxBytes else { return }
        if let slot = self.index[key] { self.remove(slot: slot) }
        while self.bytes + cost > self.maxBytes, self.tailSlot >= 0 {
            self.remove(slot: self.tailSlot)
            self.evictions += 1
        }
        let slot: Int32
        if let reused = self.free.popLast() {
            slot = reused
            self.keys[Int(slot)] = key
            self.values[Int(slot)] = value
            self.expiry[Int(slot)] = expiresAt
        } else {
            slot = Int32(self.keys.count)
            self.keys.append(key)
            self.values.append(value)
            self.expiry.append(expiresAt)
            self.prev.append(-1)
            self.next.append(-1)
        }
        self.index[key] = slot
        self.bytes += cost
        self.pushFront(slot)
    }

    @discardableResult
    mutating func delete(_ key: String) -> Bool {
        guard let slot = self.index[key] else { return false }
        self.remove(slot: slot)
        return true
    }

    /// Deletes every key `match` accepts; the number deleted.
    mutating func deleteAll(where match: (String) -> Bool) -> Int {
        let doomed = self.index.filter { match($0.key) }.map(\.value)
        for slot in doomed { self.remove(slot: slot) }
        return doomed.count
    }

    mutating func remove(slot: Int32) {
        let i = Int(slot)
        self.unlink(slot)
        self.index[self.keys[i]] = nil
        self.bytes -= Self.cost(self.keys[i], self.values[i])
        self.keys[i] = ""
        self.values[i] = []
        self.free.append(slot)
    }

    mutating func unlink(_ slot: Int32) {
        let i = Int(slot)
        let p = self.prev[i]
        let n = self.next[i]
        if p >= 0 { self.next[Int(p)] = n } else if self.headSlot == slot { self.headSlot = n }
        if n >= 0 { self.prev[Int(n)] = p } else if self.tailSlot == slot { self.tailSlot = p }
        self.prev[i] = -1
        self.next[i] = -1
    }

    mutating func pushFront(_ slot: Int32) {
        let i = Int(slot)
        self.prev[i] = -1
        self.next[i] = self.headSlot
        if self.headSlot >= 0 { self.prev[Int(self.headSlot)] = slot }
        self.headSlot = slot
        if self.tailSlot < 0 { self.tailSlot = slot }
    }
}

/// The LRU behind a lock, shared by every event loop.
final class MemoryStore: Sendable {
    let store: NIOLockedValueBox<LRUStore>

    init(maxBytes: Int) {
        self.store = NIOLockedValueBox(LRUStore(maxBytes: maxBytes))
    }

    func get(_ keys: [String], now: Double) -> [[UInt8]?] {
        self.store.withLockedValue { s in keys.map { s.get($0, now: now) } }
    }

    func set(_ key: String, _ value: [UInt8], expiresAt: Double) {
        self.store.withLockedValue { $0.set(key, value, expiresAt: expiresAt) }
    }

    func delete(_ key: String) {
        self.store.withLockedValue { _ = $0.delete(key) }
    }

    func deleteAll(where match: (String) -> Bool) -> Int {
        self.store.withLockedValue { $0.deleteAll(where: match) }
    }

    var usage: (bytes: Int, entries: Int, evictions: Int) {
        self.store.withLockedValue { ($0.bytes, $0.count, $0.evictions) }
    }
}
