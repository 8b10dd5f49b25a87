import Atomics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RouterConfig
import RoutingCore

/// Where a request went and how to retry it, handed from `RouterState.route` to the proxy.
/// A class: the proxy passes it around per request, and one reference is cheaper to hand on
/// than the decision, snapshot and address it holds. Used on one event loop at a time.
public final class Placement: @unchecked Sendable {
    public let decision: RoutingDecision
    public let replica: Int
    public var ticket: PlacementTicket
    public let fleet: FleetSnapshot
    public let endpoint: Endpoint

    init(decision: RoutingDecision, replica: Int, ticket: PlacementTicket, fleet: FleetSnapshot, endpoint: Endpoint) {
        self.decision = decision
        self.replica = replica
        self.ticket = ticket
        self.fleet = fleet
        self.endpoint = endpoint
    }

    public var replicaName: String { self.endpoint.name }
    public var url: ReplicaURL { self.endpoint.url }
}

/// A replica's address with what the proxy writes for it on every request, made once per
/// snapshot rather than per request.
public final class Endpoint: Sendable {
    public let name: String
    public let url: ReplicaURL
    let key: UpstreamKey
    /// `host: <authority>\r\n`
    let hostLine: [UInt8]
    /// `x-cacheroute-replica: <name>\r\n`
    let replicaLine: [UInt8]

    init(name: String, url: ReplicaURL) {
        self.name = name
        self.url = url
        self.key = UpstreamKey(host: url.host, port: url.port)
        self.hostLine = Array("host: \(url.authority)\r\n".utf8)
        self.replicaLine = Array("x-cacheroute-replica: \(name)\r\n".utf8)
    }

    static func make(_ spec: ReplicaSpec) -> Endpoint {
        Endpoint(name: spec.name, url: (try? ReplicaURL.parse(spec.url).get()) ?? ReplicaURL(host: "invalid", port: 1))
    }
}

/// The settings the data plane reads per request, kept apart from the whole configuration.
public struct ProxySettings: Sendable {
    public var keying: KeyingRules
    public var upstream: UpstreamSettings
    public var limits: LimitSettings
    /// Event loops sharing `max_connections_per_replica`.
    public var eventLoops: Int

    init(_ config: RouterConfiguration, eventLoops: Int) {
        self.keying = config.routing.keying
        self.upstream = config.upstream
        self.limits = config.limits
        self.eventLoops = eventLoops
    }
}

/// What the proxy learns about a replica from one request.
public enum UpstreamOutcome: Sendable, Equatable {
    case success
    /// Connection refused, reset, or timed out before the response.
    case connectFailure
    /// A 5xx status.
    case serverError(Int)
    case timeout
    /// Failed after the response had started.
    case brokenStream
    /// The client left first (says nothing about the replica).
    case clientGone
}

/// The router's shared state: configuration, fleet snapshot, the routing core and replica health.
///
/// One lock guards it; the work done under the lock is the routing decision and bookkeeping
/// (microseconds). Key extraction, I/O and snapshot rebuilding happen outside. The snapshot is
/// an immutable value swapped whole, so membership, health and rings never disagree.
public final class RouterState: Sendable {
    struct Inner {
        var config: RouterConfiguration
        var fleet: FleetSnapshot
        var router: Router
        var health: [String: ReplicaHealth]
        var endpoints: [Endpoint]
        var version: Int
        /// Replicas discovered through DNS (merged with the static list).
        var discovered: [ReplicaSpec] = []
        /// When the next passive ejection ends (a rebuild is due then).
        var nextEjectionEnd: Double?
        var retryTokens: Double
        var lastRetryRefill: Double
        /// Models each replica reported on `/v1/models` (probes).
        var probedModels: [String: [String]] = [:]
        /// What the probes last learned of each replica.
        var probes: [String: ProbeReport] = [:]
        var proxySettings: ProxySettings
    }

    let inner: AdaptiveLockedBox<Inner>
    let logger: Logger
    let start = NIODeadline.now()
    /// Called after every snapshot change (metrics refresh their per-replica objects).
    let onChange: NIOLockedValueBox<[@Sendable (FleetSnapshot) -> Void]> = NIOLockedValueBox([])

    public init(config: RouterConfiguration, logger: Logger, eventLoops: Int = System.coreCount) {
        let fleet = FleetSnapshot(replicas: config.replicas, vnodesPerWeight: config.routing.placement.vnodesPerWeight)
        self.inner = AdaptiveLockedBox(
            Inner(
                config: config,
                fleet: fleet,
                router: Router(settings: config.routing),
                health: Dictionary(uniqueKeysWithValues: config.replicas.map { ($0.name, ReplicaHealth()) }),
                endpoints: config.replicas.map(Endpoint.make),
                version: 1,
                retryTokens: 10,
                lastRetryRefill: 0,
                proxySettings: ProxySettings(config, eventLoops: eventLoops)
            )
        )
        self.logger = logger
    }

    /// Monotonic seconds since start.
    public func now() -> Double {
        Double((NIODeadline.now() - self.start).nanoseconds) / 1e9
    }

    public var config: RouterConfiguration { self.inner.withLockedValue { $0.config } }
    public var fleet: FleetSnapshot { self.inner.withLockedValue { $0.fleet } }
    public var version: Int { self.inner.withLockedValue { $0.version } }
    public var proxySettings: ProxySettings { self.inner.withLockedValue { $0.proxySettings } }

    /// Settings with the version they belong to (a handler re-reads them only when it changes).
    var proxySettingsVersioned: (ProxySettings, Int) {
        self.inner.withLockedValue { ($0.proxySettings, self.settingsCounter.load(ordering: .relaxed)) }
    }

    /// Reloads applied and rejected (metrics).
    let reloadCounters = NIOLockedValueBox((applied: 0, failed: 0))
    public var reloadFailures: Int { self.reloadCounters.withLockedValue { $0.failed } }
    public var reloadsApplied: Int { self.reloadCounters.withLockedValue { $0.applied } }

    /// Bumped on every configuration change; read without the lock on every request.
    let settingsCounter = ManagedAtomic<Int>(0)
    var settingsVersion: Int { self.settingsCounter.load(ordering: .relaxed) }

    /// The upstream address of a fleet index in the current snapshot.
    public func url(of replica: Int) -> ReplicaURL {
        self.inner.withLockedValue { $0.endpoints[replica].url }
    }

    public func observe(_ callback: @escaping @Sendable (FleetSnapshot) -> Void) {
        self.onChange.withLockedValue { $0.append(callback) }
        callback(self.fleet)
    }

    // MARK: - Routing

    /// Decides and records where a request goes (the routing core, under the lock).
    public func route(_ keys: Result<RequestKeys, KeyError>, header: (String) -> String?) -> (decision: RoutingDecision, placement: Placement?) {
        let now = self.now()
        if self.ejectionsDue(now: now) { self.refreshEjections(now: now) }
        return self.inner.withLockedValue { s in
            let decision = s.router.decide(keys, header: header, fleet: s.fleet, now: now)
            guard let replica = decision.replica else { return (decision, nil) }
            let ticket = s.router.commit(try? keys.get(), decision: decision, replica: replica, fleet: s.fleet, now: now)
            self.depositRetryToken(&s, now: now)
            return (decision, Placement(decision: decision, replica: replica, ticket: ticket, fleet: s.fleet, endpoint: s.endpoints[replica]))
        }
    }

    /// A retry on another replica of the same request: the next routable one in the decision's
    /// retry order that has not been tried, if the retry budget allows.
    public func retry(_ previous: Placement, keys: RequestKeys?, tried: [Int]) -> Placement? {
        let now = self.now()
        return self.inner.withLockedValue { s in
            guard s.retryTokens >= 1 else { return nil }
            let fleet = s.fleet
            let previousNames = tried.map { previous.fleet.replicas[$0].name }
            let order = previous.decision.retryOrder(in: previous.fleet, model: keys?.model).map { previous.fleet.replicas[$0].name }
            guard let name = order.first(where: { !previousNames.contains($0) && fleet.index(of: $0).map { fleet.routable[$0] } == true }),
                let replica = fleet.index(of: name)
            else { return nil }
            s.retryTokens -= 1
            var decision = previous.decision
            decision.replica = replica
            let ticket = s.router.commit(keys, decision: decision, replica: replica, fleet: fleet, now: now, countRate: false)
            return Placement(decision: decision, replica: replica, ticket: ticket, fleet: fleet, endpoint: s.endpoints[replica])
        }
    }

    /// The same placement once more (a stale pooled connection): new load accounting, same replica.
    public func again(_ placement: Placement, keys: RequestKeys?) -> Placement {
        let now = self.now()
        return self.inner.withLockedValue { s in
            let ticket = s.router.commit(keys, decision: placement.decision, replica: placement.replica, fleet: placement.fleet, now: now, countRate: false)
            return Placement(decision: placement.decision, replica: placement.replica, ticket: ticket, fleet: placement.fleet, endpoint: placement.endpoint)
        }
    }

    /// Retries may add `retryBudget` of the request rate plus `retryMinPerSecond`.
    private func depositRetryToken(_ s: inout Inner, now: Double) {
        let u = s.config.upstream
        let cap = max(10, u.retryMinPerSecond * 10)
        let elapsed = max(0, now - s.lastRetryRefill)
        s.lastRetryRefill = now
        s.retryTokens = min(cap, s.retryTokens + u.retryBudget + elapsed * u.retryMinPerSecond)
    }

    public func firstByte(_ ticket: inout PlacementTicket) {
        self.inner.withLockedValue { $0.router.firstByte(&ticket) }
    }

    /// A request ended: release its load and feed the outcome to passive health.
    public func finish(_ placement: Placement, outcome: UpstreamOutcome) {
        let now = self.now()
        let ejected: String? = self.inner.withLockedValue { s in
            s.router.finish(placement.ticket)
            let name = placement.fleet.replicas[placement.replica].name
            let thresholds = s.config.health.thresholds
            let ejectedNow: Bool?
            switch outcome {
            case .success:
                // Read first: a write to the dictionary costs allocations, and usually nothing changes.
                ejectedNow = s.health[name]?.successChangesState(now: now) == true
                    ? s.health[name]?.request(success: true, now: now, settings: thresholds) : false
            case .clientGone:
                ejectedNow = false
            case .connectFailure, .timeout, .brokenStream, .serverError:
                ejectedNow = s.health[name]?.request(success: false, error: "\(outcome)", now: now, settings: thresholds)
            }
            if ejectedNow == true, let until = s.health[name]?.ejectedUntil {
                s.nextEjectionEnd = min(s.nextEjectionEnd ?? until, until)
                self.nextEjectionEndBits.store(s.nextEjectionEnd!.bitPattern, ordering: .relaxed)
                self.rebuild(&s, now: now)
                return name
            }
            return nil
        }
        if let ejected {
            self.logger.warning("replica ejected after consecutive failures", metadata: ["replica": "\(ejected)"])
            self.notify()
        }
    }

    // MARK: - Health and membership

    /// Feeds a probe result; rebuilds the snapshot when routability changes.
    public func probe(_ name: String, success: Bool, error: String?) -> ReplicaHealth.State? {
        let now = self.now()
        let changed: ReplicaHealth.State? = self.inner.withLockedValue { s in
            guard var h = s.health[name] else { return nil }
            let before = h.isRoutable(now: now)
            let stateChanged = h.probe(success: success, error: error, settings: s.config.health.thresholds)
            s.health[name] = h
            if h.isRoutable(now: now) != before { self.rebuild(&s, now: now) }
            return stateChanged ? h.state : nil
        }
        if changed != nil { self.notify() }
        return changed
    }

    /// Feeds probed load signals to the routing core.
    public func observeLoad(_ name: String, waiting: Int?, running: Int?, kvUsage: Double?, cacheTokens: Int?) {
        self.inner.withLockedValue { s in
            guard let i = s.fleet.index(of: name) else { return }
            s.router.observeProbe(replicaID: s.fleet.ids[i], waiting: waiting, running: running, kvUsage: kvUsage, cacheTokens: cacheTokens)
        }
    }

    /// Models a replica serves, from its `/v1/models` (used when the config lists none).
    public func observeModels(_ name: String, models: [String]) {
        let changed: Bool = self.inner.withLockedValue { s in
            guard s.probedModels[name] != models else { return false }
            s.probedModels[name] = models
            self.rebuild(&s, now: self.now())
            return true
        }
        if changed { self.notify() }
    }

    public func health(of name: String) -> ReplicaHealth? {
        self.inner.withLockedValue { $0.health[name] }
    }

    public func load(of name: String) -> ReplicaLoad? {
        self.inner.withLockedValue { s in
            s.fleet.index(of: name).map { s.router.load(replicaID: s.fleet.ids[$0]) }
        }
    }

    /// Whether an ejection has ended (checked without the lock: one atomic read per request).
    func ejectionsDue(now: Double) -> Bool {
        let end = self.nextEjectionEndBits.load(ordering: .relaxed)
        return end != 0 && now >= Double(bitPattern: end)
    }

    let nextEjectionEndBits = ManagedAtomic<UInt64>(0)

    /// Re-enables ejected replicas whose time is up.
    func refreshEjections(now: Double) {
        let due = self.inner.withLockedValue { s -> Bool in
            guard let end = s.nextEjectionEnd, now >= end else { return false }
            s.nextEjectionEnd = s.health.values.compactMap(\.ejectedUntil).filter { $0 > now }.min()
            self.nextEjectionEndBits.store(s.nextEjectionEnd.map(\.bitPattern) ?? 0, ordering: .relaxed)
            self.rebuild(&s, now: now)
            return true
        }
        if due { self.notify() }
    }

    /// Swaps in a new configuration (a reload): static replicas and routing settings change,
    /// health and learned state carry over by replica name. Listeners do not change.
    public func apply(_ config: RouterConfiguration) {
        self.inner.withLockedValue { s in
            var config = config
            config.listen = s.config.listen
            config.adminListen = s.config.adminListen
            s.config = config
            s.proxySettings = ProxySettings(config, eventLoops: s.proxySettings.eventLoops)
            self.settingsCounter.wrappingIncrement(ordering: .relaxed)
            s.router.update(settings: config.routing)
            self.rebuild(&s, now: self.now())
        }
        self.notify()
    }

    /// Replaces the replicas found by DNS discovery.
    public func setDiscovered(_ replicas: [ReplicaSpec]) {
        let changed: Bool = self.inner.withLockedValue { s in
            guard s.discovered != replicas else { return false }
            s.discovered = replicas
            self.rebuild(&s, now: self.now())
            return true
        }
        if changed { self.notify() }
    }

    /// Rebuilds the snapshot from config, discovery, probed models and health (under the lock).
    private func rebuild(_ s: inout Inner, now: Double) {
        var specs = s.config.replicas
        let staticNames = Set(specs.map(\.name))
        specs += s.discovered.filter { !staticNames.contains($0.name) }
        for i in specs.indices where specs[i].models.isEmpty {
            if let models = s.probedModels[specs[i].name], !models.isEmpty { specs[i].models = models }
        }
        var health: [String: ReplicaHealth] = [:]
        for spec in specs { health[spec.name] = s.health[spec.name] ?? ReplicaHealth() }
        s.health = health
        s.probes = s.probes.filter { health[$0.key] != nil }
        let routable = specs.map { health[$0.name]!.isRoutable(now: now) }
        s.fleet = FleetSnapshot(
            replicas: specs,
            routable: routable,
            vnodesPerWeight: s.config.routing.placement.vnodesPerWeight,
            previous: s.fleet
        )
        // Endpoints carry over when a replica keeps its address (their bytes are reused).
        let previous = Dictionary(s.endpoints.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        s.endpoints = specs.map { spec in
            let made = Endpoint.make(spec)
            if let old = previous[spec.name], old.url == made.url { return old }
            return made
        }
        s.router.retain(fleet: s.fleet)
        s.version += 1
    }

    private func notify() {
        let fleet = self.fleet
        for callback in self.onChange.withLockedValue({ $0 }) { callback(fleet) }
    }

    /// Every replica with its health, load and probe results, for `/admin/replicas` and metrics.
    public func replicaReport() -> [ReplicaReport] {
        self.inner.withLockedValue { s in
            s.fleet.replicas.enumerated().map { i, spec in
                ReplicaReport(
                    spec: spec,
                    url: s.endpoints[i].url,
                    routable: s.fleet.routable[i],
                    health: s.health[spec.name] ?? ReplicaHealth(),
                    load: s.router.load(replicaID: s.fleet.ids[i]),
                    probe: s.probes[spec.name] ?? ProbeReport()
                )
            }
        }
    }

    /// Records what a probe round learned of a replica (signals and scrape errors).
    public func recordProbe(_ name: String, _ update: (inout ProbeReport) -> Void) {
        self.inner.withLockedValue { s in
            guard s.health[name] != nil else { return }
            update(&s.probes[name, default: ProbeReport()])
        }
    }

    /// Hot-prefix state for metrics: widenings so far and prefixes widened now.
    public func spillSummary() -> (widenings: Int, widened: Int) {
        self.inner.withLockedValue { s in
            (s.router.spill.widenings, s.router.spill.widenedKeys(base: s.config.routing.placement.groupSize))
        }
    }

    /// A decision with live state, committing nothing (`/admin/explain`).
    public func explain(_ keys: Result<RequestKeys, KeyError>, header: (String) -> String?) -> (RoutingDecision, FleetSnapshot, RoutingSettings) {
        let now = self.now()
        return self.inner.withLockedValue { s in
            (s.router.decide(keys, header: header, fleet: s.fleet, now: now), s.fleet, s.config.routing)
        }
    }
}

/// One replica as `/admin/replicas` and the metrics show it.
public struct ReplicaReport: Sendable {
    public var spec: ReplicaSpec
    public var url: ReplicaURL
    public var routable: Bool
    public var health: ReplicaHealth
    public var load: ReplicaLoad
    public var probe: ProbeReport
}

/// What the probes learned of a replica.
public struct ProbeReport: Sendable {
    /// Prefix-cache hit ratio between the last two scrapes (0-1).
    public var hitRatio: Double?
    public var waiting: Int?
    public var running: Int?
    public var kvUsage: Double?
    /// KV capacity from `vllm:cache_config_info` (tokens).
    public var cacheTokens: Int?
    /// Cumulative prefix-cache counters at the last scrape (vLLM).
    public var cacheQueries: Double?
    public var cacheHits: Double?
    public var probeFailures = 0
    /// The last failed /health or /metrics probe, and when (seconds since start).
    public var lastError: String?
    public var lastErrorAt: Double?
    /// When the replica was last probed successfully (seconds since start).
    public var lastSuccessAt: Double?
    public var models: [String]?

    public init() {}
}
