import Atomics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import RouterConfig
import ResponseCache
import RoutingCore

/// The settings the data plane reads per request, kept apart from the whole configuration.
public struct ProxySettings: Sendable {
    public var keying: KeyingRules
    public var upstream: UpstreamSettings
    public var limits: LimitSettings
    public var queue: QueueSettings
    /// Header names pinned-group rules match on.
    public var pinnedHeaders: [String]
    /// Event loops sharing `max_connections_per_replica`.
    public var eventLoops: Int
    /// Keys, tenants, the replicas' key and TLS context.
    public var access: AccessPolicy
    /// The data-plane listener speaks TLS (`X-Forwarded-Proto: https`).
    public var tls: Bool
    /// Peers whose forwarding fields are believed.
    public var trustedProxies: [AddressRange]
    /// The response caches' policy (the store itself is made once, at start).
    public var cache: CacheSettings
    /// Analyse one keyed request in this many for the prefix diagnostics (0: off).
    public var insightEvery: Int

    init(_ config: RouterConfiguration, eventLoops: Int, access: AccessPolicy) {
        self.access = access
        self.tls = config.tls != nil
        self.trustedProxies = config.trustedProxies
        self.cache = config.cache
        self.insightEvery = config.insight.enabled ? config.insight.sampleEvery : 0
        self.keying = config.routing.keying
        self.upstream = config.upstream
        self.limits = config.limits
        self.queue = config.queue
        self.pinnedHeaders = config.routing.placement.pinned.compactMap { $0.header?.name }
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
        /// Who to tell when a queued request gets a replica or is refused, by queue id.
        var waiters: [UInt64: QueueWaiter] = [:]
        var nextQueueID: UInt64 = 1
        /// When the queue was last offered to the replicas (dispatches triggered by answers are
        /// spaced by `queueDispatchSpacing`; the timer catches up).
        var lastDispatch = -Double.infinity
        var queueCounters = QueueCounters()
    }

    /// Dispatches of the queue triggered by load dropping come at most this often (seconds).
    static let queueDispatchSpacing = 0.002

    let inner: AdaptiveLockedBox<Inner>
    let logger: Logger
    let start = NIODeadline.now()
    /// Called after every snapshot change (metrics refresh their per-replica objects, pools prune).
    let onChange: NIOLockedValueBox<[@Sendable (FleetSnapshot) -> Void]> = NIOLockedValueBox([])
    /// Bumped on every configuration change; read without the lock on every request.
    let settingsCounter = ManagedAtomic<Int>(0)
    /// The prefix diagnostics (sampled requests; its own lock, off the routing lock).
    let insight: NIOLockedValueBox<PrefixInsight>

    public init(config: RouterConfiguration, logger: Logger, eventLoops: Int = System.coreCount, access: AccessPolicy = .open) {
        self.inner = AdaptiveLockedBox(
            Inner(
                config: config,
                core: FleetRouter(settings: config.fleetSettings, replicas: config.replicas),
                proxySettings: ProxySettings(config, eventLoops: eventLoops, access: access)
            )
        )
        self.logger = logger
        self.insight = NIOLockedValueBox(PrefixInsight(settings: config.insight.prefixInsight))
    }

    /// A sampled request's canonical instruction bytes (dropped after) and how it names its session.
    public func observeInstruction(_ text: [UInt8], session: String, promptTokens: Int? = nil, cachedTokens: Int? = nil) {
        let now = self.now()
        self.insight.withLockedValue { $0.observe(text, session: session, now: now, promptTokens: promptTokens, cachedTokens: cachedTokens) }
        text.scrub()
    }

    /// What the prefix diagnostics found (`/admin/prefixes`, metrics).
    public func prefixReport() -> PrefixInsight.Report {
        self.insight.withLockedValue { $0.report() }
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
    /// Keys, tenants and TLS to replicas, as of the current configuration.
    public var access: AccessPolicy { self.inner.withLockedValue { $0.proxySettings.access } }

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
        let (result, changed, resets) = self.inner.withLockedValue { s -> (T, Bool, [(replica: String, reason: CacheResetReason, dropped: Int)]) in
            let before = s.core.version
            let result = body(&s.core)
            return (result, s.core.version != before, s.core.resets.isEmpty ? [] : s.core.takeResets())
        }
        if changed { self.notify() }
        for r in resets {
            self.logger.warning(
                "replica's prefix cache is gone: forgetting what the router thought it held",
                metadata: ["replica": "\(r.replica)", "reason": "\(r.reason.rawValue)", "index_entries_dropped": "\(r.dropped)"])
        }
        return result
    }

    // MARK: - Requests

    /// Where a request went, or why it could not go anywhere.
    public enum RouteResult {
        case placed(Placement)
        /// It waits in the router's queue; the waiter hears when it gets a replica or is refused.
        case queued(id: UInt64)
        /// The queue refused it (full).
        case refused(QueueRejection, retryAfter: Int)
        /// No replica can take it; the reason in words.
        case unplaced(reason: String)
        /// It needs a stored response whose replica left the fleet (the id names it).
        case unknownResponse(String)
    }

    /// What the request's queue wait came to.
    public enum QueueOutcome: Sendable {
        case dispatched(Placement, waited: Double)
        case refused(QueueRejection, retryAfter: Int, waited: Double)
    }

    /// Told (on any thread) what became of a queued request.
    public typealias QueueWaiter = @Sendable (QueueOutcome) -> Void

    /// Decides where a request goes and commits it, or queues it when its replica has no room.
    ///   - bytes: the body the queue would hold.
    ///   - classify: the request's tenant and priority, asked only when it has to wait.
    ///   - waiter: made only when the request is queued, under the lock (so no dispatch can be missed).
    public func admit(
        _ keys: Result<RequestKeys, KeyError>,
        header: (String) -> String?,
        bytes: Int,
        classify: () -> (tenant: String, priority: Int),
        waiter: () -> QueueWaiter
    ) -> RouteResult {
        let now = self.now()
        return self.inner.withLockedValue { s -> RouteResult in
            let before = s.core.version
            defer { if s.core.version != before { self.notifyLater() } }
            let id = s.nextQueueID
            let deadline = now + s.core.settings.queue.timeoutSeconds
            let pinnedHeaders = s.proxySettings.pinnedHeaders
            let admission = s.core.admit(keys, header: header, now: now) {
                let (tenant, priority) = classify()
                var request = QueuedRequest(id: id, keys: keys, tenant: tenant, priority: priority, bytes: bytes, enqueuedAt: now, deadline: deadline)
                if !pinnedHeaders.isEmpty { request.headers = pinnedHeaders.compactMap { name in header(name).map { (name, $0) } } }
                return request
            }
            switch admission {
            case .placed(let placement):
                return .placed(placement)
            case .queued:
                s.nextQueueID += 1
                s.waiters[id] = waiter()
                s.queueCounters.queued += 1
                return .queued(id: id)
            case .rejected(let reason):
                s.queueCounters.refused[reason, default: 0] += 1
                return .refused(reason, retryAfter: Self.retryAfter(s))
            case .unplaced(let decision):
                return Self.unplaced(decision, s.core.fleet)
            }
        }
    }

    static func unplaced(_ decision: RoutingDecision, _ fleet: FleetSnapshot) -> RouteResult {
        if case .storedResponseGone(let id) = decision.basis { return .unknownResponse(id) }
        return .unplaced(reason: decision.reason(in: fleet))
    }

    /// Places a request that costs its replica next to nothing (`count_tokens`): no load, no
    /// prefix, never queued (`FleetRouter.placeUncounted`).
    public func placeUncounted(_ keys: Result<RequestKeys, KeyError>, header: (String) -> String?) -> RouteResult {
        let now = self.now()
        return self.inner.withLockedValue { s -> RouteResult in
            switch s.core.placeUncounted(keys, header: header, now: now) {
            case .placed(let placement): return .placed(placement)
            case .unplaced(let decision): return Self.unplaced(decision, s.core.fleet)
            case .queued, .rejected: return .unplaced(reason: "not placed")
            }
        }
    }

    /// The request `id` left the queue (its client went away).
    public func leaveQueue(id: UInt64) {
        self.inner.withLockedValue { s in
            s.waiters[id] = nil
            s.core.cancelQueued(id: id)
        }
    }

    /// Offers the queue to the replicas and refuses what waited too long (the proxy's timer; also
    /// after answers, spaced). Waiters hear outside the lock.
    public func serveQueue(force: Bool = true) {
        let now = self.now()
        let outcomes: [(QueueWaiter, QueueOutcome)] = self.inner.withLockedValue { s in
            guard !s.core.queue.isEmpty, force || now - s.lastDispatch >= Self.queueDispatchSpacing else { return [] }
            s.lastDispatch = now
            var out: [(QueueWaiter, QueueOutcome)] = []
            for (request, placement) in s.core.dispatchQueued(now: now) {
                guard let waiter = s.waiters.removeValue(forKey: request.id) else {
                    // Nobody waits any more (the client left as it went out): release its load.
                    _ = s.core.finish(placement, outcome: .clientGone, now: now)
                    continue
                }
                s.queueCounters.waits.append(now - request.enqueuedAt)
                out.append((waiter, .dispatched(placement, waited: now - request.enqueuedAt)))
            }
            let expired = s.core.expireQueued(now: now)
            if !expired.isEmpty {
                let retryAfter = Self.retryAfter(s)
                for request in expired {
                    s.queueCounters.refused[.timeout, default: 0] += 1
                    s.queueCounters.waits.append(now - request.enqueuedAt)
                    if let waiter = s.waiters.removeValue(forKey: request.id) {
                        out.append((waiter, .refused(.timeout, retryAfter: retryAfter, waited: now - request.enqueuedAt)))
                    }
                }
            }
            return out
        }
        for (waiter, outcome) in outcomes { waiter(outcome) }
    }

    /// Seconds a refused client should wait before trying again: about what the queue takes to
    /// drain at the fleet's recent pace (at least 1, at most 60).
    static func retryAfter(_ s: Inner) -> Int {
        let fleet = s.core.fleet
        var seconds = 0.0
        var routable = 0
        for i in fleet.replicas.indices where fleet.routable[i] {
            let e = s.core.router.service.estimate(replicaID: fleet.ids[i])
            seconds += e.firstTokenSeconds(missTokens: Int(e.meanMissTokens))
            routable += 1
        }
        guard routable > 0 else { return 5 }
        let perRequest = seconds / Double(routable)
        return min(60, max(1, Int((Double(s.core.queue.count) * perRequest / Double(routable)).rounded(.up))))
    }


    /// The next replica for a request whose attempt on `previous` failed before its first byte.
    public func retry(after previous: Placement, excluding tried: [String], keys: RequestKeys?, budgeted: Bool = true) -> Placement? {
        let now = self.now()
        return self.update { $0.retry(after: previous, excluding: tried, keys: keys, now: now, budgeted: budgeted) }
    }

    /// The same attempt once more on a fresh connection (a stale pooled one failed).
    public func again(_ placement: Placement, keys: RequestKeys?) -> Placement {
        let now = self.now()
        return self.update { $0.again(placement, keys: keys, now: now) }
    }

    public func firstByte(_ ticket: inout PlacementTicket) {
        let queueWaiting = self.inner.withLockedValue { s -> Bool in
            s.core.firstByte(&ticket)
            return !s.core.queue.isEmpty
        }
        if queueWaiting { self.serveQueue(force: false) }
    }

    /// What an answer that went well took, for the service model (see `Router.observe`).
    public struct Observation: Sendable {
        public var firstTokenSeconds: Double?
        public var seconds: Double
        public var promptTokens: Int?
        public var cachedTokens: Int?
        public var outputTokens: Int?

        public init(firstTokenSeconds: Double?, seconds: Double, promptTokens: Int?, cachedTokens: Int?, outputTokens: Int?) {
            self.firstTokenSeconds = firstTokenSeconds
            self.seconds = seconds
            self.promptTokens = promptTokens
            self.cachedTokens = cachedTokens
            self.outputTokens = outputTokens
        }
    }

    /// An attempt ended: release its load, feed the outcome to passive health (and what a good
    /// answer took to the service model), and offer the queue the room that freed up.
    public func finish(_ placement: Placement, outcome: AttemptOutcome, observation: Observation? = nil) {
        let now = self.now()
        let (ejected, queueWaiting) = self.update { core -> (Bool, Bool) in
            if let o = observation {
                core.observe(
                    placement, firstTokenSeconds: o.firstTokenSeconds, seconds: o.seconds, promptTokens: o.promptTokens, cachedTokens: o.cachedTokens,
                    outputTokens: o.outputTokens, now: now)
            }
            return (core.finish(placement, outcome: outcome, now: now), !core.queue.isEmpty)
        }
        if ejected {
            self.logger.warning("replica ejected after consecutive failures", metadata: ["replica": "\(placement.replicaName)"])
        }
        if queueWaiting { self.serveQueue(force: false) }
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
    /// Feeds what a scrape says of a replica's process and cache counters (a restart forgets
    /// its prefix-index entries).
    public func observeCacheSignals(_ name: String, processStart: Double?, cacheQueries: Double?) {
        _ = self.update { $0.observeCacheSignals(name, processStart: processStart, cacheQueries: cacheQueries) }
    }

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
    /// and learned state carry over by replica name. Listeners do not change. `access` is what
    /// the files `config` names hold (nil: the current one stays).
    public func apply(_ config: RouterConfiguration, access: AccessPolicy? = nil) {
        let now = self.now()
        self.inner.withLockedValue { s in
            var config = config
            config.listen = s.config.listen
            config.adminListen = s.config.adminListen
            // TLS on a listener turns on or off only on restart (its certificates do reload).
            if (config.tls == nil) != (s.config.tls == nil) { config.tls = s.config.tls }
            if (config.adminTLS == nil) != (s.config.adminTLS == nil) { config.adminTLS = s.config.adminTLS }
            s.config = config
            s.proxySettings = ProxySettings(config, eventLoops: s.proxySettings.eventLoops, access: access ?? s.proxySettings.access)
            self.settingsCounter.wrappingIncrement(ordering: .relaxed)
            s.core.apply(config.fleetSettings, replicas: config.replicas, now: now)
            s.probes = s.probes.filter { s.core.health[$0.key] != nil }
        }
        self.notify()
    }

    /// `notify` from inside the lock: run after it is released, on a task.
    private func notifyLater() {
        Task { self.notify() }
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
                    probe: s.probes[spec.name] ?? ProbeReport(),
                    learned: s.core.router.service.learned(replicaID: fleet.ids[i]),
                    speed: s.core.router.service.estimate(replicaID: fleet.ids[i]),
                    truth: s.core.router.truth.replicas[fleet.ids[i]] ?? CacheTruth.Replica(),
                    indexBlocks: s.core.router.index.count(replicaID: fleet.ids[i])
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

    /// The queue now, for metrics and `/admin/replicas`: depth, bytes held, and the counters
    /// since the last call (`drain`: the waits are handed over once).
    public func queueReport(drain: Bool) -> QueueCounters.Report {
        self.inner.withLockedValue { s in
            let report = QueueCounters.Report(
                depth: s.core.queue.count, bytes: s.core.queue.bytes, queued: s.queueCounters.queued, refused: s.queueCounters.refused,
                waits: s.queueCounters.waits)
            if drain { s.queueCounters.waits.removeAll(keepingCapacity: true) }
            return report
        }
    }

    /// Hot-prefix state for metrics: widenings so far and prefixes widened now.
    public func spillSummary() -> (widenings: Int, widened: Int) {
        self.inner.withLockedValue { s in
            (s.core.router.spill.widenings, s.core.router.spill.widenedKeys(base: s.config.routing.placement.groupSize))
        }
    }
}

/// What the queue did: requests queued and refused (totals), and the waits since they were last read.
public struct QueueCounters: Sendable {
    public var queued = 0
    public var refused: [QueueRejection: Int] = [:]
    /// Seconds each request spent in the queue, until read (bounded: the oldest go past 65536).
    public var waits: [Double] = [] {
        didSet { if self.waits.count > 65536 { self.waits.removeFirst(self.waits.count - 65536) } }
    }

    public struct Report: Sendable {
        public var depth: Int
        public var bytes: Int
        public var queued: Int
        public var refused: [QueueRejection: Int]
        public var waits: [Double]
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
    /// What the router learned of its speed, as learned (nil until it served something) ...
    public var learned: ServiceEstimate?
    /// ... and as placement uses it (the seeds until learned; close speeds count as the mean).
    public var speed: ServiceEstimate
    /// Predicted against reported cached tokens, recent mispredictions, cache resets.
    public var truth = CacheTruth.Replica()
    /// Prefix-index entries (blocks and sessions) held for it.
    public var indexBlocks = 0
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
