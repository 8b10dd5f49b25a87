import RoutingCore
import Testing
import XXHash

func fleet(_ n: Int, weights: [Double]? = nil, models: [[String]]? = nil) -> FleetSnapshot {
    FleetSnapshot(
        replicas: (0..<n).map { i in
            ReplicaSpec(
                name: "r\(i + 1)",
                url: "http://127.0.0.1:\(8001 + i)",
                weight: weights?[i] ?? 1,
                models: models?[i] ?? []
            )
        }
    )
}

struct HashRingTests {
    let sessions = (0..<10_000).map { XXH3.hash("session-\($0)") }

    func counts(_ ring: HashRing, _ keys: [UInt64]) -> [Int: Int] {
        var counts: [Int: Int] = [:]
        for key in keys { counts[ring.owner(of: key)!, default: 0] += 1 }
        return counts
    }

    @Test func tenThousandSessionsSpreadWithinFifteenPercent() {
        let f = fleet(8)
        let counts = self.counts(f.pool(for: nil).pool.ring, self.sessions)
        #expect(counts.count == 8)
        let mean = 10_000.0 / 8
        for (replica, count) in counts {
            #expect(abs(Double(count) - mean) / mean <= 0.15, "r\(replica + 1) got \(count), mean \(mean)")
        }
    }

    @Test func removingAReplicaMovesOnlyItsKeys() {
        let all = fleet(8)
        let before = self.sessions.map { all.pool(for: nil).pool.ring.owner(of: $0)! }
        // r4 goes down (same fleet, not routable).
        var routable = [Bool](repeating: true, count: 8)
        routable[3] = false
        let down = all.with(routable: routable, vnodesPerWeight: 256)
        let after = self.sessions.map { down.pool(for: nil).pool.ring.owner(of: $0)! }
        var moved = 0
        for (b, a) in zip(before, after) where b != a {
            #expect(b == 3, "a key owned by r\(b + 1) moved to r\(a + 1)")
            moved += 1
        }
        #expect(moved == before.filter { $0 == 3 }.count)
        #expect(Double(moved) / 10_000 > 0.09 && Double(moved) / 10_000 < 0.16)
    }

    @Test func addingAReplicaTakesKeysOnlyForItself() {
        let seven = fleet(7)
        let eight = fleet(8)
        for key in self.sessions.prefix(3000) {
            let a = seven.pool(for: nil).pool.ring.owner(of: key)!
            let b = eight.pool(for: nil).pool.ring.owner(of: key)!
            #expect(a == b || b == 7)
        }
    }

    @Test func weightsAreRespected() {
        let f = fleet(4, weights: [1, 1, 2, 4])
        let counts = self.counts(f.pool(for: nil).pool.ring, self.sessions)
        let unit = 10_000.0 / 8
        for (replica, expected) in [(0, unit), (1, unit), (2, 2 * unit), (3, 4 * unit)] {
            #expect(abs(Double(counts[replica, default: 0]) - expected) / expected < 0.15, "r\(replica + 1): \(counts)")
        }
    }

    @Test func successorsAreDistinctAndStartWithTheOwner() {
        let ring = fleet(8).pool(for: nil).pool.ring
        for key in self.sessions.prefix(200) {
            let s = ring.successors(of: key, limit: 8)
            #expect(s.count == 8 && Set(s).count == 8)
            #expect(s.first == ring.owner(of: key))
        }
        #expect(ring.successors(of: 1, limit: 3).count == 3)
    }

    @Test func rendezvousMovesAKeyOnlyToANewMember() {
        let names = (1...9).map { XXH3.hash("r\($0)") }
        for key in self.sessions.prefix(2000) {
            let top8 = (0..<8).max { Rendezvous.score(key: key, replicaSeed: names[$0], weight: 1) < Rendezvous.score(key: key, replicaSeed: names[$1], weight: 1) }!
            let top9 = (0..<9).max { Rendezvous.score(key: key, replicaSeed: names[$0], weight: 1) < Rendezvous.score(key: key, replicaSeed: names[$1], weight: 1) }!
            #expect(top9 == top8 || top9 == 8)
        }
    }

    /// Key -> replica for a fixed fleet, pinned: any change to ring construction shows here.
    @Test func goldenRingVectors() throws {
        let ring = fleet(8, weights: [1, 1, 1, 1, 2, 1, 1, 0.5]).pool(for: nil).pool.ring
        let lines = (0..<64).map { i -> String in
            let key = XXH3.hash("key-\(i)")
            return "key-\(i) \(key.hex16) r\(ring.owner(of: key)! + 1) \(ring.successors(of: key, limit: 3).map { "r\($0 + 1)" }.joined(separator: ","))"
        }
        try Golden.check("ring-vectors.txt", lines.joined(separator: "\n") + "\n")
    }
}

struct PrefixIndexTests {
    @Test func matchesTheLongestRecordedPrefix() {
        var index = PrefixIndex()
        let chain: [UInt64] = (1...20).map { XXH3.hash(UInt64($0), seed: 1) }
        index.record(Array(chain.prefix(12)), replicaID: 0, capacityBlocks: 100)
        #expect(index.matchedBlocks(chain, replicaID: 0) == 12)
        #expect(index.matchedBlocks(Array(chain.prefix(5)), replicaID: 0) == 5)
        #expect(index.matchedBlocks(chain, replicaID: 1) == 0)
        #expect(index.matchedBlocks([99] + chain, replicaID: 0) == 0)
    }

    @Test func evictsPrefixTailsFirstUnderCapacity() {
        var index = PrefixIndex()
        let a: [UInt64] = (1...10).map { XXH3.hash(UInt64($0), seed: 1) }
        let b: [UInt64] = (1...10).map { XXH3.hash(UInt64($0), seed: 2) }
        index.record(a, replicaID: 0, capacityBlocks: 15)
        index.record(b, replicaID: 0, capacityBlocks: 15)
        // Five of a's blocks went: its last five, so its first five still match.
        #expect(index.matchedBlocks(b, replicaID: 0) == 10)
        #expect(index.matchedBlocks(a, replicaID: 0) == 5)
        #expect(index.count(replicaID: 0) == 15)
    }

    @Test func aMillionDistinctPrefixesStayWithinCapacity() {
        var index = PrefixIndex()
        for i in 0..<250_000 {
            let chain = (0..<4).map { XXH3.hash(UInt64(i * 4 + $0), seed: 3) }
            index.record(chain, replicaID: i % 4, capacityBlocks: 5000)
        }
        #expect(index.totalBlocks == 4 * 5000)
        // The most recent survive.
        let last = (0..<4).map { XXH3.hash(UInt64(249_999 * 4 + $0), seed: 3) }
        #expect(index.matchedBlocks(last, replicaID: 249_999 % 4) == 4)
    }

    @Test func shrinkingCapacityEvicts() {
        var index = PrefixIndex()
        let chain: [UInt64] = (1...100).map { XXH3.hash(UInt64($0), seed: 9) }
        index.record(chain, replicaID: 0, capacityBlocks: 100)
        index.record(Array(chain.prefix(10)), replicaID: 0, capacityBlocks: 10)
        #expect(index.count(replicaID: 0) == 10)
        #expect(index.matchedBlocks(chain, replicaID: 0) == 10)
    }
}
