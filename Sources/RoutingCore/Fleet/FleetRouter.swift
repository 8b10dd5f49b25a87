/// What the routing of a fleet needs besides the request: routing, health and retry settings.
public struct FleetSettings: Sendable, Equatable {
    public var routing: RoutingSettings
    public var health: HealthSettings
    public var retry: RetrySettings

    public init(routing: RoutingSettings = RoutingSettings(), health: HealthSettings = HealthSettings(), retry: RetrySettings = RetrySettings()) {
        self.routing = routing
        self.health = health
        self.retry = retry
    }
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
    /// Bumped on every rebuild of the snapshot.
    public private(set) var version = 1

    public init(settings: FleetSettings, replicas: [ReplicaSpec], now: Double = 0) {
        self.settings = settings
        self.membership = FleetMembership(configured: replicas)
        self.router = Router(settings: settings.routing)
        self.health = FleetHealth(settings: settings.health)
        self.retries = RetryPolicy(settings: settings.retry, now: now)
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

    /// Where a request goes after its attempt on `previous` failed before the first byte: the next
    /// candidate of the original decision (then the ring) that is routable now and was not tried
    /// (`excluding`, by name), if the retry budget allows.
    public mutating func retry(after previous: Placement, excluding tried: [String], keys: RequestKeys?, now: Double) -> Placement? {
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
        guard let next, self.retries.withdraw() else { return nil }
        let ticket = self.router.commit(keys, decision: previous.decision, replica: next, missTokens: nil, fleet: fleet, now: now, countRate: false)
        return Placement(decision: previous.decision, replica: next, ticket: ticket, fleet: fleet)
    }

    /// The same attempt once more (a stale pooled connection): new load accounting, same replica.
    public mutating func again(_ placement: Placement, keys: RequestKeys?, now: Double) -> Placement {
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
