import RoutingCore
import Testing

/// The service model learns each replica's speed from what it served, robustly.
@Suite struct ServiceModelTests {
    static func observation(work: Int, seconds: Double, queueing: Bool = false) -> ServiceObservation {
        ServiceObservation(missTokens: work, replicaWasQueueing: queueing, aheadTokens: 0, firstTokenSeconds: seconds, seconds: seconds + 1, outputTokens: 51)
    }

    @Test func aReplicaTwiceAsFastIsFoundAndOthersStayAtTheSeed() {
        var model = ServiceModel(settings: ServiceModelSettings(prefillTokensPerSecond: 10000, decodeSecondsPerToken: 0.02))
        for _ in 0..<200 {
            // 20k tokens/s on replica 1, 10k on replica 2 (the seed), each with a 20 ms first step.
            model.observe(replicaID: 1, Self.observation(work: 8000, seconds: 0.4 + 0.02))
            model.observe(replicaID: 2, Self.observation(work: 8000, seconds: 0.8 + 0.02))
        }
        let fast = model.learned(replicaID: 1)!.prefillTokensPerSecond
        let seed = model.learned(replicaID: 2)!.prefillTokensPerSecond
        #expect(abs(fast / 20000 - 1) < 0.05, "\(fast)")
        #expect(abs(seed / 10000 - 1) < 0.05, "\(seed)")
        // Decode: one second for 50 tokens after the first.
        #expect(abs(model.learned(replicaID: 1)!.decodeSecondsPerToken / 0.02 - 1) < 0.05)
        // Placement sees the fast one as fast, and two equal ones as equal.
        #expect(model.estimate(replicaID: 1).prefillTokensPerSecond > model.estimate(replicaID: 2).prefillTokensPerSecond * 1.5)
    }

    @Test func aReplicaNotLearnedYetIsTakenAsFastAsTheOthersProved() {
        // The seed says 16k tokens/s; the fleet proves to do 4k. A new replica at the seed would
        // look four times faster than it can be and draw everything (or, seeded too slow, nothing).
        var model = ServiceModel(settings: ServiceModelSettings(prefillTokensPerSecond: 16000))
        #expect(model.estimate(replicaID: 9).prefillTokensPerSecond == 16000)
        for _ in 0..<50 {
            model.observe(replicaID: 1, Self.observation(work: 8000, seconds: 2.02))
            model.observe(replicaID: 2, Self.observation(work: 8000, seconds: 2.02))
        }
        let mean = model.meanPrefillTokensPerSecond
        #expect(abs(mean / 4000 - 1) < 0.05, "\(mean)")
        #expect(model.estimate(replicaID: 9).prefillTokensPerSecond == mean)
        // Probes alone (no served request) teach no speed: still the fleet's mean.
        model.observeProbe(replicaID: 9, running: 1, waiting: 0, kvUsage: 0.1)
        #expect(model.estimate(replicaID: 9).prefillTokensPerSecond == mean)
    }

    @Test func aSeedFarOffIsLeftAtTheFirstAnswers() {
        // An H100's seed for CPU replicas doing 250 and 100 tokens/s: a handful of requests each
        // gives each its own speed, in the right order (with the clipped average alone, the one
        // that served more would have moved further from the seed and looked faster).
        var model = ServiceModel(settings: ServiceModelSettings(prefillTokensPerSecond: 16000, decodeSecondsPerToken: 0.02))
        model.observe(replicaID: 1, Self.observation(work: 2500, seconds: 10.02))
        #expect(abs(model.learned(replicaID: 1)!.prefillTokensPerSecond / 250 - 1) < 0.01)
        for _ in 0..<20 { model.observe(replicaID: 1, Self.observation(work: 2500, seconds: 10.02)) }
        for _ in 0..<3 { model.observe(replicaID: 2, Self.observation(work: 2500, seconds: 25.02)) }
        #expect(abs(model.learned(replicaID: 2)!.prefillTokensPerSecond / 100 - 1) < 0.02)
        // Three answers are not enough to be judged slower than the fleet (a bad start is
        // common: a cold engine); placement still sees it at the fleet's speed.
        #expect(model.estimate(replicaID: 2).prefillTokensPerSecond == model.meanPrefillTokensPerSecond)
        for _ in 0..<2 { model.observe(replicaID: 2, Self.observation(work: 2500, seconds: 25.02)) }
        let fast = model.estimate(replicaID: 1).prefillTokensPerSecond
        let slow = model.estimate(replicaID: 2).prefillTokensPerSecond
        #expect(abs(fast / 250 - 1) < 0.02 && abs(slow / 100 - 1) < 0.02, "\(fast) \(slow)")
    }

    @Test func oneOutlierMovesTheEstimateByABoundedStep() {
        var model = ServiceModel(settings: ServiceModelSettings(prefillTokensPerSecond: 10000))
        for _ in 0..<100 { model.observe(replicaID: 1, Self.observation(work: 10000, seconds: 1.02)) }
        let before = model.learned(replicaID: 1)!.prefillTokensPerSecond
        // A request stuck 100 s behind work this router did not see.
        model.observe(replicaID: 1, Self.observation(work: 10000, seconds: 100))
        let after = model.learned(replicaID: 1)!.prefillTokensPerSecond
        #expect(after < before && after > before * 0.95, "\(before) -> \(after)")
    }

    @Test func whatWaitedInTheReplicasQueueTeachesNothingOfItsSpeed() {
        var model = ServiceModel(settings: ServiceModelSettings(prefillTokensPerSecond: 10000))
        for _ in 0..<50 { model.observe(replicaID: 1, Self.observation(work: 10000, seconds: 5, queueing: true)) }
        #expect(model.learned(replicaID: 1)!.prefillTokensPerSecond == 10000)
        // Too little work to learn from either.
        model.observe(replicaID: 1, Self.observation(work: 10, seconds: 5))
        #expect(model.learned(replicaID: 1)!.prefillTokensPerSecond == 10000)
    }

    @Test func equalReplicasALittleApartCountAsTheirMean() {
        var model = ServiceModel(settings: ServiceModelSettings(prefillTokensPerSecond: 10000))
        for _ in 0..<300 {
            model.observe(replicaID: 1, Self.observation(work: 10000, seconds: 1.02))
            model.observe(replicaID: 2, Self.observation(work: 11000, seconds: 1.02))
        }
        #expect(model.estimate(replicaID: 1).prefillTokensPerSecond == model.estimate(replicaID: 2).prefillTokensPerSecond)
    }

    @Test func theConcurrencyLimitFollowsQueueingAndKVAndRecovers() {
        var model = ServiceModel(settings: ServiceModelSettings(targetKVUsage: 0.6))
        #expect(model.estimate(replicaID: 1).concurrencyLimit == nil)
        model.observeProbe(replicaID: 1, running: 20, waiting: 5, kvUsage: 0.5)
        #expect(model.estimate(replicaID: 1).concurrencyLimit == 20)
        // Running requests fill 90 % of the KV cache: 20 is a third too many for the 60 % target.
        for _ in 0..<30 { model.observeProbe(replicaID: 1, running: 20, waiting: 0, kvUsage: 0.9) }
        #expect(abs(model.estimate(replicaID: 1).concurrencyLimit! - 13.3) < 0.5)
        // Running more than the limit with neither queueing nor a full cache: it takes more.
        model.observeProbe(replicaID: 1, running: 14, waiting: 0, kvUsage: 0.3)
        #expect(model.estimate(replicaID: 1).concurrencyLimit! > 15)
    }
}

/// The router's queue: bounded, fair across tenants, strict across priorities, deadlines.
@Suite struct AdmissionQueueTests {
    static func request(_ id: UInt64, tenant: String = "", priority: Int = 0, bytes: Int = 100, at t: Double = 0, deadline: Double = 60) -> QueuedRequest {
        QueuedRequest(id: id, keys: .failure(KeyError(.emptyPrompt, "x")), tenant: tenant, priority: priority, bytes: bytes, enqueuedAt: t, deadline: deadline)
    }

    @Test func itIsBoundedByCountAndBytes() {
        var q = AdmissionQueue(settings: QueueSettings(maxRequests: 2, maxBytes: 250))
        #expect(q.enqueue(Self.request(1)) == nil)
        #expect(q.enqueue(Self.request(2, bytes: 200)) == .full)  // 300 bytes
        #expect(q.enqueue(Self.request(3)) == nil)
        #expect(q.enqueue(Self.request(4)) == .full)  // 3 requests
        #expect(q.count == 2 && q.bytes == 200)
    }

    @Test func tenantsTakeTurnsAndEachKeepsItsOrder() {
        var q = AdmissionQueue()
        for i in 1...4 { _ = q.enqueue(Self.request(UInt64(i), tenant: "a")) }
        for i in 5...6 { _ = q.enqueue(Self.request(UInt64(i), tenant: "b")) }
        _ = q.enqueue(Self.request(7, tenant: "c"))
        #expect(q.peek(limit: 10).map(\.id) == [1, 5, 7, 2, 6, 3, 4])
        q.take([1, 5])
        // A tenant that had a request go waits its turn again.
        #expect(q.peek(limit: 10).map(\.id) == [7, 2, 6, 3, 4])
    }

    @Test func higherPrioritiesGoFirst() {
        var q = AdmissionQueue()
        _ = q.enqueue(Self.request(1, priority: 0))
        _ = q.enqueue(Self.request(2, priority: -10))
        _ = q.enqueue(Self.request(3, priority: 10))
        _ = q.enqueue(Self.request(4, priority: 0))
        #expect(q.peek(limit: 10).map(\.id) == [3, 1, 4, 2])
        #expect(q.peek(limit: 2).map(\.id) == [3, 1])
    }

    @Test func deadlinesAndLeavingTakeRequestsOut() {
        var q = AdmissionQueue()
        _ = q.enqueue(Self.request(1, deadline: 5))
        _ = q.enqueue(Self.request(2, tenant: "b", deadline: 50))
        _ = q.enqueue(Self.request(3, deadline: 10))
        #expect(q.expire(now: 10).map(\.id) == [1, 3])
        #expect(q.remove(id: 2)?.id == 2)
        #expect(q.remove(id: 2) == nil)
        #expect(q.isEmpty && q.bytes == 0 && q.peek(limit: 5).isEmpty)
    }

    @Test func tenantAndPriorityComeFromHeadersThenRules() {
        let s = QueueSettings(priorities: [PriorityRule(tenant: "batch", priority: -5), PriorityRule(model: "m", priority: 3)])
        let headers = ["x-tenant": "acme", "x-priority": "high"]
        #expect(s.tenant(keys: nil, header: { headers[$0] }) == "acme")
        #expect(s.tenant(keys: nil, header: { headers[$0] }, authenticated: "key-tenant") == "key-tenant")
        #expect(s.tenant(keys: nil, header: { _ in nil }) == "")
        #expect(s.priority(tenant: "acme", model: nil, header: { headers[$0] }) == 10)
        #expect(s.priority(tenant: "batch", model: "m", header: { _ in nil }) == -5)
        #expect(s.priority(tenant: "x", model: "m", header: { _ in nil }) == 3)
        #expect(s.priority(tenant: "x", model: nil, header: { ["x-priority": "9999"][$0] }) == 0)
    }
}

/// Admission and late binding through the fleet router.
@Suite struct AdmissionTests {
    static let specs = (1...2).map { ReplicaSpec(name: "r\($0)", url: "http://127.0.0.1:\(9000 + $0)") }

    static func keys(_ n: Int, rules: KeyingRules) -> Result<RequestKeys, KeyError> {
        let body = #"{"model":"m","messages":[{"role":"user","content":"question \#(n) "# + String(repeating: "words ", count: 4000) + #""}]}"#
        return KeyExtractor.extract(api: .chat, body: Array(body.utf8), header: { _ in nil }, rules: rules)
    }

    @Test func requestsWaitWhenNoReplicaHasRoomAndGoWhenOneFreesUp() throws {
        // A queued prefill of 4 s at 16k tokens/s is about eight of these (~6k tokens each).
        var core = FleetRouter(settings: FleetSettings(queue: QueueSettings(maxReplicaWaitSeconds: 4)), replicas: Self.specs)
        let rules = core.settings.routing.keying
        var placed: [Placement] = []
        var queued = 0
        for n in 0..<40 {
            switch core.admit(QueuedRequest(id: UInt64(n), keys: Self.keys(n, rules: rules), enqueuedAt: 0, deadline: 60), now: 0) {
            case .placed(let p): placed.append(p)
            case .queued: queued += 1
            case .rejected, .unplaced: Issue.record("refused")
            }
        }
        #expect(placed.count >= 10 && placed.count <= 24, "\(placed.count)")
        #expect(queued == 40 - placed.count)
        #expect(core.dispatchQueued(now: 0.1).isEmpty)  // nothing freed up
        // Answers start: their prefill is done, room frees up, waiting requests go.
        for i in 0..<6 { core.firstByte(&placed[i].ticket) }
        let went = core.dispatchQueued(now: 0.5)
        #expect(!went.isEmpty)
        #expect(core.queue.count == queued - went.count)
        // Past their deadline the rest are refused.
        let expired = core.expireQueued(now: 61)
        #expect(expired.count == core.queue.count + expired.count && core.queue.isEmpty)
    }

    @Test func withTheQueueOffEveryRequestGoesAtOnce() {
        var core = FleetRouter(settings: FleetSettings(queue: QueueSettings(enabled: false)), replicas: Self.specs)
        let rules = core.settings.routing.keying
        for n in 0..<40 {
            guard case .placed = core.admit(QueuedRequest(id: UInt64(n), keys: Self.keys(n, rules: rules), enqueuedAt: 0, deadline: 60), now: 0) else {
                Issue.record("request \(n) was not placed")
                return
            }
        }
    }

    @Test func aFullQueueRefuses() {
        var core = FleetRouter(settings: FleetSettings(queue: QueueSettings(maxRequests: 3, maxReplicaWaitSeconds: 0.01)), replicas: Self.specs)
        let rules = core.settings.routing.keying
        var refused = 0
        for n in 0..<20 {
            if case .rejected(.full) = core.admit(QueuedRequest(id: UInt64(n), keys: Self.keys(n, rules: rules), enqueuedAt: 0, deadline: 60), now: 0) {
                refused += 1
            }
        }
        #expect(core.queue.count == 3 && refused >= 10)
    }
}
