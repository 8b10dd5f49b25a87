/// What the routing of a fleet needs besides the request: routing, health and retry settings.
public struct FleetSettings: Sendable, Equatable {
    public var routing: RoutingSettings
    public var health: HealthSettings
    public var retry: RetrySettings
    public var queue: QueueSettings

    public init(
        routing: RoutingSettings = RoutingSettings(), health: HealthSettings = HealthSettings(), retry: RetrySettings = RetrySettings(),
        queue: QueueSettings = QueueSettings()
    ) {
        self.routing = routing
        self.health = health
        self.retry = retry
        self.queue = queue
    }
}

/// What became of a request offered to the fleet.
public enum Admission: Sendable {
    /// It goes to this replica now.
    case placed(Placement)
    /// It waits in the router's queue for a replica with room (`dispatchQueued` sends it on).
    case queued
    /// The queue cannot take it.
    case rejected(QueueRejection)
    /// No replica can take it at all (none routable for its model).
    case unplaced(RoutingDecision)
}

/// Every decision the router makes about its fleet, in one value: where a request goes (the
/// `Router`), where it goes when that fails (the `RetryPolicy` and the decision's retry order),
/// which replicas are in rotation (`FleetHealth` from probes and request outcomes) and who is a
/// member at all (`FleetMembership`: configured, discovered, probed models). Each change that
/// alters membership or routability rebuilds the `FleetSnapshot` whole.
///
/// Pure: time is passed in, nothing here does I/O. The proxy holds one behind a lock and runs
/// what it decides; the simulator drives one directly.
public struct FleetRouter: Sendable {
    public private(set) var settings: FleetSettings
    public private(set) var membership: FleetMembership
    public private(set) var fleet: FleetSnapshot
    public private(set) var router: Router
    public private(set) var health: FleetHealth
    public private(set) var retries: RetryPolicy
    /// Requests waiting for a replica with room.
    public private(set) var queue: AdmissionQueue
    /// Bumped on every rebuild of the snapshot.
    public private(set) var version = 1
    /// Replicas whose prefix-index entries were forgotten since the shell last took this list
    /// (`takeResets`): it logs and counts them.
    public private(set) var resets: [(replica: String, reason: CacheResetReason, dropped: Int)] = []

    /// The forgotten replicas since the last call, once each.
    public mutating func takeResets() -> [(replica: String, reason: CacheResetReason, dropped: Int)] {
        defer { self.resets.removeAll() }
        return self.resets
    }

    public init(settings: FleetSettings, replicas: [ReplicaSpec], now: Double = 0) {
        self.settings = settings
        self.membership = FleetMembership(configured: replicas)
        self.router = Router(settings: settings.routing)
        self.health = FleetHealth(settings: settings.health)
        self.retries = RetryPolicy(settings: settings.retry, now: now)
        self.queue = AdmissionQueue(settings: settings.queue)
        self.health.retain(replicas.map(\.name), now: now)
        self.fleet = FleetSnapshot(replicas: replicas, vnodesPerWeight: settings.routing.placement.vnodesPerWeight)
    }

    // MARK: - Requests

    /// Decides where a request goes and commits it (load, prefix index, hot-prefix rate). A
    /// decision without a replica (none routable) commits nothing.
    public mutating func route(_ keys: Result<RequestKeys, KeyError>, header: (String) -> String? = { _ in nil }, now: Double) -> (decision: RoutingDecision, placement: Placement?) {
        if self.health.ejectionEnded(now: now) { self.expireEjections(now: now) }
        let fleet = self.fleet
        let (decision, ticket) = self.router.place(keys, header: header, fleet: fleet, now: now)
        guard let replica = decision.replica, let ticket else { return (decision, nil) }
        self.retries.deposit(now: now)
        return (decision, Placement(decision: decision, replica: replica, ticket: ticket, fleet: fleet))
    }

    /// Offers a request to the fleet: it goes now to the replica the placement chooses if that one
    /// has room, else it waits in the router's queue (when the queue is on) for a replica with
    /// room: preferably the one that holds its prefix, which the placement goes on choosing as long
    /// as waiting for it is cheaper than a miss elsewhere.
    ///   - waiting: the request's place in the queue, made only if it has to wait (its tenant,
    ///     priority and copies of its keys cost nothing on the common path).
    public mutating func admit(
        _ keys: Result<RequestKeys, KeyError>, header: (String) -> String? = { _ in nil }, now: Double, waiting: () -> QueuedRequest
    ) -> Admission {
        if self.health.ejectionEnded(now: now) { self.expireEjections(now: now) }
        let fleet = self.fleet
        let decision = self.router.decide(keys, header: header, fleet: fleet, now: now)
        guard let replica = decision.replica else { return .unplaced(decision) }
        if self.settings.queue.enabled, !self.hasRoom(replica, fleet: fleet) {
            if let refused = self.queue.enqueue(waiting()) { return .rejected(refused) }
            return .queued
        }
        return .placed(self.commit(keys, decision, replica, missTokens: decision.missTokens, fleet: fleet, now: now))
    }

    /// Places a request that costs its replica next to nothing (Anthropic `count_tokens`, which
    /// only renders and counts): where the placement would send it, committing no load, no
    /// prefix and no rate, and never queued.
    public mutating func placeUncounted(_ keys: Result<RequestKeys, KeyError>, header: (String) -> String? = { _ in nil }, now: Double) -> Admission {
        if self.health.ejectionEnded(now: now) { self.expireEjections(now: now) }
        let fleet = self.fleet
        let decision = self.router.decide(keys, header: header, fleet: fleet, now: now)
        guard let replica = decision.replica else { return .unplaced(decision) }
        return .placed(Placement(decision: decision, replica: replica, ticket: .uncounted(replicaID: fleet.ids[replica], now: now), fleet: fleet))
    }

    /// `admit` for a request already in queue form (the simulator).
    public mutating func admit(_ request: QueuedRequest, now: Double) -> Admission {
        self.admit(request.keys, header: request.header, now: now) { request }
    }

    /// Sends on the queued requests that can go now (call when a replica's load dropped: an answer
    /// started or ended, a probe came in), in two passes over the first `lookahead` of the queue:
    /// first each request to the replica its placement chooses, if that one has room (late
    /// binding: the replica that holds its prefix, as soon as it frees up); then each replica that
    /// would otherwise run dry takes the waiting request that loses the least cache by going there
    /// (a fresh prefix loses nothing), so no replica idles while requests wait.
    public mutating func dispatchQueued(now: Double) -> [(request: QueuedRequest, placement: Placement)] {
        guard !self.queue.isEmpty else { return [] }
        let fleet = self.fleet
        let waiting = self.queue.peek(limit: max(1, self.settings.queue.lookahead))
        var placements: [(QueuedRequest, Placement)] = []
        var left: [(request: QueuedRequest, decision: RoutingDecision)] = []
        for request in waiting {
            let decision = self.router.decide(request.keys, header: request.header, fleet: fleet, now: now)
            guard let best = decision.replica else { continue }
            if self.hasRoom(best, fleet: fleet) {
                placements.append((request, self.commit(request.keys, decision, best, missTokens: decision.missTokens, fleet: fleet, now: now)))
            } else {
                left.append((request, decision))
            }
        }
        if !left.isEmpty {
            for replica in fleet.replicas.indices where fleet.routable[replica] && !left.isEmpty && self.runsDry(replica, fleet: fleet) {
                // The request that loses the least by going here (higher priority first, then older).
                var choice: (index: Int, loss: Int, miss: Int)?
                for (i, entry) in left.enumerated() {
                    guard let c = entry.decision.candidates.first(where: { $0.replica == replica && $0.eligible }) else { continue }
                    let miss = entry.decision.promptTokens - c.cachedTokens
                    let loss = max(0, miss - entry.decision.missTokens)
                    if let best = choice {
                        let a = left[best.index].request
                        if a.priority > entry.request.priority || (a.priority == entry.request.priority && best.loss <= loss) { continue }
                    }
                    choice = (i, loss, miss)
                }
                guard let choice else { continue }
                let entry = left.remove(at: choice.index)
                placements.append((entry.request, self.commit(entry.request.keys, entry.decision, replica, missTokens: choice.miss, fleet: fleet, now: now)))
            }
        }
        self.queue.take(Set(placements.map(\.0.id)))
        return placements
    }

    /// Whether a replica is idle: nothing of this router's in flight there, nothing waiting in its
    /// probes (capacity that is lost for good if nobody takes it).
    func runsDry(_ replica: Int, fleet: FleetSnapshot) -> Bool {
        let load = self.router.load(replicaID: fleet.ids[replica])
        return load.inFlight == 0 && (load.probedWaiting ?? 0) == 0
    }

    /// Takes out the queued requests whose deadline passed.
    public mutating func expireQueued(now: Double) -> [QueuedRequest] {
        self.queue.isEmpty ? [] : self.queue.expire(now: now)
    }

    /// Takes a queued request out (its client left).
    @discardableResult
    public mutating func cancelQueued(id: UInt64) -> QueuedRequest? {
        self.queue.remove(id: id)
    }

    /// Whether a replica can take one more request without queueing it: the prefill queued on it
    /// is under `queue.max_replica_wait` at its learned speed, and its requests in flight under its
    /// learned concurrency (with headroom).
    public func hasRoom(_ replica: Int, fleet: FleetSnapshot) -> Bool {
        let id = fleet.ids[replica]
        let q = self.settings.queue
        let speed = self.router.service.estimate(replicaID: id)
        let load = self.router.load(replicaID: id)
        if self.router.queuedAhead(load: load, speed: speed) / speed.prefillTokensPerSecond > q.maxReplicaWaitSeconds { return false }
        if let limit = speed.concurrencyLimit, Double(load.inFlight) >= max(1, limit * q.concurrencyHeadroom) { return false }
        return true
    }

    mutating func commit(
        _ keys: Result<RequestKeys, KeyError>, _ decision: RoutingDecision, _ replica: Int, missTokens: Int, fleet: FleetSnapshot, now: Double
    ) -> Placement {
        let ticket = self.router.commit(try? keys.get(), decision: decision, replica: replica, missTokens: missTokens, fleet: fleet, now: now)
        self.retries.deposit(now: now)
        return Placement(decision: decision, replica: replica, ticket: ticket, fleet: fleet)
    }

    /// A decision by a baseline policy (the simulator's comparisons), committed like any other.
    public mutating func route(baseline policy: BaselinePolicy, _ keys: Result<RequestKeys, KeyError>, counter: UInt64, now: Double) -> (decision: RoutingDecision, placement: Placement?) {
        let fleet = self.fleet
        let decision = self.router.decide(baseline: policy, keys, fleet: fleet, counter: counter)
        guard let replica = decision.replica else { return (decision, nil) }
        let ticket = self.router.commit(try? keys.get(), decision: decision, replica: replica, fleet: fleet, now: now)
        return (decision, Placement(decision: decision, replica: replica, ticket: ticket, fleet: fleet))
    }

    /// A request ended well: what it took teaches the service model (see `Router.observe`).
    /// Returns why the replica's prefix-index entries were forgotten, if this answer ended a run
    /// of mispredictions.
    @discardableResult
    public mutating func observe(
        _ placement: Placement, firstTokenSeconds: Double?, seconds: Double, promptTokens: Int?, cachedTokens: Int?, outputTokens: Int?, now: Double = 0
    ) -> CacheResetReason? {
        let before = self.router.index.count(replicaID: placement.ticket.replicaID)
        let reason = self.router.observe(
            placement.ticket, firstTokenSeconds: firstTokenSeconds, seconds: seconds, promptTokens: promptTokens, cachedTokens: cachedTokens,
            outputTokens: outputTokens, now: now)
        if let reason { self.resets.append((placement.replicaName, reason, before)) }
        return reason
    }

    /// What a replica's `/metrics` says of its process and cache counters; returns the reason
    /// and the entries dropped when they show its cache is gone (its prefix-index entries are
    /// then forgotten).
    public mutating func observeCacheSignals(_ name: String, processStart: Double?, cacheQueries: Double?) -> (CacheResetReason, Int)? {
        guard let i = self.fleet.index(of: name) else { return nil }
        let id = self.fleet.ids[i]
        guard let reason = self.router.truth.probed(replicaID: id, processStart: processStart, cacheQueries: cacheQueries) else { return nil }
        let dropped = self.router.index.forget(replicaID: id)
        self.resets.append((name, reason, dropped))
        return (reason, dropped)
    }

    /// Where a request goes after its attempt on `previous` failed before the first byte: the next
    /// candidate of the original decision (then the ring) that is routable now and was not tried
    /// (`excluding`, by name), if the retry budget allows.
    /// - budgeted: the retry spends the retry budget (not when the attempt was abandoned because
    ///   its replica left rotation: that moves a request, it adds no load).
    public mutating func retry(after previous: Placement, excluding tried: [String], keys: RequestKeys?, now: Double, budgeted: Bool = true) -> Placement? {
        let fleet = self.fleet
        let origin = previous.fleet
        let order = previous.decision.retryOrder(in: origin, model: keys?.model)
        var next: Int?
        for candidate in order {
            let name = origin.replicas[candidate].name
            guard name != previous.replicaName, !tried.contains(name), let index = fleet.index(of: name), fleet.routable[index] else { continue }
            next = index
            break
        }
        guard let next, !budgeted || self.retries.withdraw() else { return nil }
        guard previous.ticket.counted else {
            return Placement(decision: previous.decision, replica: next, ticket: .uncounted(replicaID: fleet.ids[next], now: now), fleet: fleet)
        }
        let ticket = self.router.commit(keys, decision: previous.decision, replica: next, missTokens: nil, fleet: fleet, now: now, countRate: false)
        return Placement(decision: previous.decision, replica: next, ticket: ticket, fleet: fleet)
    }

    /// The same attempt once more (a stale pooled connection): new load accounting, same replica.
    public mutating func again(_ placement: Placement, keys: RequestKeys?, now: Double) -> Placement {
        guard placement.ticket.counted else { return placement }
        let ticket = self.router.commit(
            keys, decision: placement.decision, replica: placement.replica, missTokens: placement.ticket.pendingTokens, fleet: placement.fleet,
            now: now, countRate: false)
        return Placement(decision: placement.decision, replica: placement.replica, ticket: ticket, fleet: placement.fleet)
    }

    /// The replica's first byte arrived: its prefill is done.
    public mutating func firstByte(_ ticket: inout PlacementTicket) {
        self.router.firstByte(&ticket)
    }

    /// An attempt ended: its load is released and its outcome feeds passive health. Returns true
    /// when that ejected the replica (the snapshot was rebuilt without it).
    public mutating func finish(_ placement: Placement, outcome: AttemptOutcome, now: Double) -> Bool {
        self.router.finish(placement.ticket)
        guard self.health.record(outcome, on: placement.replicaName, now: now) else { return false }
        self.rebuild(now: now)
        return true
    }

    /// A decision with the live state, committing nothing (explain).
    public func explain(_ keys: Result<RequestKeys, KeyError>, header: (String) -> String? = { _ in nil }, now: Double) -> RoutingDecision {
        self.router.decide(keys, header: header, fleet: self.fleet, now: now)
    }

    // MARK: - Health and membership

    /// Feeds a probe result; returns the replica's new state when it changed.
    public mutating func probe(_ name: String, success: Bool, error: String?, now: Double) -> ReplicaHealth.State? {
        let (state, routability) = self.health.probe(name, success: success, error: error, now: now)
        if routability { self.rebuild(now: now) }
        if let state, state != .unknown, let i = self.fleet.index(of: name) {
            // Back up after being down: it may have restarted between probes, its cache empty.
            let id = self.fleet.ids[i]
            if let reason = self.router.truth.health(replicaID: id, up: state == .up) {
                self.resets.append((name, reason, self.router.index.forget(replicaID: id)))
            }
        }
        return state
    }

    /// Feeds probed load signals of a replica.
    public mutating func observeLoad(_ name: String, waiting: Int?, running: Int?, kvUsage: Double?, cacheTokens: Int?) {
        guard let i = self.fleet.index(of: name) else { return }
        self.router.observeProbe(replicaID: self.fleet.ids[i], waiting: waiting, running: running, kvUsage: kvUsage, cacheTokens: cacheTokens)
    }

    /// Models a replica reported (used when it lists none). True when that changed the fleet.
    public mutating func observeModels(_ name: String, models: [String], now: Double) -> Bool {
        guard self.membership.probedModels[name] != models else { return false }
        self.membership.probedModels[name] = models
        self.rebuild(now: now)
        return true
    }

    /// Replaces the replicas found by discovery. True when that changed the fleet.
    public mutating func setDiscovered(_ replicas: [ReplicaSpec], now: Double) -> Bool {
        guard self.membership.discovered != replicas else { return false }
        self.membership.discovered = replicas
        self.rebuild(now: now)
        return true
    }

    /// A new configuration: settings and configured replicas change; health, load, the prefix
    /// index and rates carry over by replica name.
    public mutating func apply(_ settings: FleetSettings, replicas: [ReplicaSpec], now: Double) {
        self.settings = settings
        self.router.update(settings: settings.routing)
        self.health.settings = settings.health
        self.retries.settings = settings.retry
        self.queue.settings = settings.queue
        self.membership.configured = replicas
        self.rebuild(now: now)
    }

    /// Brings back replicas whose ejection ended.
    public mutating func expireEjections(now: Double) {
        self.health.advanceEjections(now: now)
        self.rebuild(now: now)
    }

    /// Rebuilds the snapshot from membership and health.
    mutating func rebuild(now: Double) {
        let specs = self.membership.members
        let names = specs.map(\.name)
        let members = Set(names)
        self.membership.probedModels = self.membership.probedModels.filter { members.contains($0.key) }
        self.health.retain(names, now: now)
        self.fleet = FleetSnapshot(
            replicas: specs,
            routable: specs.map { self.health.isRoutable($0.name, now: now) },
            vnodesPerWeight: self.settings.routing.placement.vnodesPerWeight,
            previous: self.fleet
        )
        self.router.retain(fleet: self.fleet)
        self.version += 1
    }
}
