import Atomics
import FastJSON
import HTTPTransport
import Logging
import NIOConcurrencyHelpers
import NIOHTTP1
import NIOPosix
import PrometheusText
import RouterConfig
import RoutingCore
import ServiceLifecycle

/// Active probes: every replica on `health.interval`, `GET /health` (with consecutive
/// failure/success thresholds in the core's health state machine) and `GET /metrics` (queue
/// depth, KV usage, prefix-cache counters, KV capacity), plus `GET /v1/models` for replicas that
/// list no models. One task per replica: a slow replica never delays another's probe, and
/// nothing here holds the routing lock longer than a state update.
public final class ProbeService: Service, Sendable {
    let state: RouterState
    let client: HTTPClient
    let logger: Logger
    let readyFlag = ManagedAtomic(false)
    /// Replicas probed at least once since start (readiness waits for all of the first fleet).
    let probedOnce = NIOLockedValueBox(Set<String>())

    public init(state: RouterState, logger: Logger, client: HTTPClient = HTTPClient(group: MultiThreadedEventLoopGroup.singleton)) {
        self.state = state
        self.logger = logger
        self.client = client
    }

    /// True once every replica has been probed once (`/readyz`).
    public var isReady: Bool { self.readyFlag.load(ordering: .relaxed) }

    public func run() async throws {
        // One loop per replica, started and stopped as the fleet changes.
        var tasks: [String: (url: ReplicaURL, task: Task<Void, Never>)] = [:]
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            let report = self.state.replicaReport()
            let wanted = Dictionary(report.map { ($0.spec.name, $0) }, uniquingKeysWith: { a, _ in a })
            for (name, entry) in tasks where wanted[name]?.url != entry.url {
                entry.task.cancel()
                tasks[name] = nil
            }
            for (name, r) in wanted where tasks[name] == nil {
                let engine = r.spec.engine
                let url = r.url
                let listsModels = !r.spec.models.isEmpty
                tasks[name] = (url, Task { await self.probeLoop(name: name, url: url, engine: engine, listsModels: listsModels) })
            }
            if report.isEmpty { self.readyFlag.store(true, ordering: .relaxed) }
            try? await Task.sleep(for: .milliseconds(250))
        }
        for (_, entry) in tasks { entry.task.cancel() }
    }

    func probeLoop(name: String, url: ReplicaURL, engine: Engine, listsModels: Bool) async {
        var hits = HitRatioTracker()
        var round = 0
        // Spread the first probes a little so a big fleet is not probed in one burst.
        try? await Task.sleep(for: .milliseconds(Int.random(in: 0...50)))
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            let settings = self.state.config.health
            await self.probeOnce(name: name, url: url, engine: engine, settings: settings, hits: &hits, models: !listsModels && round % 15 == 0)
            round += 1
            self.markProbed(name)
            try? await Task.sleep(for: .milliseconds(Int(settings.interval * 1000)))
        }
    }

    func markProbed(_ name: String) {
        guard !self.readyFlag.load(ordering: .relaxed) else { return }
        let all = Set(self.state.fleet.replicas.map(\.name))
        let done = self.probedOnce.withLockedValue { probed -> Bool in
            probed.insert(name)
            return all.isSubset(of: probed)
        }
        if done {
            self.readyFlag.store(true, ordering: .relaxed)
            self.logger.info("first probe round done", metadata: ["replicas": "\(all.count)", "routable": "\(self.state.fleet.routableCount)"])
        }
    }

    /// One round for one replica: health, then (when healthy) metrics and models.
    func probeOnce(name: String, url: ReplicaURL, engine: Engine, settings: ProbeSettings, hits: inout HitRatioTracker, models: Bool) async {
        let now = self.state.now()
        let health = await self.fetch(url, "/health", timeout: settings.timeout)
        let healthy: Bool
        let error: String?
        switch health {
        case .success(let r) where r.status.code == 200:
            healthy = true
            error = nil
        case .success(let r):
            healthy = false
            error = "/health answered \(r.status.code)"
        case .failure(let e):
            healthy = false
            error = "/health: \(e)"
        }
        if let changed = self.state.probe(name, success: healthy, error: error) {
            let level: Logger.Level = changed == .down ? .warning : .notice
            self.logger.log(level: level, "replica \(changed.rawValue)", metadata: ["replica": "\(name)", "error": "\(error ?? "")"])
        }
        guard healthy else {
            self.state.recordProbe(name) { p in
                p.probeFailures += 1
                p.lastError = error
                p.lastErrorAt = now
            }
            return
        }
        var signals: ReplicaSignals?
        var scrapeError: String?
        if settings.scrapeMetrics {
            switch await self.fetch(url, "/metrics", timeout: settings.metricsTimeout) {
            case .success(let r) where r.status.code == 200:
                signals = ReplicaSignals(PrometheusParser.parse(r.bodyText), engine: engine)
            case .success(let r):
                scrapeError = "/metrics answered \(r.status.code)"
            case .failure(let e):
                scrapeError = "/metrics: \(e)"
            }
        }
        var modelList: [String]?
        if models, case .success(let r) = await self.fetch(url, "/v1/models", timeout: settings.metricsTimeout), r.status.code == 200,
            let data = (try? JSONValue.parse(r.bodyBytes))?["data"]?.arrayValue
        {
            modelList = data.compactMap { $0["id"]?.stringValue }
        }
        let ratio = signals.flatMap { s in s.cacheHitRate ?? s.cacheCounters.flatMap { hits.update(queries: $0.queries, hits: $0.hits) } }
        self.state.recordProbe(name) { p in
            p.lastSuccessAt = now
            if let scrapeError {
                p.lastError = scrapeError
                p.lastErrorAt = now
            }
            if let s = signals {
                p.waiting = s.waiting
                p.running = s.running
                p.kvUsage = s.kvUsage
                p.cacheTokens = s.cacheTokens ?? p.cacheTokens
                p.cacheQueries = s.cacheCounters?.queries
                p.cacheHits = s.cacheCounters?.hits
                if let ratio { p.hitRatio = ratio }
            }
            if let modelList { p.models = modelList }
        }
        if let s = signals {
            self.state.observeLoad(name, waiting: s.waiting, running: s.running, kvUsage: s.kvUsage, cacheTokens: s.cacheTokens)
        }
        if let modelList, !modelList.isEmpty { self.state.observeModels(name, models: modelList) }
    }

    func fetch(_ url: ReplicaURL, _ path: String, timeout: Double) async -> Result<HTTPClientResponse, HTTPClientError> {
        do {
            let request = HTTPClientRequest(host: url.host, port: url.port, path: url.pathPrefix + path)
            return .success(try await self.client.execute(request, timeout: timeout, maxBody: 8 << 20))
        } catch let error as HTTPClientError {
            return .failure(error)
        } catch {
            return .failure(HTTPClientError.connect("\(error)"))
        }
    }
}

/// What a replica's `/metrics` says about its load and cache, for vLLM (current and deprecated
/// names) and SGLang (`sglang:` and `sglang_` prefixes).
public struct ReplicaSignals: Sendable, Equatable {
    public var waiting: Int?
    public var running: Int?
    /// KV-cache usage, 0-1 (the fullest engine when several report).
    public var kvUsage: Double?
    /// Cumulative prefix-cache lookups and hits in tokens (vLLM).
    public var cacheCounters: (queries: Double, hits: Double)?
    /// A recent hit rate the engine computes itself (SGLang's `cache_hit_rate`).
    public var cacheHitRate: Double?
    /// KV capacity in tokens (vLLM `cache_config_info`: num_gpu_blocks x block_size).
    public var cacheTokens: Int?

    public static func == (a: ReplicaSignals, b: ReplicaSignals) -> Bool {
        a.waiting == b.waiting && a.running == b.running && a.kvUsage == b.kvUsage && a.cacheCounters?.queries == b.cacheCounters?.queries
            && a.cacheCounters?.hits == b.cacheCounters?.hits && a.cacheHitRate == b.cacheHitRate && a.cacheTokens == b.cacheTokens
    }

    public init(_ m: PrometheusExposition, engine: Engine) {
        func finite(_ v: Double?) -> Double? { v.flatMap { $0.isFinite ? $0 : nil } }
        func count(_ names: [String]) -> Int? { finite(m.sum(anyOf: names)).map { Int($0.rounded()) } }
        func maxValue(_ names: [String]) -> Double? {
            for name in names {
                let values = m.samples(named: name).map(\.value).filter(\.isFinite)
                if let v = values.max() { return v }
            }
            return nil
        }
        // Accept whichever engine's names are present: a misconfigured `engine` still probes.
        let sglang = ["sglang:", "sglang_"]
        let isSGLang = engine == .sglang || (m.samples(named: "vllm:num_requests_waiting").isEmpty && sglang.contains { !m.samples(named: "\($0)num_queue_reqs").isEmpty })
        if isSGLang {
            self.waiting = count(sglang.map { "\($0)num_queue_reqs" })
            self.running = count(sglang.map { "\($0)num_running_reqs" })
            self.kvUsage = maxValue(sglang.map { "\($0)token_usage" })
            self.cacheHitRate = maxValue(sglang.map { "\($0)cache_hit_rate" }).map { min(1, max(0, $0)) }
            return
        }
        self.waiting = count(["vllm:num_requests_waiting"])
        self.running = count(["vllm:num_requests_running"])
        self.kvUsage = maxValue(["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"])
        let queries = finite(m.sum(anyOf: ["vllm:prefix_cache_queries_total", "vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries"]))
        let hits = finite(
            m.sum(anyOf: [
                "vllm:prefix_cache_hits_total", "vllm:prefix_cache_hits", "vllm:prompt_tokens_cached_total",
                "vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits",
            ])
        )
        if let queries, let hits { self.cacheCounters = (queries, hits) }
        var capacity = 0
        for s in m.samples(named: "vllm:cache_config_info") {
            if let tokens = s.label("kv_cache_size_tokens").flatMap(Int.init) {
                capacity += tokens
            } else if let blocks = s.label("num_gpu_blocks").flatMap(Int.init), let size = s.label("block_size").flatMap(Int.init) {
                capacity += blocks * size
            }
        }
        if capacity > 0 { self.cacheTokens = capacity }
    }
}

/// Hit utilization from successive scrapes of cumulative counters: delta hits over delta
/// queries. A counter that went down was reset (the replica restarted): its current value is
/// the delta since. No new queries: no new ratio (the caller keeps the last one).
public struct HitRatioTracker: Sendable {
    private var last: (queries: Double, hits: Double)?

    public init() {}

    public mutating func update(queries: Double, hits: Double) -> Double? {
        defer { self.last = (queries, hits) }
        guard let last else { return nil }
        var dq = queries - last.queries
        var dh = hits - last.hits
        if dq < 0 || dh < 0 {
            dq = queries
            dh = hits
        }
        guard dq > 0 else { return nil }
        return min(1, max(0, dh / dq))
    }
}
