import Atomics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import RouterConfig
import RoutingCore

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

/// The router's shared state: the shell around the routing core's `FleetRouter`.
///
/// It holds the lock, reads the clock, keeps the configuration and what the probes last
/// reported, and tells listeners when the snapshot changed; every decision (placement, retries
/// and their budget, health and ejections, membership) is the `FleetRouter`'s. The work done
/// under the lock is that decision and its bookkeeping (microseconds); key extraction, I/O and
/// logging happen outside.
public final class RouterState: Sendable {
    struct Inner {
        var config: RouterConfiguration
        var core: FleetRouter
        /// What the probes last learned of each replica.
        var probes: [String: ProbeReport] = [:]
        var proxySettings: ProxySettings
    }

    let inner: AdaptiveLockedBox<Inner>
    let logger: Logger
    let start = NIODeadline.now()
    /// Called after every snapshot change (metrics refresh their per-replica objects, pools prune).
    let onChange: NIOLockedValueBox<[@Sendable (FleetSnapshot) -> Void]> = NIOLockedValueBox([])
    /// Bumped on every configuration change; read without the lock on every request.
    let settingsCounter = ManagedAtomic<Int>(0)

    public init(config: RouterConfiguration, logger: Logger, eventLoops: Int = System.coreCount) {
        self.inner = AdaptiveLockedBox(
            Inner(
                config: config,
                core: FleetRouter(settings: config.fleetSettings, replicas: config.replicas),
                proxySettings: ProxySettings(config, eventLoops: eventLoops)
            )
        )
        self.logger = logger
    }

    /// Monotonic seconds since start: the time the routing core is given.
    public func now() -> Double {
        Double((NIODeadline.now() - self.start).nanoseconds) / 1e9
    }

    public var config: RouterConfiguration { self.inner.withLockedValue { $0.config } }
    /// The current snapshot (one reference, read under the lock). A request keeps the one it
    /// was routed with; anything that reads several facts of the fleet reads them from one snapshot.
    public var fleet: FleetSnapshot { self.inner.withLockedValue { $0.core.fleet } }
    public var version: Int { self.inner.withLockedValue { $0.core.version } }
    public var proxySettings: ProxySettings { self.inner.withLockedValue { $0.proxySettings } }

    /// Settings with the version they belong to (a handler re-reads them only when it changes).
    public var proxySettingsVersioned: (ProxySettings, Int) {
        self.inner.withLockedValue { ($0.proxySettings, self.settingsCounter.load(ordering: .relaxed)) }
    }

    public var settingsVersion: Int { self.settingsCounter.load(ordering: .relaxed) }

    /// Reloads applied and rejected (metrics).
    let reloadCounters = NIOLockedValueBox((applied: 0, failed: 0))
    public var reloadFailures: Int { self.reloadCounters.withLockedValue { $0.failed } }
    public var reloadsApplied: Int { self.reloadCounters.withLockedValue { $0.applied } }

    public func countReload(success: Bool) {
        self.reloadCounters.withLockedValue { success ? ($0.applied += 1) : ($0.failed += 1) }
    }

    public func observe(_ callback: @escaping @Sendable (FleetSnapshot) -> Void) {
        self.onChange.withLockedValue { $0.append(callback) }
        callback(self.fleet)
    }

    /// Runs `body` on the core under the lock, and tells listeners if it rebuilt the snapshot.
    @inline(__always)
    func update<T>(_ body: (inout FleetRouter) -> T) -> T {
        let (result, changed) = self.inner.withLockedValue { s -> (T, Bool) in
            let before = s.core.version
            let result = body(&s.core)
            return (result, s.core.version != before)
        }
        if changed { self.notify() }
        return result
    }

    // MARK: - Requests

    /// Where a request went, or why it could not go anywhere.
    public enum RouteResult {
        case placed(Placement)
        /// No replica can take it; the reason in words.
        case unplaced(reason: String)
    }

    /// Decides and commits where a request goes.
    public func route(_ keys: Result<RequestKeys, KeyError>, header: (String) -> String?) -> RouteResult {
        let now = self.now()
        return self.update { core in
            let (decision, placement) = core.route(keys, header: header, now: now)
            if let placement { return .placed(placement) }
            return .unplaced(reason: decision.reason(in: core.fleet))
        }
    }

    /// The next replica for a request whose attempt on `previous` failed before its first byte.
    public func retry(after previous: Placement, excluding tried: [String], keys: RequestKeys?) -> Placement? {
        let now = self.now()
        return self.update { $0.retry(after: previous, excluding: tried, keys: keys, now: now) }
    }

    /// The same attempt once more on a fresh connection (a stale pooled one failed).
    public func again(_ placement: Placement, keys: RequestKeys?) -> Placement {
        let now = self.now()
        return self.update { $0.again(placement, keys: keys, now: now) }
    }

    public func firstByte(_ ticket: inout PlacementTicket) {
        self.inner.withLockedValue { $0.core.firstByte(&ticket) }
    }

    /// An attempt ended: release its load and feed the outcome to passive health.
    public func finish(_ placement: Placement, outcome: AttemptOutcome) {
        let now = self.now()
        if self.update({ $0.finish(placement, outcome: outcome, now: now) }) {
            self.logger.warning("replica ejected after consecutive failures", metadata: ["replica": "\(placement.replicaName)"])
        }
    }

    /// A decision with live state, committing nothing (`/admin/explain`).
    public func explain(_ keys: Result<RequestKeys, KeyError>, header: (String) -> String?) -> (RoutingDecision, FleetSnapshot, RoutingSettings) {
        let now = self.now()
        return self.inner.withLockedValue { s in (s.core.explain(keys, header: header, now: now), s.core.fleet, s.config.routing) }
    }

    // MARK: - Health and membership

    /// Feeds a probe result; returns the replica's new state when it changed.
    public func probe(_ name: String, success: Bool, error: String?) -> ReplicaHealth.State? {
        let now = self.now()
        return self.update { $0.probe(name, success: success, error: error, now: now) }
    }

    /// Feeds probed load signals to the routing core.
    public func observeLoad(_ name: String, waiting: Int?, running: Int?, kvUsage: Double?, cacheTokens: Int?) {
        self.inner.withLockedValue { $0.core.observeLoad(name, waiting: waiting, running: running, kvUsage: kvUsage, cacheTokens: cacheTokens) }
    }

    /// Models a replica serves, from its `/v1/models` (used when the config lists none).
    public func observeModels(_ name: String, models: [String]) {
        let now = self.now()
        _ = self.update { $0.observeModels(name, models: models, now: now) }
    }

    /// Replaces the replicas found by DNS discovery.
    public func setDiscovered(_ replicas: [ReplicaSpec]) {
        let now = self.now()
        _ = self.update { $0.setDiscovered(replicas, now: now) }
    }

    public func health(of name: String) -> ReplicaHealth? {
        self.inner.withLockedValue { $0.core.health[name] }
    }

    public func load(of name: String) -> ReplicaLoad? {
        self.inner.withLockedValue { s in
            s.core.fleet.index(of: name).map { s.core.router.load(replicaID: s.core.fleet.ids[$0]) }
        }
    }

    /// Swaps in a new configuration (a reload): configured replicas and settings change, health
    /// and learned state carry over by replica name. Listeners do not change.
    public func apply(_ config: RouterConfiguration) {
        let now = self.now()
        self.inner.withLockedValue { s in
            var config = config
            config.listen = s.config.listen
            config.adminListen = s.config.adminListen
            s.config = config
            s.proxySettings = ProxySettings(config, eventLoops: s.proxySettings.eventLoops)
            self.settingsCounter.wrappingIncrement(ordering: .relaxed)
            s.core.apply(config.fleetSettings, replicas: config.replicas, now: now)
            s.probes = s.probes.filter { s.core.health[$0.key] != nil }
        }
        self.notify()
    }

    private func notify() {
        let fleet = self.fleet
        for callback in self.onChange.withLockedValue({ $0 }) { callback(fleet) }
    }

    // MARK: - Reports

    /// Every replica with its health, load and probe results, for `/admin/replicas` and metrics.
    public func replicaReport() -> [ReplicaReport] {
        self.inner.withLockedValue { s in
            let fleet = s.core.fleet
            return fleet.replicas.enumerated().map { i, spec in
                ReplicaReport(
                    spec: spec,
                    endpoint: fleet.endpoints[i],
                    routable: fleet.routable[i],
                    health: s.core.health[spec.name] ?? ReplicaHealth(),
                    load: s.core.router.load(replicaID: fleet.ids[i]),
                    probe: s.probes[spec.name] ?? ProbeReport()
                )
            }
        }
    }

    /// Records what a probe round learned of a replica (signals and scrape errors).
    public func recordProbe(_ name: String, _ update: (inout ProbeReport) -> Void) {
        self.inner.withLockedValue { s in
            guard s.core.health[name] != nil else { return }
            update(&s.probes[name, default: ProbeReport()])
        }
    }

    /// Hot-prefix state for metrics: widenings so far and prefixes widened now.
    public func spillSummary() -> (widenings: Int, widened: Int) {
        self.inner.withLockedValue { s in
            (s.core.router.spill.widenings, s.core.router.spill.widenedKeys(base: s.config.routing.placement.groupSize))
        }
    }
}

/// One replica as `/admin/replicas` and the metrics show it.
public struct ReplicaReport: Sendable {
    public var spec: ReplicaSpec
    public var endpoint: ReplicaEndpoint
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
