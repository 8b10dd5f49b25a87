import RoutingCore
import Testing

@Suite struct CacheTruthTests {
    @Test func predictionsAreScaledToTheReplicasTokensAndAccumulated() {
        var t = CacheTruth()
        // The router estimated 1,000 prompt tokens and 800 cached; the replica counted 900 and 700.
        #expect(t.answered(replicaID: 1, predicted: 800, estimatedPrompt: 1000, reportedPrompt: 900, reportedCached: 700, now: 1) == nil)
        #expect(t.replicas[1]?.predictedTokens == 720 && t.replicas[1]?.reportedTokens == 700)
        #expect(t.replicas[1]?.recent.isEmpty == true)
    }

    @Test func aRunOfPredictedHitsThatCameBackUncachedForgets() {
        var t = CacheTruth()
        for i in 0..<2 {
            #expect(t.answered(replicaID: 1, predicted: 800, estimatedPrompt: 1000, reportedPrompt: 1000, reportedCached: 0, now: Double(i)) == nil)
        }
        #expect(t.replicas[1]?.recent.count == 2)
        // A good prediction ends the run.
        #expect(t.answered(replicaID: 1, predicted: 800, estimatedPrompt: 1000, reportedPrompt: 1000, reportedCached: 780, now: 3) == nil)
        for i in 0..<2 { _ = t.answered(replicaID: 1, predicted: 800, estimatedPrompt: 1000, reportedPrompt: 1000, reportedCached: 16, now: Double(4 + i)) }
        #expect(t.answered(replicaID: 1, predicted: 800, estimatedPrompt: 1000, reportedPrompt: 1000, reportedCached: 0, now: 7) == .mispredictions)
        #expect(t.replicas[1]?.resets[.mispredictions] == 1)
        // Small predictions are not mispredictions (a block or two of chance).
        #expect(t.answered(replicaID: 2, predicted: 40, estimatedPrompt: 1000, reportedPrompt: 1000, reportedCached: 0, now: 1) == nil)
        #expect(t.replicas[2]?.recent.isEmpty == true)
        for i in 0..<40 { _ = t.answered(replicaID: 3, predicted: 800, estimatedPrompt: 1000, reportedPrompt: 1000, reportedCached: 0, now: Double(i)) }
        #expect(t.replicas[3]?.recent.count == CacheTruth.recentLimit)
    }

    @Test func restartsCounterResetsAndFlapsAreSeen() {
        var t = CacheTruth()
        #expect(t.probed(replicaID: 1, processStart: 100, cacheQueries: 5000) == nil)
        #expect(t.probed(replicaID: 1, processStart: 100, cacheQueries: 6000) == nil)
        #expect(t.probed(replicaID: 1, processStart: 160, cacheQueries: 100) == .restart)
        #expect(t.probed(replicaID: 1, processStart: 160, cacheQueries: 50) == .countersReset)
        #expect(t.probed(replicaID: 1, processStart: nil, cacheQueries: 60) == nil)
        #expect(t.health(replicaID: 1, up: true) == nil)
        #expect(t.health(replicaID: 1, up: false) == nil)
        #expect(t.health(replicaID: 1, up: true) == .healthFlap)
        #expect(t.health(replicaID: 1, up: true) == nil)
        #expect(t.replicas[1]?.resets == [.restart: 1, .countersReset: 1, .healthFlap: 1])
        // Down, seen restarted by its start time, then up: one reset, not two.
        #expect(t.health(replicaID: 1, up: false) == nil)
        #expect(t.probed(replicaID: 1, processStart: 300, cacheQueries: 10) == .restart)
        #expect(t.health(replicaID: 1, up: true) == nil)
    }

    @Test func forgettingAReplicaEmptiesItsIndexOnly() {
        var index = PrefixIndex()
        index.record([1, 2, 3], replicaID: 1, capacityBlocks: 100)
        index.record([1, 2, 3], replicaID: 2, capacityBlocks: 100)
        #expect(index.forget(replicaID: 1) == 3)
        #expect(index.matchedBlocks([1, 2, 3], replicaID: 1) == 0)
        #expect(index.matchedBlocks([1, 2, 3], replicaID: 2) == 3)
    }
}
