import FleetState
import PrometheusText
import ResponseCache
import NIOConcurrencyHelpers
import Prometheus
import RoutingCore

/// Every metric cacheroute exports: name, type, help and labels in one place. The README's
/// metrics table is this list. Labels are bounded: routes and tiers are fixed sets, replicas come
/// from the configuration (their series go when they leave), statuses are HTTP codes.
public enum MetricName {
    public static let requests = "cacheroute_requests_total"
    public static let tenantRequests = "cacheroute_tenant_requests_total"
    public static let decisions = "cacheroute_routing_decisions_total"
    public static let retries = "cacheroute_retries_total"
    public static let upstreamErrors = "cacheroute_upstream_errors_total"
    public static let inFlight = "cacheroute_replica_in_flight"
    public static let ttft = "cacheroute_time_to_first_token_seconds"
    public static let duration = "cacheroute_request_duration_seconds"
    public static let replicaUp = "cacheroute_replica_up"
    public static let hitRatio = "cacheroute_replica_prefix_cache_hit_ratio"
    public static let queueDepth = "cacheroute_replica_queue_depth"
    public static let running = "cacheroute_replica_running_requests"
    public static let kvUsage = "cacheroute_replica_kv_cache_usage_ratio"
    public static let probeFailures = "cacheroute_replica_probe_failures_total"
    public static let ejections = "cacheroute_replica_ejections_total"
    public static let observedPromptTokens = "cacheroute_replica_prompt_tokens_total"
    public static let observedCachedTokens = "cacheroute_replica_cached_tokens_total"
    public static let hotPrefixes = "cacheroute_hot_prefixes"
    public static let widenings = "cacheroute_hot_prefix_widenings_total"
    public static let reloads = "cacheroute_config_reloads_total"
    public static let replicas = "cacheroute_replicas"
    public static let routerQueueDepth = "cacheroute_queue_depth"
    public static let queueBytes = "cacheroute_queue_bytes"
    public static let queueWait = "cacheroute_queue_wait_seconds"
    public static let queueRejections = "cacheroute_queue_rejections_total"
    public static let prefillSpeed = "cacheroute_replica_prefill_tokens_per_second"
    public static let decodeSpeed = "cacheroute_replica_decode_seconds_per_token"
    public static let concurrencyLimit = "cacheroute_replica_concurrency_limit"
    public static let predictedCachedTokens = "cacheroute_replica_predicted_cached_tokens_total"
    public static let reportedCachedTokens = "cacheroute_replica_reported_cached_tokens_total"
    public static let cacheResets = "cacheroute_replica_cache_resets_total"
    public static let tenantPromptTokens = "cacheroute_tenant_prompt_tokens_total"
    public static let tenantCachedTokens = "cacheroute_tenant_cached_tokens_total"
    public static let templateCachedShare = "cacheroute_template_cached_token_share"
    public static let prefixVolatileShare = "cacheroute_prefix_volatile_request_share"
    public static let prefixBytesLost = "cacheroute_prefix_shareable_bytes_lost"
    public static let cacheRequests = "cacheroute_cache_requests_total"
    public static let cacheStores = "cacheroute_cache_stores_total"
    public static let cacheRefused = "cacheroute_cache_not_stored_total"
    public static let cacheEvictions = "cacheroute_cache_evictions_total"
    public static let cacheBytes = "cacheroute_cache_bytes"
    public static let cacheEntries = "cacheroute_cache_entries"
    public static let cacheRedisErrors = "cacheroute_cache_redis_errors_total"
    public static let cacheCorrupt = "cacheroute_cache_corrupt_entries_total"
    public static let cacheEmbeddingErrors = "cacheroute_cache_embedding_errors_total"
    public static let cacheEmbeddingSeconds = "cacheroute_cache_embedding_seconds"
    public static let cacheVectors = "cacheroute_cache_semantic_vectors"

    /// Help text per name (the `# HELP` lines).
    public static let help: [String: String] = [
        requests: "Requests answered, by route (chat, completions, generate, responses, messages, models, other, local), replica (none when the router answered) and HTTP status.",
        tenantRequests: "Requests answered, by tenant (the API key's, else the tenant header's; tenants the keys file or tenants.limits name appear by name, the rest as other; none without a tenant, or when no keys, limits, salts or named tenants are configured) and HTTP status (401: refused key, 429: over the tenant's limit).",
        decisions: "Routing decisions by tier: session (the conversation's replica), group (its instruction group), spill (moved for load or a hot prefix), fallback (no keys or no candidate), pinned, stored (the replica holding a stored response).",
        retries: "Attempts retried on another replica before the first byte, by the replica that failed and why (connect, status_5xx).",
        upstreamErrors: "Failed attempts on a replica, by kind: connect, timeout, status_5xx, broken_stream.",
        inFlight: "Requests in flight to a replica through this router.",
        ttft: "Time from receiving a request to the first body byte from its replica, by replica.",
        duration: "Time from receiving a request to the end of its answer, by replica.",
        replicaUp: "1 when the replica is in rotation (healthy and not ejected), else 0.",
        hitRatio: "The replica's prefix-cache hit ratio between its last two /metrics scrapes (hits over queries, 0-1; SGLang: its recent cache_hit_rate).",
        queueDepth: "Requests waiting on the replica, from its /metrics.",
        running: "Requests running on the replica, from its /metrics.",
        kvUsage: "KV-cache usage of the replica, from its /metrics (0-1).",
        probeFailures: "Failed health probes, by replica.",
        ejections: "Times passive outlier detection took a replica out of rotation.",
        observedPromptTokens: "Prompt tokens the replica reported in answers (usage prompt_tokens; Responses input_tokens; Messages input_tokens plus cache_read_input_tokens and cache_creation_input_tokens), as seen by this router.",
        observedCachedTokens: "Of those, tokens the replica served from its prefix cache (usage prompt_tokens_details.cached_tokens; Responses input_tokens_details.cached_tokens; Messages cache_read_input_tokens).",
        hotPrefixes: "Instruction prefixes whose group is currently widened because of their request rate.",
        widenings: "Times a hot prefix's group was widened onto another replica.",
        reloads: "Configuration reloads by result (success, failure).",
        replicas: "Replicas in the fleet, by state (routable, unroutable).",
        routerQueueDepth: "Requests waiting in the router's queue for a replica with room.",
        queueBytes: "Request body bytes held by the router's queue.",
        queueWait: "Time requests spent in the router's queue (those that waited), until a replica took them or the queue refused them.",
        queueRejections: "Requests the router's queue refused, by reason: queue_full (at once), queue_timeout (after queue.timeout); both answered 503 with Retry-After.",
        prefillSpeed: "The replica's prefill speed as the router learned it from its answers (uncached prompt tokens per second; the seed until it served).",
        decodeSpeed: "The replica's decode speed as the router learned it (seconds per output token).",
        predictedCachedTokens: "Prompt tokens the router predicted the replica held in its prefix cache (its prefix index), over answers whose usage reports cached tokens, scaled to the replica's token count.",
        reportedCachedTokens: "Cached prompt tokens the replica reported for the same answers. Predicted far above reported: the router's index is stale for the replica.",
        cacheResets: "Times the router forgot what it thought a replica's prefix cache held, by reason: restart (process_start_time_seconds changed), counters_reset (its prefix-cache counters went backwards), health_flap (back up after down), mispredictions (predicted hits came back uncached, three in a row).",
        tenantPromptTokens: "Prompt tokens the replicas reported for a tenant's answers (tenant labels as in cacheroute_tenant_requests_total: bounded by configuration).",
        tenantCachedTokens: "Of those, tokens served from the replicas' prefix caches: the tenant's hit rate is their ratio.",
        templateCachedShare: "Cached share of prompt tokens of the analysed requests of an instruction template (the 10 templates with the most requests; /admin/prefixes has them all). A low one is a broken template.",
        prefixVolatileShare: "Share of the analysed requests (insight.sample_every) in instruction templates whose prefix breaks early: a volatile span (timestamp, id, name) or reordered tools. /admin/prefixes names them.",
        prefixBytesLost: "Instruction bytes per analysed request that a fixed layout (volatile parts after the static ones, a fixed tool order) would make shareable.",
        cacheRequests: "Requests by what the response cache did: hit_exact, hit_semantic (answered from the cache, no replica called), miss (looked up, went to the fleet), bypass (opted in but not cacheable: sampled, no-store with no-cache, a stored Responses request, a bad x-cacheroute-cache value).",
        cacheStores: "Answers stored in the response cache.",
        cacheRefused: "Answers not stored, by reason: unfinished (no finish_reason, a cut stream), error (an error body or event), too_large (over cache.max_entry_bytes), not_json, no_id.",
        cacheEvictions: "Entries the memory store dropped to stay within cache.max_bytes.",
        cacheBytes: "Bytes the memory store holds (entries, keys and bookkeeping), bounded by cache.max_bytes.",
        cacheEntries: "Entries in the memory store.",
        cacheRedisErrors: "Redis commands that failed or timed out (the request went to the fleet).",
        cacheCorrupt: "Stored entries that did not decode (deleted, taken as misses).",
        cacheEmbeddingErrors: "Embedding calls that failed, timed out or were over cache.semantic.max_concurrent (the request skipped the semantic step).",
        cacheEmbeddingSeconds: "Latency of the semantic cache's embedding calls.",
        cacheVectors: "Vectors in this router's semantic index.",
        concurrencyLimit: "Requests the replica runs at once before it queues or fills its KV cache past routing.load.target_kv_usage, as learned from its probes (NaN until seen).",
    ]
}

/// The router's metrics (one set per router, so tests can run several). The families every
/// request updates are counted per thread (`RequestTallies`); the rest live on a swift-prometheus
/// registry: replica gauges refreshed from the shared state when the fleet changes and before
/// each scrape, and the counters of rarer events (retries, errors, reloads).
public final class RouterMetrics: ProxyObserver, Sendable {
    public let registry: PrometheusCollectorRegistry
    let state: RouterState

    final class ReplicaHandles: Sendable {
        let inFlight: Gauge
        let up: Gauge
        let hitRatio: Gauge
        let queue: Gauge
        let running: Gauge
        let kv: Gauge
        let probeFailures: Counter
        let ejections: Counter
        let prefillSpeed: Gauge
        let decodeSpeed: Gauge
        let concurrencyLimit: Gauge
        let predicted: Counter
        let reported: Counter
        let resets: [CacheResetReason: Counter]

        var gauges: [Gauge] { [self.inFlight, self.up, self.hitRatio, self.queue, self.running, self.kv, self.prefillSpeed, self.decodeSpeed, self.concurrencyLimit] }

        init(registry r: PrometheusCollectorRegistry, name: String) {
            let l = [("replica", name)]
            self.inFlight = r.makeGauge(descriptor: RouterMetrics.descriptor(MetricName.inFlight), labels: l)
            self.up = r.makeGauge(descriptor: RouterMetrics.descriptor(MetricName.replicaUp), labels: l)
            self.hitRatio = r.makeGauge(descriptor: RouterMetrics.descriptor(MetricName.hitRatio), labels: l)
            self.queue = r.makeGauge(descriptor: RouterMetrics.descriptor(MetricName.queueDepth), labels: l)
            self.running = r.makeGauge(descriptor: RouterMetrics.descriptor(MetricName.running), labels: l)
            self.kv = r.makeGauge(descriptor: RouterMetrics.descriptor(MetricName.kvUsage), labels: l)
            self.probeFailures = r.makeCounter(descriptor: RouterMetrics.descriptor(MetricName.probeFailures), labels: l)
            self.ejections = r.makeCounter(descriptor: RouterMetrics.descriptor(MetricName.ejections), labels: l)
            self.prefillSpeed = r.makeGauge(descriptor: RouterMetrics.descriptor(MetricName.prefillSpeed), labels: l)
            self.decodeSpeed = r.makeGauge(descriptor: RouterMetrics.descriptor(MetricName.decodeSpeed), labels: l)
            self.concurrencyLimit = r.makeGauge(descriptor: RouterMetrics.descriptor(MetricName.concurrencyLimit), labels: l)
            self.predicted = r.makeCounter(descriptor: RouterMetrics.descriptor(MetricName.predictedCachedTokens), labels: l)
            self.reported = r.makeCounter(descriptor: RouterMetrics.descriptor(MetricName.reportedCachedTokens), labels: l)
            var resets: [CacheResetReason: Counter] = [:]
            for reason in CacheResetReason.allCases {
                resets[reason] = r.makeCounter(descriptor: RouterMetrics.descriptor(MetricName.cacheResets), labels: l + [("reason", reason.rawValue)])
            }
            self.resets = resets
        }
    }

    struct Handles: Sendable {
        var replicas: [String: ReplicaHandles] = [:]
        var retries: [LabelPair: Counter] = [:]
        var errors: [LabelPair: Counter] = [:]
        /// Last values seen in the state, to turn totals into counter increments.
        var lastProbeFailures: [String: Int] = [:]
        var lastEjections: [String: Int] = [:]
        var lastTruth: [String: CacheTruth.Replica] = [:]
        var lastWidenings = 0
        var lastRefused: [QueueRejection: Int] = [:]
    }

    struct LabelPair: Hashable, Sendable {
        var replica: String
        var value: String
    }

    let handles = NIOLockedValueBox(Handles())
    let tallies = RequestTallies(ttftBounds: RouterMetrics.ttftBuckets, durationBounds: RouterMetrics.durationBuckets)
    let reloadSuccess: Counter
    let reloadFailure: Counter
    let widenings: Counter
    let hotPrefixes: Gauge
    let routable: Gauge
    let unroutable: Gauge
    let routerQueueDepth: Gauge
    let queueBytes: Gauge
    let queueWait: ValueHistogram
    let queueRejections: [QueueRejection: Counter]

    /// Bounds of the queue-wait histogram, in seconds.
    static let queueWaitBuckets: [Double] = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]

    /// Histogram bucket bounds in seconds.
    static let ttftBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
    static let durationBuckets: [Double] = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600]

    /// The response cache's counters (nil: the cache is off).
    let cacheStats: (@Sendable () -> CacheStats)?

    public init(state: RouterState, registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(), cacheStats: (@Sendable () -> CacheStats)? = nil) {
        self.cacheStats = cacheStats
        self.state = state
        self.registry = registry
        self.reloadSuccess = registry.makeCounter(descriptor: Self.descriptor(MetricName.reloads), labels: [("result", "success")])
        self.reloadFailure = registry.makeCounter(descriptor: Self.descriptor(MetricName.reloads), labels: [("result", "failure")])
        self.widenings = registry.makeCounter(descriptor: Self.descriptor(MetricName.widenings))
        self.hotPrefixes = registry.makeGauge(descriptor: Self.descriptor(MetricName.hotPrefixes))
        self.routable = registry.makeGauge(descriptor: Self.descriptor(MetricName.replicas), labels: [("state", "routable")])
        self.unroutable = registry.makeGauge(descriptor: Self.descriptor(MetricName.replicas), labels: [("state", "unroutable")])
        self.routerQueueDepth = registry.makeGauge(descriptor: Self.descriptor(MetricName.routerQueueDepth))
        self.queueBytes = registry.makeGauge(descriptor: Self.descriptor(MetricName.queueBytes))
        self.queueWait = registry.makeValueHistogram(descriptor: Self.descriptor(MetricName.queueWait), buckets: Self.queueWaitBuckets)
        var rejections: [QueueRejection: Counter] = [:]
        for reason in QueueRejection.allCases {
            rejections[reason] = registry.makeCounter(descriptor: Self.descriptor(MetricName.queueRejections), labels: [("reason", reason.rawValue)])
        }
        self.queueRejections = rejections
        state.observe { [weak self] fleet in self?.fleetChanged(fleet) }
    }

    static func help(_ name: String) -> String { MetricName.help[name] ?? "" }

    /// The registry's description of a family: its full name and help text.
    static func descriptor(_ name: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: Self.help(name))
    }

    // MARK: - Per request

    public func requestFinished(_ s: RequestSummary) {
        self.tallies.record(s)
    }

    public func retried(replica: String, outcome: AttemptOutcome) {
        self.labelled(\.retries, MetricName.retries, replica: replica, label: "reason", value: outcome.kind).increment()
    }

    public func attemptFailed(replica: String, outcome: AttemptOutcome) {
        self.labelled(\.errors, MetricName.upstreamErrors, replica: replica, label: "kind", value: outcome.kind).increment()
    }

    func labelled(_ path: WritableKeyPath<Handles, [LabelPair: Counter]>, _ name: String, replica: String, label: String, value: String) -> Counter {
        let key = LabelPair(replica: replica, value: value)
        return self.handles.withLockedValue { h in
            if let c = h[keyPath: path][key] { return c }
            let c = self.registry.makeCounter(descriptor: Self.descriptor(name), labels: [("replica", replica), (label, value)])
            h[keyPath: path][key] = c
            return c
        }
    }

    public func reloaded(success: Bool) {
        (success ? self.reloadSuccess : self.reloadFailure).increment()
    }

    // MARK: - Replicas

    /// Creates series for new replicas and removes those of replicas that left.
    func fleetChanged(_ fleet: FleetSnapshot) {
        let names = Set(fleet.replicas.map(\.name))
        let r = self.registry
        self.handles.withLockedValue { h in
            for name in fleet.replicas.map(\.name) where h.replicas[name] == nil {
                h.replicas[name] = ReplicaHandles(registry: r, name: name)
            }
            for (name, handles) in h.replicas where !names.contains(name) {
                for g in handles.gauges { r.unregisterGauge(g) }
                for c in [handles.probeFailures, handles.ejections, handles.predicted, handles.reported] + Array(handles.resets.values) { r.unregisterCounter(c) }
                h.replicas[name] = nil
                h.lastProbeFailures[name] = nil
                h.lastEjections[name] = nil
                h.lastTruth[name] = nil
                for path in [\Handles.retries, \Handles.errors] {
                    for (key, counter) in h[keyPath: path] where key.replica == name {
                        r.unregisterCounter(counter)
                        h[keyPath: path][key] = nil
                    }
                }
            }
        }
        self.tallies.keep(replicas: names)
        self.refresh()
    }

    /// Copies replica state (health, probed signals) into the gauges; runs before each scrape.
    public func refresh() {
        let report = self.state.replicaReport()
        let spill = self.state.spillSummary()
        let queue = self.state.queueReport(drain: true)
        for wait in queue.waits { self.queueWait.record(wait) }
        self.handles.withLockedValue { h in
            var routable = 0
            for r in report {
                if r.routable { routable += 1 }
                guard let g = h.replicas[r.spec.name] else { continue }
                g.up.set(to: r.routable ? 1.0 : 0.0)
                g.inFlight.set(to: Double(r.load.inFlight))
                let probe = r.probe
                g.hitRatio.set(to: probe.hitRatio ?? .nan)
                g.queue.set(to: probe.waiting.map(Double.init) ?? .nan)
                g.running.set(to: probe.running.map(Double.init) ?? .nan)
                g.kv.set(to: probe.kvUsage ?? .nan)
                g.prefillSpeed.set(to: r.speed.prefillTokensPerSecond)
                g.decodeSpeed.set(to: r.speed.decodeSecondsPerToken)
                g.concurrencyLimit.set(to: r.learned?.concurrencyLimit ?? .nan)
                let failures = probe.probeFailures
                g.probeFailures.increment(by: Int64(max(0, failures - (h.lastProbeFailures[r.spec.name] ?? 0))))
                h.lastProbeFailures[r.spec.name] = failures
                let ejections = r.health.ejectionsTotal
                g.ejections.increment(by: Int64(max(0, ejections - (h.lastEjections[r.spec.name] ?? 0))))
                h.lastEjections[r.spec.name] = ejections
                let last = h.lastTruth[r.spec.name] ?? CacheTruth.Replica()
                g.predicted.increment(by: Int64(max(0, r.truth.predictedTokens - last.predictedTokens)))
                g.reported.increment(by: Int64(max(0, r.truth.reportedTokens - last.reportedTokens)))
                for (reason, counter) in g.resets { counter.increment(by: Int64(max(0, (r.truth.resets[reason] ?? 0) - (last.resets[reason] ?? 0)))) }
                h.lastTruth[r.spec.name] = r.truth
            }
            self.routable.set(to: Double(routable))
            self.unroutable.set(to: Double(report.count - routable))
            self.widenings.increment(by: Int64(max(0, spill.widenings - h.lastWidenings)))
            h.lastWidenings = spill.widenings
            self.hotPrefixes.set(to: Double(spill.widened))
            self.routerQueueDepth.set(to: Double(queue.depth))
            self.queueBytes.set(to: Double(queue.bytes))
            for (reason, counter) in self.queueRejections {
                let total = queue.refused[reason] ?? 0
                counter.increment(by: Int64(max(0, total - (h.lastRefused[reason] ?? 0))))
                h.lastRefused[reason] = total
            }
        }
    }

    /// The exposition text.
    public func render() -> [UInt8] {
        self.refresh()
        var out: [UInt8] = []
        out.reserveCapacity(16 << 10)
        self.registry.emit(into: &out)
        let replicas = self.handles.withLockedValue { Array($0.replicas.keys) }
        self.tallies.emit(into: &out, replicas: replicas, help: Self.help)
        if let stats = self.cacheStats?() { out += Array(Self.cacheText(stats).utf8) }
        if self.state.proxySettings.insightEvery > 0 {
            let p = self.state.prefixReport()
            var w = PrometheusWriter()
            w.gauge(MetricName.prefixVolatileShare, help: Self.help(MetricName.prefixVolatileShare), [([], p.volatileShare)])
            w.gauge(MetricName.prefixBytesLost, help: Self.help(MetricName.prefixBytesLost), [([], p.shareableBytesLost)])
            let shares = p.templates.prefix(10).compactMap { t in t.cachedShare.map { ([("template", String(t.id.prefix(12)))], $0) } }
            if !shares.isEmpty { w.gauge(MetricName.templateCachedShare, help: Self.help(MetricName.templateCachedShare), shares) }
            out += Array(w.text.utf8)
        }
        return out
    }
}

extension RouterMetrics {
    /// The response cache's families (counters without `_created`, as the rest of the router's).
    static func cacheText(_ s: CacheStats) -> String {
        var w = PrometheusWriter()
        func counter(_ name: String, _ samples: [([(String, String)], Double)]) {
            w.family(name, type: "counter", help: Self.help(name))
            for (labels, value) in samples { w.sample(name, labels, value) }
        }
        counter(MetricName.cacheRequests, ["hit_exact", "hit_semantic", "miss", "bypass"].map { r in
            ([("result", r)], Double(s.results[r.replacingUnderscores()] ?? 0))
        })
        counter(MetricName.cacheStores, [([], Double(s.stores))])
        counter(MetricName.cacheRefused, ["unfinished", "error", "too_large", "not_json", "no_id"].map { ([("reason", $0)], Double(s.refused[$0] ?? 0)) })
        counter(MetricName.cacheEvictions, [([], Double(s.evictions))])
        w.gauge(MetricName.cacheBytes, help: Self.help(MetricName.cacheBytes), [([], Double(s.bytes))])
        w.gauge(MetricName.cacheEntries, help: Self.help(MetricName.cacheEntries), [([], Double(s.entries))])
        counter(MetricName.cacheRedisErrors, [([], Double(s.redisErrors))])
        counter(MetricName.cacheCorrupt, [([], Double(s.corrupt))])
        counter(MetricName.cacheEmbeddingErrors, [([], Double(s.embeddingErrors))])
        w.gauge(MetricName.cacheVectors, help: Self.help(MetricName.cacheVectors), [([], Double(s.vectors))])
        w.family(MetricName.cacheEmbeddingSeconds, type: "histogram", help: Self.help(MetricName.cacheEmbeddingSeconds))
        w.histogramSamples(MetricName.cacheEmbeddingSeconds, labels: [], bounds: CacheStats.embeddingBounds, counts: Self.perBucket(s), sum: s.embeddingSum)
        return w.text
    }

    /// `CacheStats` keeps cumulative bucket counts; the writer takes per-bucket ones.
    static func perBucket(_ s: CacheStats) -> [Int] {
        var out: [Int] = []
        var below = 0
        for c in s.embeddingBuckets {
            out.append(c - below)
            below = c
        }
        out.append(s.embeddingCount - below)
        return out
    }
}

extension String {
    /// `hit_exact` → `hit-exact` (the header's spelling).
    func replacingUnderscores() -> String { String(self.map { $0 == "_" ? "-" : $0 }) }
}
