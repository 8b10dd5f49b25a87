/// The semantic cache's nearest-neighbour index: unit vectors grouped by gate (requests that
/// match but for their varying text), searched exhaustively within one gate.
///
/// Bounded: at most `maxPerGate` vectors per gate (the oldest go first) and `maxVectors` in all
/// (the gates least recently searched or filled lose theirs first). A gate holds the few
/// thousand variants of one prompt at most, so a linear scan (384 multiply-adds per entry) is
/// tens of microseconds.
public struct SemanticIndex: Sendable {
    public struct Entry: Sendable, Equatable {
        public var key: CacheKey
        public var vector: [Float]
        public var expiresAt: Double

        public init(key: CacheKey, vector: [Float], expiresAt: Double) {
            self.key = key
            self.vector = vector
            self.expiresAt = expiresAt
        }
    }

    struct Gate {
        var entries: [Entry] = []
        var lastUsed: UInt64 = 0
    }

    let maxPerGate: Int
    let maxVectors: Int
    var gates: [UInt64: Gate] = [:]
    var tick: UInt64 = 0
    public private(set) var count = 0

    public init(maxPerGate: Int, maxVectors: Int) {
        self.maxPerGate = max(1, maxPerGate)
        self.maxVectors = max(1, maxVectors)
    }

    /// `v` scaled to length 1 (nil for a zero or non-finite vector).
    public static func normalized(_ v: [Float]) -> [Float]? {
        var sum: Float = 0
        for x in v { sum += x * x }
        guard sum.isFinite, sum > 0 else { return nil }
        let scale = 1 / sum.squareRoot()
        return v.map { $0 * scale }
    }

    public mutating func insert(gate: UInt64, _ entry: Entry) {
        self.tick += 1
        var g = self.gates.removeValue(forKey: gate) ?? Gate()
        self.count -= g.entries.count
        g.entries.removeAll { $0.key == entry.key }
        g.entries.append(entry)
        if g.entries.count > self.maxPerGate { g.entries.removeFirst(g.entries.count - self.maxPerGate) }
        g.lastUsed = self.tick
        self.count += g.entries.count
        self.gates[gate] = g
        self.evict()
    }

    /// Replaces a gate's entries (a shared store's current list).
    public mutating func replace(gate: UInt64, with entries: [Entry]) {
        self.tick += 1
        self.count -= self.gates[gate]?.entries.count ?? 0
        let g = Gate(entries: Array(entries.suffix(self.maxPerGate)), lastUsed: self.tick)
        self.count += g.entries.count
        self.gates[gate] = g.entries.isEmpty ? nil : g
        self.evict()
    }

    /// The closest fresh entry of `gate` and its cosine similarity; expired ones are dropped.
    public mutating func nearest(gate: UInt64, to query: [Float], now: Double) -> (entry: Entry, similarity: Double)? {
        guard var g = self.gates[gate] else { return nil }
        self.tick += 1
        g.lastUsed = self.tick
        let before = g.entries.count
        g.entries.removeAll { $0.expiresAt <= now || $0.vector.count != query.count }
        var best: (Entry, Float)?
        for e in g.entries {
            var dot: Float = 0
            e.vector.withUnsafeBufferPointer { v in
                query.withUnsafeBufferPointer { q in
                    for i in 0..<q.count { dot += v[i] * q[i] }
                }
            }
            if best == nil || dot > best!.1 { best = (e, dot) }
        }
        self.gates[gate] = g.entries.isEmpty ? nil : g
        self.count -= before - g.entries.count
        return best.map { ($0.0, Double($0.1)) }
    }

    /// Forgets an entry (its answer is gone from the store).
    public mutating func remove(_ key: CacheKey) {
        for (id, var g) in self.gates where g.entries.contains(where: { $0.key == key }) {
            g.entries.removeAll { $0.key == key }
            self.gates[id] = g.entries.isEmpty ? nil : g
        }
        self.recount()
    }

    /// Forgets every entry whose key matches (`DELETE /admin/cache`).
    public mutating func removeAll(where match: (CacheKey) -> Bool) {
        for (id, var g) in self.gates {
            g.entries.removeAll { match($0.key) }
            self.gates[id] = g.entries.isEmpty ? nil : g
        }
        self.recount()
    }

    mutating func recount() {
        self.count = self.gates.values.reduce(0) { $0 + $1.entries.count }
    }

    mutating func evict() {
        guard self.count > self.maxVectors else { return }
        for (id, g) in self.gates.sorted(by: { $0.value.lastUsed < $1.value.lastUsed }) {
            guard self.count > self.maxVectors else { return }
            var g = g
            let drop = min(g.entries.count, self.count - self.maxVectors)
            g.entries.removeFirst(drop)
            self.count -= drop
            self.gates[id] = g.entries.isEmpty ? nil : g
        }
    }
}
