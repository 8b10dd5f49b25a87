import XXHash

/// The routing core: every placement decision in cacheroute is made here.
///
/// A value type with no I/O and no clock: the proxy, `explain`, the admin API and the simulator
/// hand it keys, a fleet snapshot and the time, and get a `RoutingDecision`. State it keeps
/// (prefix index, hot-prefix rates, per-replica load) is bounded and only refines the hash order,
/// so several router instances agree on fresh prefixes without sharing anything.
public struct Router: Sendable {
    public var settings: RoutingSettings
    public var index = PrefixIndex()
    /// Predicted against reported cached tokens, and the signals that a replica's cache is gone.
    public var truth = CacheTruth()
    public var spill: SpillTracker
    /// Each replica's learned speed.
    public var service: ServiceModel
    /// Load per replica id.
    var loads = ReplicaTable<ReplicaLoad>()
    /// Probed KV capacity per replica id (tokens).
    var probedCacheTokens = ReplicaTable<Int>()

    public init(settings: RoutingSettings = RoutingSettings()) {
        self.settings = settings
        self.spill = SpillTracker(settings: settings.placement.spill)
        self.service = ServiceModel(settings: settings.placement.service)
    }

    /// Replaces the settings (a config reload) and keeps the learned state.
    public mutating func update(settings: RoutingSettings) {
        self.settings = settings
        self.spill.settings = settings.placement.spill
        self.service.settings = settings.placement.service
    }

    /// The load this router knows for a replica.
    public func load(replicaID id: Int) -> ReplicaLoad {
        self.loads[id] ?? ReplicaLoad()
    }

    /// Feeds probed signals for a replica (queue depth, running, KV usage, capacity).
    public mutating func observeProbe(
        replicaID id: Int,
        waiting: Int?,
        running: Int?,
        kvUsage: Double?,
        cacheTokens: Int?
    ) {
        self.loads.modify(id, default: { ReplicaLoad() }) { load in
            load.probedWaiting = waiting
            load.probedRunning = running
            load.kvUsage = kvUsage
        }
        if let cacheTokens, cacheTokens > 0 { self.probedCacheTokens.modify(id, default: { cacheTokens }) { $0 = cacheTokens } }
        self.service.observeProbe(replicaID: id, running: running, waiting: waiting, kvUsage: kvUsage)
    }

    /// Forgets state of replicas that left the fleet (bounded memory under membership churn).
    public mutating func retain(fleet: FleetSnapshot) {
        let ids = Set(fleet.ids)
        self.index.retain(replicaIDs: ids)
        self.service.retain(replicaIDs: ids)
        self.truth.retain(replicaIDs: ids)
        self.loads.removeAll { id, load in !ids.contains(id) && load.inFlight == 0 }
        self.probedCacheTokens.removeAll { id, _ in !ids.contains(id) }
    }

    /// Blocks of the prefix index for a replica: its KV capacity over the tokens per block.
    func capacityBlocks(_ fleet: FleetSnapshot, _ replica: Int) -> Int {
        let id = fleet.ids[replica]
        let tokens = fleet.replicas[replica].cacheTokens ?? self.probedCacheTokens[id]
            ?? self.settings.placement.defaultCacheTokens
        return max(1, tokens / self.settings.tokensPerBlock)
    }

    // MARK: - Decide

    /// Where a request should go now. Reads state, changes nothing (see `commit`).
    ///
    /// The candidates come in preference order: the request's group (its instruction key's ring
    /// owners, widened when the prefix is hot) ranked by session rendezvous, then ring successors.
    /// Ineligible ones (unhealthy, at the load ceiling, over a probe ceiling) are skipped. Where the
    /// index holds any of this conversation, the cheapest candidate wins: a miss (weighted, since
    /// it also scatters the conversation) against queued prefill and requests in flight. Where it
    /// holds nothing, the cheapest of the first `freshChoices` eligible candidates wins.
    ///
    /// - Parameters:
    ///   - extracted: the request's keys, or why it has none (then: fallback).
    ///   - header: case-insensitive header lookup, for pinned groups.
    ///   - fleet: the current snapshot.
    ///   - now: monotonic seconds.
    public func decide(
        _ extracted: Result<RequestKeys, KeyError>,
        header: (String) -> String? = { _ in nil },
        fleet: FleetSnapshot,
        now: Double
    ) -> RoutingDecision {
        let keys: RequestKeys
        switch extracted {
        case .failure(let error):
            let pool = fleet.pool(for: nil)
            return self.leastLoaded(
                pool.pool,
                fleet: fleet,
                note: "request not keyed (\(error.kind.rawValue): \(error.message))",
                match: pool.match
            )
        case .success(let k):
            keys = k
        }
        if let id = keys.storedResponse, FleetSnapshot.isRouterResponseID(id) {
            // A continued stored response is served where it is stored, or not at all.
            guard let replica = fleet.replica(holdingResponse: id) else {
                return RoutingDecision(replica: nil, tier: .stored, note: "no replica holds it", basis: .storedResponseGone(id))
            }
            guard fleet.routable[replica] else {
                return RoutingDecision(
                    replica: nil, tier: .stored, note: "\(fleet.replicas[replica].name), which holds it, is not healthy", basis: .storedResponse(id))
            }
            let prompt = keys.promptTokens(bytesPerToken: self.settings.keying.bytesPerToken)
            return RoutingDecision(replica: replica, tier: .stored, missTokens: prompt, basis: .storedResponse(id), promptTokens: prompt)
        }
        let (pool, match) = fleet.pool(for: keys.model)
        let ring = pool.ring
        guard !ring.isEmpty else {
            return RoutingDecision(
                replica: nil,
                tier: .fallback,
                note: pool.members.isEmpty ? "no replica serves this model" : "no healthy replica in the pool",
                poolMatch: match
            )
        }
        let placement = self.settings.placement
        let limit = max(1, placement.maxCandidates)

        // 1. Candidates in preference order; the first `groupCount` form the group, of which the
        //    first `baseCount` are the group before any hot-prefix widening.
        var order: [Int] = []
        var groupCount = 1
        var baseCount = 1
        var basis = RoutingDecision.Basis.none
        var pinned = false
        let ringKey = keys.session?.key ?? keys.chain.first ?? keys.scope
        if let rule = placement.pinned.first(where: { $0.matches(keys, header: header) }) {
            let members = rule.replicas.compactMap { fleet.index(of: $0) }.filter { fleet.routable[$0] }
            if !members.isEmpty {
                order = members
                self.rank(&order, count: order.count, session: keys.session, fleet: fleet)
                groupCount = order.count
                baseCount = order.count
                pinned = true
                basis = .pinned(rule.name)
            } else {
                basis = .pinnedGroupDown(rule.name)
            }
        }
        if order.isEmpty {
            if let instruction = keys.instruction {
                let width = self.spill.width(of: instruction.key, base: placement.groupSize, poolSize: ring.members.count, now: now)
                // The ring walk; its first `width` members are the group, ranked in place.
                order = ring.successors(of: instruction.key, limit: max(width, limit))
                groupCount = min(width, order.count)
                baseCount = min(placement.groupSize, groupCount)
                self.rank(&order, count: groupCount, session: keys.session, fleet: fleet)
                if case .none = basis { basis = .group(key: instruction.key, members: groupCount, base: baseCount) }
            } else {
                order = ring.successors(of: ringKey, limit: limit)
                if case .none = basis { basis = keys.session != nil ? .sessionRing : .promptRing }
            }
        }
        if order.count > max(limit, groupCount) { order.removeLast(order.count - max(limit, groupCount)) }

        // 2. What the router knows of each candidate.
        let promptTokens = keys.promptTokens(bytesPerToken: self.settings.keying.bytesPerToken)
        let (ceiling, total, routableInPool) = self.ceiling(pool, fleet: fleet)
        // A match that covers only the shared instruction segment says nothing about this session:
        // every group member is meant to hold that. Only deeper matches make the index decide.
        let sharedBlocks = (keys.instruction?.bytes ?? 0) / self.settings.keying.blockBytes
        var candidates: [Candidate] = []
        candidates.reserveCapacity(order.count)
        var known = false
        // Blocks every candidate holds (a common preamble shorter than an instruction key) say
        // nothing of where this conversation is: only blocks beyond them, or the session seen, do.
        var minCachedBlocks = Int.max
        for (rank, replica) in order.enumerated() {
            let id = fleet.ids[replica]
            let load = self.load(replicaID: id)
            let cachedBlocks = self.index.matchedBlocks(keys.chain, replicaID: id)
            var cached = min(promptTokens, cachedBlocks * self.settings.tokensPerBlock)
            var holdsSession = cachedBlocks > sharedBlocks
            var seen = false
            if let session = keys.session, self.index.hasSeen(session: session.key, replicaID: id) {
                seen = true
                // The conversation was here: it holds at least the session's own prefix (implicit
                // sessions), or a block more than the chain shows (the last turn's partial block).
                holdsSession = true
                switch session.source {
                case .conversation(let bytes):
                    cached = max(cached, min(promptTokens, bytes / self.settings.keying.bytesPerToken))
                case .header, .body:
                    cached = min(promptTokens, cached + self.settings.tokensPerBlock)
                }
            }
            var why: Ineligibility?
            if !fleet.routable[replica] {
                why = .notHealthy
            } else if load.inFlight >= ceiling {
                why = .loadCeiling(inFlight: load.inFlight, ceiling: ceiling, total: total, routable: routableInPool)
            } else if let max = placement.maxWaiting, let waiting = load.probedWaiting, waiting > max {
                why = .waiting(waiting, limit: max)
            } else if let max = placement.maxKVUsage, let kv = load.kvUsage, kv > max {
                why = .kvUsage(kv, limit: max)
            }
            if !seen { minCachedBlocks = min(minCachedBlocks, cachedBlocks) }
            var candidate = 
                Candidate(
                    replica: replica,
                    inGroup: rank < groupCount,
                    cachedTokens: cached,
                    inFlight: load.inFlight,
                    cost: 0,
                    eligible: why == nil,
                    ineligibility: why,
                    holdsSession: holdsSession
                )
            candidate.cachedBlocks = cachedBlocks
            candidate.sessionSeen = seen
            let speed = self.service.estimate(replicaID: id)
            candidate.prefillTokensPerSecond = speed.prefillTokensPerSecond
            candidate.decodeSecondsPerToken = speed.decodeSecondsPerToken
            candidate.aheadTokens = self.queuedAhead(load: load, speed: speed)
            candidates.append(candidate)
        }

        for i in candidates.indices where candidates[i].holdsSession {
            if !candidates[i].sessionSeen, candidates[i].cachedBlocks <= minCachedBlocks { candidates[i].holdsSession = false }
            known = known || candidates[i].holdsSession
        }

        // The miss no candidate avoids (a fresh prefix misses everywhere) is weighted as the
        // prefill it is; only the avoidable part is weighted `missWeight` times.
        let unavoidable = promptTokens - (candidates.lazy.map(\.cachedTokens).max() ?? 0)
        for i in candidates.indices {
            let miss = promptTokens - candidates[i].cachedTokens
            let rate = candidates[i].prefillTokensPerSecond
            let ahead = candidates[i].aheadTokens
            candidates[i].cost = self.cost(missTokens: miss, unavoidable: unavoidable, ahead: ahead, inFlight: candidates[i].inFlight, rate: rate)
            candidates[i].predictedFirstTokenSeconds = (ahead + Double(miss)) / rate + candidates[i].decodeSecondsPerToken
        }

        // 3. Choose.
        var chosen: Int?
        var firstEligible: Int?
        var considered = 0
        for (i, c) in candidates.enumerated() where c.eligible {
            if !known {
                guard considered < max(1, placement.freshChoices) else { break }
                considered += 1
            }
            if firstEligible == nil { firstEligible = i }
            if let best = chosen, candidates[best].cost <= c.cost { continue }
            chosen = i
        }
        if !known, let first = firstEligible, let best = chosen,
            candidates[first].cost - candidates[best].cost <= max(placement.freshSlack, placement.freshTolerance * candidates[first].cost)
        {
            chosen = first
        }
        guard let chosen else {
            var decision = self.leastLoaded(
                pool,
                fleet: fleet,
                note: "every candidate is ineligible ("
                    + candidates.compactMap { c in c.ineligibleBecause.map { "\(fleet.replicas[c.replica].name): \($0)" } }
                    .joined(separator: "; ") + ")",
                match: match
            )
            decision.candidates = candidates
            decision.groupWidth = keys.instruction == nil ? 0 : groupCount
            return decision
        }

        // 4. The tier: what decided.
        let tier: Tier
        if pinned {
            tier = .pinned
        } else if candidates[chosen].holdsSession {
            tier = .session
        } else if keys.instruction != nil {
            tier = chosen < baseCount ? .group : .spill
        } else {
            tier = !known && chosen < max(1, placement.freshChoices) ? .session : .spill
        }

        let pick = candidates[chosen]
        return RoutingDecision(
            replica: pick.replica,
            tier: tier,
            candidates: candidates,
            groupWidth: keys.instruction == nil ? 0 : groupCount,
            poolMatch: match,
            missTokens: promptTokens - pick.cachedTokens,
            basis: basis,
            chosenCandidate: chosen,
            known: known,
            movedFromCache: known && !candidates[chosen].holdsSession,
            promptTokens: promptTokens,
            freshChoices: max(1, placement.freshChoices),
            ringKey: ringKey
        )
    }

    /// What placing a request on a replica costs, in seconds: its predicted time to first token
    /// there (the prefill queued ahead of it, then its own missing prefill, at the replica's learned
    /// speed), plus the avoidable part of its miss (beyond `unavoidable`, what the best candidate
    /// misses too) weighted `missWeight - 1` times more (such a miss also costs the conversation's
    /// later turns, and adds work to the fleet), plus what the requests in flight there add.
    @inline(__always)
    func cost(missTokens: Int, unavoidable: Int, ahead: Double, inFlight: Int, rate: Double) -> Double {
        let p = self.settings.placement
        let avoidable = Double(max(0, missTokens - unavoidable))
        let slowdown = p.prefillTokensPerSecond / rate
        return (Double(missTokens) + max(0, p.missWeight - 1) * avoidable + ahead) / rate + Double(inFlight) * p.secondsPerInFlight * slowdown
    }

    /// Prefill tokens queued ahead of a newcomer on a replica: this router's own requests still
    /// before their first token, or what the replica reports waiting (at its typical request's
    /// size), whichever is larger (other router instances send there too).
    @inline(__always)
    func queuedAhead(load: ReplicaLoad, speed: ServiceEstimate) -> Double {
        max(Double(load.pendingPrefillTokens), Double(load.probedWaiting ?? 0) * speed.meanMissTokens)
    }

    /// The bounded-load ceiling over the routable members of a pool.
    func ceiling(_ pool: FleetSnapshot.Pool, fleet: FleetSnapshot) -> (ceiling: Int, total: Int, routable: Int) {
        var total = 0
        var n = 0
        for m in pool.members where fleet.routable[m] {
            total += self.load(replicaID: fleet.ids[m]).inFlight
            n += 1
        }
        let c = self.settings.placement.loadFactor * Double(total + 1) / Double(max(1, n))
        return (max(self.settings.placement.ceilingFloor, Int(c.rounded(.up))), total, n)
    }

    /// Orders the first `count` members by rendezvous score for the session, in place (ring order
    /// without a session).
    func rank(_ members: inout [Int], count: Int, session: SessionKey?, fleet: FleetSnapshot) {
        guard let session, count > 1 else { return }
        // Equal weights order by the hash alone (the score is monotonic in it): no logarithm.
        let weight = fleet.replicas[members[0]].weight
        let equal = members[..<count].allSatisfy { fleet.replicas[$0].weight == weight }
        withUnsafeTemporaryAllocation(of: Double.self, capacity: count) { scores in
            for k in 0..<count {
                let m = members[k]
                let score = equal
                    ? Double(XXH3.hash(session.key, seed: fleet.nameSeeds[m]) >> 11)
                    : Rendezvous.score(key: session.key, replicaSeed: fleet.nameSeeds[m], weight: fleet.replicas[m].weight)
                // Insertion sort, highest first: a group has a handful of members.
                var i = k
                while i > 0, scores[i - 1] < score {
                    scores[i] = scores[i - 1]
                    members[i] = members[i - 1]
                    i -= 1
                }
                scores[i] = score
                members[i] = m
            }
        }
    }

    /// The least-loaded routable member of a pool (fewest in flight, then fewest waiting, then name).
    func leastLoaded(
        _ pool: FleetSnapshot.Pool,
        fleet: FleetSnapshot,
        note: String,
        match: FleetSnapshot.PoolMatch
    ) -> RoutingDecision {
        // One pass for the minimum (no filtered copy, no sort): fewest in flight, then fewest
        // probed waiting, then the name, so that equal replicas are chosen the same way everywhere.
        var best: (replica: Int, inFlight: Int, waiting: Int)?
        for replica in pool.members where fleet.routable[replica] {
            let load = self.load(replicaID: fleet.ids[replica])
            let waiting = load.probedWaiting ?? 0
            if let b = best {
                if load.inFlight != b.inFlight {
                    if load.inFlight > b.inFlight { continue }
                } else if waiting != b.waiting {
                    if waiting > b.waiting { continue }
                } else if fleet.replicas[replica].name >= fleet.replicas[b.replica].name {
                    continue
                }
            }
            best = (replica, load.inFlight, waiting)
        }
        guard let best else {
            return RoutingDecision(replica: nil, tier: .fallback, note: "no healthy replica", poolMatch: match)
        }
        return RoutingDecision(replica: best.replica, tier: .fallback, note: note, poolMatch: match, ringKey: 0)
    }

    // MARK: - Commit and completion

    /// Decides where a request goes and commits it there: the one way a request is placed (the
    /// proxy, through `FleetRouter`, and the simulator). No ticket when no replica is routable.
    public mutating func place(
        _ keys: Result<RequestKeys, KeyError>,
        header: (String) -> String? = { _ in nil },
        fleet: FleetSnapshot,
        now: Double
    ) -> (decision: RoutingDecision, ticket: PlacementTicket?) {
        let decision = self.decide(keys, header: header, fleet: fleet, now: now)
        guard let replica = decision.replica else { return (decision, nil) }
        let ticket = self.commit(try? keys.get(), decision: decision, replica: replica, missTokens: decision.missTokens, fleet: fleet, now: now)
        return (decision, ticket)
    }

    /// Records that the request with `keys` was sent to fleet index `replica` per `decision` (the
    /// prefill it will do: the decision's estimate when `replica` is its choice, else the index's).
    public mutating func commit(
        _ keys: RequestKeys?,
        decision: RoutingDecision,
        replica: Int,
        fleet: FleetSnapshot,
        now: Double,
        countRate: Bool = true
    ) -> PlacementTicket {
        self.commit(
            keys, decision: decision, replica: replica, missTokens: replica == decision.replica ? decision.missTokens : nil, fleet: fleet,
            now: now, countRate: countRate)
    }

    /// Records that the request with `keys` was sent to fleet index `replica`: updates the prefix
    /// index, the hot-prefix rate (once per request: `countRate`) and the load. `missTokens` is
    /// the prefill the replica will do (nil: estimated from the index, for a replica other than
    /// the decision's choice).
    public mutating func commit(
        _ keys: RequestKeys?,
        decision: RoutingDecision,
        replica: Int,
        missTokens: Int?,
        fleet: FleetSnapshot,
        now: Double,
        countRate: Bool = true
    ) -> PlacementTicket {
        let id = fleet.ids[replica]
        var pending = 0
        if let keys {
            let promptTokens = keys.promptTokens(bytesPerToken: self.settings.keying.bytesPerToken)
            pending = missTokens
                ?? promptTokens
                    - min(promptTokens, self.index.matchedBlocks(keys.chain, replicaID: id) * self.settings.tokensPerBlock)
            self.index.record(
                keys.chain,
                session: keys.session?.key,
                replicaID: id,
                capacityBlocks: self.capacityBlocks(fleet, replica)
            )
            if countRate, let instruction = keys.instruction {
                let (pool, _) = fleet.pool(for: keys.model)
                _ = self.spill.record(
                    instruction.key,
                    base: self.settings.placement.groupSize,
                    poolSize: pool.ring.members.count,
                    now: now
                )
            }
        }
        let (ahead, queueing) = self.loads.modify(id, default: { ReplicaLoad() }) { load in
            let ahead = load.pendingPrefillTokens
            load.inFlight += 1
            load.pendingPrefillTokens += pending
            return (ahead, (load.probedWaiting ?? 0) > 0)
        }
        let prompt = keys?.promptTokens(bytesPerToken: self.settings.keying.bytesPerToken) ?? 0
        var ticket = PlacementTicket(
            replicaID: id, pendingTokens: pending, promptTokens: prompt, aheadTokens: ahead, sentAt: now, replicaWasQueueing: queueing)
        ticket.predictedCachedTokens = max(0, prompt - pending)
        return ticket
    }

    /// The first byte of the answer arrived: the prefill is done.
    public mutating func firstByte(_ ticket: inout PlacementTicket) {
        guard !ticket.firstByteSeen else { return }
        ticket.firstByteSeen = true
        self.loads.modify(ticket.replicaID, default: { ReplicaLoad() }) { load in
            load.pendingPrefillTokens = max(0, load.pendingPrefillTokens - ticket.pendingTokens)
        }
    }

    /// A request ended well: what it took teaches the service model the replica's speed.
    ///   - firstTokenSeconds: from sending to the first token (nil: the answer came whole).
    ///   - seconds: from sending to the end.
    ///   - promptTokens, cachedTokens: the replica's own `usage` figures, when it reported them
    ///     (their ratio scales the router's estimate of the prefill it did).
    ///   - outputTokens: `usage.completion_tokens`, when reported.
    /// Returns why the replica's prefix-index entries were forgotten, when the answer ended a run
    /// of predicted hits that came back uncached (`CacheTruth`).
    @discardableResult
    public mutating func observe(
        _ ticket: PlacementTicket,
        firstTokenSeconds: Double?,
        seconds: Double,
        promptTokens: Int?,
        cachedTokens: Int?,
        outputTokens: Int?,
        now: Double = 0
    ) -> CacheResetReason? {
        guard ticket.counted else { return nil }
        var reset: CacheResetReason?
        if let cached = cachedTokens {
            reset = self.truth.answered(
                replicaID: ticket.replicaID, predicted: ticket.predictedCachedTokens, estimatedPrompt: ticket.promptTokens, reportedPrompt: promptTokens,
                reportedCached: cached, now: now)
            if reset != nil { self.index.forget(replicaID: ticket.replicaID) }
        }
        var miss = ticket.pendingTokens
        if let prompt = promptTokens, prompt > 0, let cached = cachedTokens {
            miss = Int((Double(ticket.promptTokens) * Double(max(0, prompt - cached)) / Double(prompt)).rounded())
        }
        self.service.observe(
            replicaID: ticket.replicaID,
            ServiceObservation(
                missTokens: miss, replicaWasQueueing: ticket.replicaWasQueueing, aheadTokens: ticket.aheadTokens,
                firstTokenSeconds: firstTokenSeconds, seconds: seconds, outputTokens: outputTokens)
        )
        return reset
    }

    /// The request ended (success, failure or cancel).
    public mutating func finish(_ ticket: PlacementTicket) {
        guard ticket.counted else { return }
        self.loads.modify(ticket.replicaID, default: { ReplicaLoad() }) { load in
            load.inFlight = max(0, load.inFlight - 1)
            if !ticket.firstByteSeen { load.pendingPrefillTokens = max(0, load.pendingPrefillTokens - ticket.pendingTokens) }
        }
    }
}

extension String {
    /// `value` with one decimal and a suffix, without Foundation.
    init(format1 value: Double, _ suffix: String) {
        let tenths = Int((value * 10).rounded())
        self = "\(tenths / 10).\(abs(tenths % 10))\(suffix)"
    }
}
