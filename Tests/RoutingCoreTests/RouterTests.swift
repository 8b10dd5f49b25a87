import FastJSON
import RoutingCore
import Testing

/// A chat body of one conversation: the shared system prompt, then `turns` user/assistant turns.
func conversation(_ session: Int, turns: Int, system: String = longSystem, model: String = "m") -> [UInt8] {
    var t: [(role: String, content: String)] = []
    for i in 0..<turns {
        t.append(("user", "Session \(session) question \(i): " + String(repeating: "details ", count: 40)))
        if i + 1 < turns { t.append(("assistant", "Answer \(i) for \(session).")) }
    }
    return chatBody(model: model, system: system, turns: t)
}

extension Router {
    /// Decide and commit one request; returns the chosen replica.
    mutating func send(_ body: [UInt8], fleet: FleetSnapshot, now: Double, api: RequestAPI = .chat, header: (String, String)? = nil) -> (RoutingDecision, PlacementTicket?) {
        let keys = KeyExtractor.extract(api: api, body: body, sessionHeader: header.map { (name: $0.0, value: $0.1) }, rules: self.settings.keying)
        let decision = self.decide(keys, header: { name in header?.0 == name ? header?.1 : nil }, fleet: fleet, now: now)
        guard let replica = decision.replica else { return (decision, nil) }
        let ticket = self.commit(try? keys.get(), decision: decision, replica: replica, fleet: fleet, now: now)
        return (decision, ticket)
    }
}

struct RouterTests {
    @Test func aConversationStaysOnOneReplicaAcrossTurns() {
        let f = fleet(8)
        var router = Router()
        var now = 0.0
        for session in 0..<40 {
            var replicas = Set<Int>()
            for turn in 1...5 {
                let (d, ticket) = router.send(conversation(session, turns: turn), fleet: f, now: now)
                replicas.insert(d.replica!)
                router.finish(ticket!)
                // Unrelated traffic in between.
                let (_, other) = router.send(conversation(1000 + session * 10 + turn, turns: 1, system: "Be brief."), fleet: f, now: now)
                router.finish(other!)
                now += 1
            }
            #expect(replicas.count == 1, "session \(session) visited \(replicas)")
        }
    }

    @Test func sessionsSharingASystemPromptLandInItsGroup() {
        let f = fleet(8)
        var settings = RoutingSettings()
        settings.placement.groupSize = 2
        settings.placement.freshChoices = 1
        var router = Router(settings: settings)
        var used = Set<Int>()
        var group: Set<Int>?
        for session in 0..<60 {
            let (d, ticket) = router.send(conversation(session, turns: 1), fleet: f, now: Double(session))
            used.insert(d.replica!)
            let members = Set(d.candidates.filter(\.inGroup).map(\.replica))
            if group == nil { group = members }
            #expect(members == group)
            #expect(d.tier == .session || d.tier == .group, "\(d.reason(in: f))")
            router.finish(ticket!)
        }
        #expect(group?.count == 2)
        #expect(used == group, "sessions used \(used), group \(group ?? [])")
    }

    @Test func anOverloadedPreferredReplicaIsPassedOverAndTheReasonSaysWhy() {
        let f = fleet(4)
        var router = Router()
        let body = conversation(7, turns: 1, system: "Be brief.")
        let first = router.decide(KeyExtractor.extract(api: .chat, body: body, rules: router.settings.keying), fleet: f, now: 0)
        let preferred = first.replica!
        // Twelve long requests pile up on the preferred replica.
        var tickets: [PlacementTicket] = []
        for _ in 0..<12 {
            tickets.append(router.commit(nil, decision: first, replica: preferred, fleet: f, now: 0))
        }
        let (second, _) = router.send(body, fleet: f, now: 1)
        #expect(second.replica != preferred)
        #expect(second.tier == .session, "a fresh session's initial placement")
        #expect(second.reason(in: f).contains("load ceiling"), "\(second.reason(in: f))")
        #expect(second.candidates.first { $0.replica == preferred }?.eligible == false)
        for t in tickets { router.finish(t) }
        // Once it drains, a fresh session goes back to the hash order.
        let third = router.decide(KeyExtractor.extract(api: .chat, body: conversation(8, turns: 1, system: "Be brief."), rules: router.settings.keying), fleet: f, now: 2)
        #expect(third.candidates.first?.eligible == true)
    }

    @Test func aKnownSessionLeavesAFullHomeAsASpill() {
        let f = fleet(4)
        var router = Router()
        let (home, ticket) = router.send(conversation(3, turns: 1), fleet: f, now: 0)
        router.finish(ticket!)
        // The home fills up with other work.
        var tickets: [PlacementTicket] = []
        for _ in 0..<8 { tickets.append(router.commit(nil, decision: home, replica: home.replica!, fleet: f, now: 1)) }
        let (next, _) = router.send(conversation(3, turns: 2), fleet: f, now: 2)
        #expect(next.replica != home.replica)
        #expect(next.tier == .spill)
        #expect(next.reason(in: f).contains("moved away from its cache"), "\(next.reason(in: f))")
        for t in tickets { router.finish(t) }
        let (back, _) = router.send(conversation(3, turns: 2), fleet: f, now: 3)
        #expect(back.tier == .session)
    }

    @Test func probedQueueAndKVCeilingsMakeReplicasIneligible() {
        let f = fleet(3)
        // Off by default (safety limits an operator sets): the learned costs carry the load.
        var settings = RoutingSettings()
        settings.placement.maxWaiting = 64
        settings.placement.maxKVUsage = 0.98
        var router = Router(settings: settings)
        let keys = KeyExtractor.extract(api: .chat, body: conversation(1, turns: 1), rules: router.settings.keying)
        let preferred = router.decide(keys, fleet: f, now: 0).replica!
        router.observeProbe(replicaID: f.ids[preferred], waiting: 500, running: 10, kvUsage: 0.5, cacheTokens: nil)
        let d = router.decide(keys, fleet: f, now: 0)
        #expect(d.replica != preferred)
        #expect(d.reason(in: f).contains("waiting"), "\(d.reason(in: f))")
        router.observeProbe(replicaID: f.ids[preferred], waiting: 0, running: 10, kvUsage: 0.999, cacheTokens: nil)
        let e = router.decide(keys, fleet: f, now: 0)
        #expect(e.replica != preferred)
        #expect(e.reason(in: f).contains("KV cache"), "\(e.reason(in: f))")
    }

    @Test func noEligibleCandidateFallsBackToTheLeastLoaded() {
        var settings = RoutingSettings()
        settings.placement.maxWaiting = 1
        var router = Router(settings: settings)
        let f = fleet(3)
        for i in 0..<3 { router.observeProbe(replicaID: f.ids[i], waiting: 10 + i, running: 1, kvUsage: nil, cacheTokens: nil) }
        let (d, _) = router.send(conversation(1, turns: 1), fleet: f, now: 0)
        #expect(d.tier == .fallback)
        #expect(d.replica == 0)
        #expect(d.reason(in: f).contains("ineligible"))
    }

    @Test func aHotPrefixWidensItsGroupAndNarrowsWithoutFlapping() {
        var settings = RoutingSettings()
        settings.placement.groupSize = 2
        settings.placement.spill = SpillSettings(rpsPerReplica: 4, rateWindowSeconds: 5, narrowBelow: 0.7, holdSeconds: 10)
        var router = Router(settings: settings)
        let f = fleet(8)
        var widths: [(Double, Int)] = []
        var now = 0.0
        func burst(rps: Double, seconds: Double) {
            let end = now + seconds
            var session = Int(now * 1000)
            while now < end {
                let (d, t) = router.send(conversation(session, turns: 1), fleet: f, now: now)
                router.finish(t!)
                widths.append((now, d.groupWidth))
                session += 1
                now += 1 / rps
            }
        }
        burst(rps: 2, seconds: 20)
        #expect(widths.last!.1 == 2, "base group at 2 rps")
        burst(rps: 24, seconds: 30)
        let hot = widths.last!.1
        #expect(hot >= 5, "widened to \(hot) at 24 rps (4 per replica)")
        burst(rps: 2, seconds: 90)
        #expect(widths.last!.1 == 2, "narrowed back at 2 rps")
        // Narrowing is monotone: once it starts it never widens again while the rate stays low.
        let cooling = widths.filter { $0.0 > 50 }.map(\.1)
        #expect(zip(cooling, cooling.dropFirst()).allSatisfy { $0 >= $1 }, "flapped: \(cooling)")
        // No flapping at a steady rate near the threshold either.
        widths.removeAll()
        burst(rps: 12, seconds: 60)
        let steady = widths.filter { $0.0 > now - 30 }.map(\.1)
        #expect(Set(steady).count == 1, "steady rate gave widths \(Set(steady))")
    }

    /// Several router instances: each tracks the rates of the requests it sees. Behind a balancer
    /// that splits traffic evenly over N instances each sees 1/N of a hot prefix's rate, so
    /// `spill.rps_per_replica` divided by N gives the widening one instance would make, and every
    /// instance widens onto the same replicas (the ring order is shared).
    @Test func instancesSplittingTrafficWidenAlikeWithTheThresholdDividedByTheirCount() {
        func spill(_ rps: Double) -> RoutingSettings {
            var settings = RoutingSettings()
            settings.placement.groupSize = 2
            settings.placement.spill = SpillSettings(rpsPerReplica: rps, rateWindowSeconds: 5, narrowBelow: 0.7, holdSeconds: 10)
            return settings
        }
        let f = fleet(8)
        /// Sends 24 rps of one hot prefix for 30 s, round robin over `routers`; returns each one's group.
        func run(_ routers: inout [Router]) -> [[Int]] {
            var now = 0.0
            for session in 0..<720 {
                let i = session % routers.count
                let (_, t) = routers[i].send(conversation(session, turns: 1), fleet: f, now: now)
                routers[i].finish(t!)
                now += 1.0 / 24
            }
            return routers.map { router in
                let d = router.decide(KeyExtractor.extract(api: .chat, body: conversation(99_999, turns: 1), rules: router.settings.keying), fleet: f, now: now)
                return Array(d.candidates.prefix(d.groupWidth).map(\.replica)).sorted()
            }
        }
        var one = [Router(settings: spill(4))]
        let alone = run(&one)[0]
        #expect(alone.count >= 5, "one instance at 24 rps widens to \(alone.count)")
        var adjusted = [Router(settings: spill(2)), Router(settings: spill(2))]
        let split = run(&adjusted)
        #expect(split[0] == alone && split[1] == alone, "halved threshold: \(split) vs \(alone)")
        var unadjusted = [Router(settings: spill(4)), Router(settings: spill(4))]
        let narrower = run(&unadjusted)
        #expect(narrower[0] == narrower[1], "the instances agree with each other")
        #expect(narrower[0].count < alone.count && Set(narrower[0]).isSubset(of: Set(alone)), "each sees half the rate: \(narrower[0]) within \(alone)")
    }

    @Test func placedSessionsStayWhenTheGroupWidens() {
        var settings = RoutingSettings()
        settings.placement.spill = SpillSettings(rpsPerReplica: 2, rateWindowSeconds: 5, narrowBelow: 0.7, holdSeconds: 10)
        var router = Router(settings: settings)
        let f = fleet(8)
        var home: [Int: Int] = [:]
        for s in 0..<10 {
            let (d, t) = router.send(conversation(s, turns: 1), fleet: f, now: Double(s) * 2)
            home[s] = d.replica
            router.finish(t!)
        }
        // A surge of new sessions widens the group.
        var now = 20.0
        for s in 100..<400 {
            let (_, t) = router.send(conversation(s, turns: 1), fleet: f, now: now)
            router.finish(t!)
            now += 0.05
        }
        let widened = router.decide(KeyExtractor.extract(api: .chat, body: conversation(999, turns: 1), rules: router.settings.keying), fleet: f, now: now)
        #expect(widened.groupWidth > 2)
        // The early sessions' next turns go home.
        for s in 0..<10 {
            let (d, t) = router.send(conversation(s, turns: 2), fleet: f, now: now)
            #expect(d.replica == home[s], "session \(s) moved: \(d.reason)")
            router.finish(t!)
        }
    }

    @Test(arguments: [
        "", "{", "not json", #"{"model":"m","messages":[]}"#, #"{"model":"m","messages":[{"role":"user","content":5}]}"#,
        #"{"messages":{"role":"user"}}"#, "[[[[[[[[[[", #"{"model":"m","messages":[{"role":"user","content":"\ud800"}]}"#,
    ])
    func badInputGetsAFallbackDecisionNeverACrash(body: String) {
        let f = fleet(4)
        let router = Router()
        let keys = KeyExtractor.extract(api: .chat, body: Array(body.utf8), rules: router.settings.keying)
        let d = router.decide(keys, fleet: f, now: 0)
        #expect(d.tier == .fallback)
        #expect(d.replica != nil)
        #expect(d.reason(in: f).contains("not keyed"))
    }

    @Test func hugeAndInvalidUTF8BodiesFallBack() {
        let f = fleet(4)
        let router = Router()
        let big = Array(#"{"model":"m","messages":[{"role":"user","content":""#.utf8)
            + [UInt8](repeating: UInt8(ascii: "a"), count: 10 << 20) + Array(#""}]}"#.utf8)
        #expect(router.decide(KeyExtractor.extract(api: .chat, body: big, rules: router.settings.keying), fleet: f, now: 0).tier == .fallback)
        let invalid = Array(#"{"model":"m","messages":[{"role":"user","content":"a"#.utf8) + [0xC0, 0xAF] + Array(#""}]}"#.utf8)
        #expect(router.decide(KeyExtractor.extract(api: .chat, body: invalid, rules: router.settings.keying), fleet: f, now: 0).tier == .fallback)
    }

    @Test func noRoutableReplicaGivesNoReplica() {
        let f = fleet(3).with(routable: [false, false, false], vnodesPerWeight: 256)
        let d = Router().decide(KeyExtractor.extract(api: .chat, body: conversation(1, turns: 1), rules: KeyingRules()), fleet: f, now: 0)
        #expect(d.replica == nil)
    }

    @Test func modelsRouteToTheirPools() {
        let f = fleet(4, models: [["a"], ["a"], ["b"], []])
        let router = Router()
        for session in 0..<30 {
            let da = router.decide(KeyExtractor.extract(api: .chat, body: conversation(session, turns: 1, model: "a"), rules: router.settings.keying), fleet: f, now: 0)
            #expect([0, 1, 3].contains(da.replica!))
            let db = router.decide(KeyExtractor.extract(api: .chat, body: conversation(session, turns: 1, model: "b"), rules: router.settings.keying), fleet: f, now: 0)
            #expect([2, 3].contains(db.replica!))
            let dz = router.decide(KeyExtractor.extract(api: .chat, body: conversation(session, turns: 1, model: "zzz"), rules: router.settings.keying), fleet: f, now: 0)
            #expect(dz.replica == 3)
            #expect(dz.poolMatch == .anyModel)
        }
    }

    @Test func pinnedGroupsMatchByHeaderAndPrefix() {
        var settings = RoutingSettings()
        settings.placement.pinned = [
            PinnedGroup(name: "gold", replicas: ["r3", "r4"], header: (name: "X-Tenant", value: "gold")),
            PinnedGroup(name: "sql", replicas: ["r1"], prefix: Array("You are a careful".utf8)),
        ]
        var router = Router(settings: settings)
        let f = fleet(6)
        for s in 0..<20 {
            let (d, t) = router.send(conversation(s, turns: 1, system: "Short."), fleet: f, now: 0, header: ("x-tenant", "gold"))
            #expect([2, 3].contains(d.replica!))
            #expect(d.tier == .pinned)
            router.finish(t!)
            let (p, u) = router.send(conversation(s, turns: 1), fleet: f, now: 0)
            #expect(p.replica == 0 && p.tier == .pinned)
            router.finish(u!)
        }
    }

    @Test func loadAccountingReturnsToZero() {
        var router = Router()
        let f = fleet(2)
        var tickets: [PlacementTicket] = []
        for s in 0..<10 {
            tickets.append(router.send(conversation(s, turns: 1), fleet: f, now: 0).1!)
        }
        for i in tickets.indices where i % 2 == 0 { router.firstByte(&tickets[i]) }
        for t in tickets { router.finish(t) }
        for i in 0..<2 {
            #expect(router.load(replicaID: f.ids[i]) == ReplicaLoad())
        }
    }
}

struct SpillAndHealthTests {
    @Test func spillTrackerMemoryIsBounded() {
        var tracker = SpillTracker(settings: SpillSettings(maxTrackedKeys: 1000))
        var most = 0
        for i in 0..<100_000 {  // sheds ~200 times
            _ = tracker.record(UInt64(i), base: 2, poolSize: 8, now: Double(i) / 1000)
            most = max(most, tracker.trackedKeys)
        }
        #expect(most == 1000)
        // A hot key survives shedding.
        var hot = SpillTracker(settings: SpillSettings(rpsPerReplica: 1, maxTrackedKeys: 100))
        for i in 0..<10_000 {
            _ = hot.record(42, base: 2, poolSize: 8, now: Double(i) / 100)
            _ = hot.record(UInt64(1000 + i), base: 2, poolSize: 8, now: Double(i) / 100)
        }
        #expect(hot.rate(of: 42, now: 100) > 50)
    }

    @Test func healthNeedsThresholdsInARow() {
        let settings = HealthSettings(failureThreshold: 3, successThreshold: 2)
        var h = ReplicaHealth()
        #expect(h.isRoutable(now: 0))
        h.probe(success: true, settings: settings)
        #expect(h.state == .up)
        h.probe(success: false, settings: settings)
        h.probe(success: false, settings: settings)
        h.probe(success: true, settings: settings)  // one slow answer is not death
        h.probe(success: false, settings: settings)
        h.probe(success: false, settings: settings)
        #expect(h.state == .up)
        h.probe(success: false, error: "timeout", settings: settings)
        #expect(h.state == .down && !h.isRoutable(now: 0))
        h.probe(success: true, settings: settings)
        #expect(h.state == .down)
        h.probe(success: true, settings: settings)
        #expect(h.state == .up)
    }

    @Test func passiveEjectionBacksOffAndRecovers() {
        let settings = HealthSettings(ejectAfterFailures: 3, ejectionSeconds: 10, maxEjectionSeconds: 30)
        var h = ReplicaHealth(state: .up)
        let first = h.request(success: false, now: 0, settings: settings)
        let second = h.request(success: false, now: 0, settings: settings)
        let third = h.request(success: false, now: 0, settings: settings)
        #expect(!first && !second && third)
        #expect(!h.isRoutable(now: 5))
        #expect(h.isRoutable(now: 10))
        for _ in 0..<3 { h.request(success: false, now: 11, settings: settings) }
        #expect(!h.isRoutable(now: 30))  // second ejection: 20 s
        #expect(h.isRoutable(now: 31))
        h.request(success: true, now: 32, settings: settings)
        #expect(h.ejections == 0)
    }

    /// Half-open: a good probe ends an ejection early, on trial; a failed trial ejects at once
    /// (for the doubled length, with no early end this time); a good trial closes the circuit.
    @Test func aGoodProbeEndsAnEjectionOnTrial() {
        let settings = HealthSettings(ejectAfterFailures: 3, ejectionSeconds: 10, maxEjectionSeconds: 60)
        var h = ReplicaHealth(state: .up)
        for _ in 0..<3 { h.request(success: false, now: 0, settings: settings) }
        #expect(!h.isRoutable(now: 1))
        h.probe(success: true, now: 2, settings: settings)
        #expect(h.isRoutable(now: 2) && h.trial, "back at the next good probe, 8 s early")
        // The trial fails: ejected again at once, for 20 s, and probes do not end it early.
        let ejectedAgain = h.request(success: false, now: 3, settings: settings)
        #expect(ejectedAgain)
        #expect(!h.isRoutable(now: 4) && !h.trial)
        h.probe(success: true, now: 5, settings: settings)
        #expect(!h.isRoutable(now: 5) && !h.isRoutable(now: 22))
        #expect(h.isRoutable(now: 23))
        // Served again: the run of ejections is over; the next one may end early again.
        h.request(success: true, now: 24, settings: settings)
        #expect(h.ejections == 0 && !h.earlyEndUsed)
        for _ in 0..<3 { h.request(success: false, now: 30, settings: settings) }
        h.probe(success: true, now: 31, settings: settings)
        #expect(h.isRoutable(now: 31))
        // A good trial request closes the circuit.
        h.request(success: true, now: 32, settings: settings)
        #expect(!h.trial && h.ejections == 0 && h.isRoutable(now: 32))
        // A failed probe never ends an ejection.
        for _ in 0..<3 { h.request(success: false, now: 40, settings: settings) }
        h.probe(success: false, now: 41, settings: settings)
        #expect(!h.isRoutable(now: 41))
    }
}
