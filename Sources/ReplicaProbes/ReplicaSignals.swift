import PrometheusText
import RoutingCore

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
    /// `process_start_time_seconds` (Python's process collector: vLLM and SGLang export it).
    public var processStart: Double?

    public static func == (a: ReplicaSignals, b: ReplicaSignals) -> Bool {
        a.waiting == b.waiting && a.running == b.running && a.kvUsage == b.kvUsage && a.cacheCounters?.queries == b.cacheCounters?.queries
            && a.cacheCounters?.hits == b.cacheCounters?.hits && a.cacheHitRate == b.cacheHitRate && a.cacheTokens == b.cacheTokens
            && a.processStart == b.processStart
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
        self.processStart = finite(m.samples(named: "process_start_time_seconds").first?.value)
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
