import NIOConcurrencyHelpers
import PrometheusText
import ReplicaModel
import RoutingCore

extension EmulatedReplica {
    /// The `/metrics` text: vLLM V1's families, types and labels (as vLLM 0.32 exposes them), or
    /// SGLang's in SGLang mode. Values the model has (queue, running, KV usage, prefix-cache
    /// queries and hits, tokens, latencies) are real; the rest keep vLLM's families at zero.
    public func metricsText() -> String {
        let (stats, queried, hits, waiting, running, usage) = self.core.withLockedValue { c in
            (c.stats, c.engine.cache.queriedTokens, c.engine.cache.hitTokens, c.engine.waitingCount, c.engine.runningCount, c.engine.cache.usage)
        }
        var w = PrometheusWriter()
        // Python's process collector, as vLLM and SGLang export it: a restart shows as a new value.
        w.gauge("process_start_time_seconds", help: "Start time of the process since unix epoch in seconds.", [([], self.createdUnix)])
        switch self.settings.engine {
        case .vllm: self.vllm(&w, stats, queried, hits, waiting, running, usage)
        case .sglang: self.sglang(&w, stats, queried, hits, waiting, running, usage)
        }
        return w.text
    }

    private func vllm(_ w: inout PrometheusWriter, _ s: ReplicaCounters, _ queried: Int, _ hits: Int, _ waiting: Int, _ running: Int, _ usage: Double) {
        let base: [(String, String)] = [("engine", "0"), ("model_name", self.settings.model)]
        let created = self.createdUnix
        func with(_ extra: (String, String)) -> [(String, String)] {
            var l = base
            let at = l.firstIndex { $0.0 > extra.0 } ?? l.count
            l.insert(extra, at: at)
            return l
        }
        for name in ["estimated_flops_per_gpu", "estimated_read_bytes_per_gpu", "estimated_write_bytes_per_gpu"] {
            w.counter("vllm:" + name, help: "Estimated number of \(name.replacingUnderscoresWithSpaces()) (for Model Flops Utilization calculations).", created: created, [(base, 0)])
        }
        w.gauge("vllm:num_requests_running", help: "Number of requests in model execution batches.", [(base, Double(running))])
        w.gauge("vllm:num_requests_waiting", help: "Number of requests waiting to be processed.", [(base, Double(waiting))])
        w.gauge(
            "vllm:num_requests_waiting_by_reason",
            help: "Number of waiting requests by reason.",
            [(with(("reason", "capacity")), Double(waiting)), (with(("reason", "deferred")), 0)]
        )
        w.gauge(
            "vllm:engine_sleep_state",
            help: "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake.",
            [(with(("sleep_state", "awake")), 1), (with(("sleep_state", "weights_offloaded")), 0), (with(("sleep_state", "discard_all")), 0)]
        )
        w.gauge("vllm:kv_cache_usage_perc", help: "KV-cache usage. 1 means 100 percent usage.", [(base, usage)])
        w.counter("vllm:prefix_cache_queries", help: "Prefix cache queries, in terms of number of queried tokens.", created: created, [(base, Double(queried))])
        w.counter("vllm:prefix_cache_hits", help: "Prefix cache hits, in terms of number of cached tokens.", created: created, [(base, Double(hits))])
        w.counter("vllm:external_prefix_cache_queries", help: "External prefix cache queries from KV connector cross-instance cache sharing, in terms of number of queried tokens.", created: created, [(base, 0)])
        w.counter("vllm:external_prefix_cache_hits", help: "External prefix cache hits from KV connector cross-instance cache sharing, in terms of number of cached tokens.", created: created, [(base, 0)])
        w.counter("vllm:mm_cache_queries", help: "Multi-modal cache queries, in terms of number of queried items.", created: created, [(base, 0)])
        w.counter("vllm:mm_cache_hits", help: "Multi-modal cache hits, in terms of number of cached items.", created: created, [(base, 0)])
        w.counter("vllm:num_preemptions", help: "Cumulative number of preemption from the engine.", created: created, [(base, 0)])
        w.counter("vllm:prompt_tokens", help: "Number of prefill tokens processed.", created: created, [(base, Double(s.promptTokens))])
        w.counter(
            "vllm:prompt_tokens_by_source",
            help: "Number of prompt tokens by source.",
            created: created,
            [
                (with(("source", "local_compute")), Double(s.promptTokens - s.cachedTokens)),
                (with(("source", "local_cache_hit")), Double(s.cachedTokens)), (with(("source", "external_kv_transfer")), 0),
            ]
        )
        w.counter("vllm:prompt_tokens_cached", help: "Number of cached prompt tokens (local + external).", created: created, [(base, Double(s.cachedTokens))])
        w.counter(
            "vllm:prompt_tokens_cached_by_source",
            help: "Number of cached prompt tokens by source.",
            created: created,
            ["device", "host", "p2p", "disk", "external_unspecified"].map { (with(("source", $0)), $0 == "device" ? Double(s.cachedTokens) : 0) }
        )
        w.counter("vllm:generation_tokens", help: "Number of generation tokens processed.", created: created, [(base, Double(s.generationTokens))])
        w.counter(
            "vllm:request_success",
            help: "Count of successfully processed requests.",
            created: created,
            ["stop", "length", "abort", "error", "repetition"].map { reason in
                var l = base
                l.insert(("finished_reason", reason), at: 1)
                let value = reason == "length" ? s.completed : reason == "abort" ? s.cancelled : reason == "error" ? s.errors : 0
                return (l, Double(value))
            }
        )
        w.counter("vllm:admission_rejections", help: "Number of requests rejected at admission.", created: created, [(base, 0)])
        let histograms: [(String, String, HistogramCounts)] = [
            ("vllm:request_prompt_tokens", "Number of prefill tokens processed.", s.promptHistogram),
            ("vllm:request_generation_tokens", "Number of generation tokens processed.", s.generationHistogram),
            ("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", HistogramCounts(bounds: VLLMBuckets.iteration)),
            ("vllm:request_max_num_generation_tokens", "Histogram of maximum number of requested generation tokens.", s.maxTokensHistogram),
            ("vllm:request_params_n", "Histogram of the n request parameter.", Self.all(HistogramCounts(bounds: VLLMBuckets.n), 1, s.completed)),
            ("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", s.maxTokensHistogram),
            ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", s.ttft),
            ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", s.interToken),
            ("vllm:request_time_per_output_token_seconds", "Histogram of time_per_output_token_seconds per request.", s.perOutputToken),
            ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", s.e2e),
            ("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", s.queue),
            ("vllm:request_inference_time_seconds", "Histogram of time spent in RUNNING phase for request.", s.inference),
            ("vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.", s.prefill),
            ("vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.", s.decode),
            ("vllm:request_num_preemptions", "Histogram of the number of preemptions per request.", HistogramCounts(bounds: VLLMBuckets.preemptions)),
            ("vllm:request_prefill_kv_computed_tokens", "Histogram of new KV tokens computed during prefill (excluding cached tokens).", s.computedHistogram),
        ]
        for (name, help, h) in histograms {
            w.histogram(name, help: help, labels: base, bounds: h.bounds, counts: h.counts, sum: h.sum, created: created)
        }
        let blocks = self.settings.capacityTokens / self.settings.blockTokens
        w.gauge(
            "vllm:cache_config_info",
            help: "Information of the LLMEngine CacheConfig",
            [([
                ("block_size", String(self.settings.blockTokens)), ("cache_dtype", "auto"), ("enable_prefix_caching", "True"),
                ("engine", "0"), ("gpu_memory_utilization", "0.9"), ("kv_cache_size_tokens", String(blocks * self.settings.blockTokens)),
                ("num_cpu_blocks", "None"), ("num_gpu_blocks", String(blocks)), ("num_gpu_blocks_override", "None"),
                ("prefix_caching_hash_algo", "xxh3"), ("sliding_window", "None"),
            ], 1)]
        )
        var rows: [([(String, String)], Double)] = []
        for (handler, methods) in s.httpCounts.sorted(by: { $0.key < $1.key }) {
            for (method, count) in methods.sorted(by: { $0.key < $1.key }) {
                rows.append(([("handler", handler), ("method", method), ("status", "2xx")], Double(count)))
            }
        }
        w.counter("http_requests", help: "Total number of requests by method, status and handler.", created: created, rows)
    }

    private func sglang(_ w: inout PrometheusWriter, _ s: ReplicaCounters, _ queried: Int, _ hits: Int, _ waiting: Int, _ running: Int, _ usage: Double) {
        let labels: [(String, String)] = [("model_name", self.settings.model)]
        let created = self.createdUnix
        w.gauge("sglang:num_running_reqs", help: "The number of running requests.", [(labels, Double(running))])
        w.gauge("sglang:num_queue_reqs", help: "The number of requests in the waiting queue.", [(labels, Double(waiting))])
        w.gauge("sglang:token_usage", help: "The token usage.", [(labels, usage)])
        w.gauge("sglang:cache_hit_rate", help: "The prefix cache hit rate.", [(labels, queried > 0 ? Double(hits) / Double(queried) : 0)])
        w.gauge("sglang:gen_throughput", help: "The generation throughput (token/s).", [(labels, 0)])
        w.counter("sglang:prompt_tokens", help: "Number of prefill tokens processed.", created: created, [(labels, Double(s.promptTokens))])
        w.counter("sglang:generation_tokens", help: "Number of generation tokens processed.", created: created, [(labels, Double(s.generationTokens))])
        w.counter("sglang:cached_tokens", help: "Number of cached prompt tokens.", created: created, [(labels, Double(s.cachedTokens))])
        w.counter("sglang:num_requests", help: "Number of requests processed.", created: created, [(labels, Double(s.completed))])
        w.histogram("sglang:time_to_first_token_seconds", help: "Histogram of time to first token in seconds.", labels: labels, bounds: s.ttft.bounds, counts: s.ttft.counts, sum: s.ttft.sum, created: created)
        w.histogram("sglang:e2e_request_latency_seconds", help: "Histogram of End-to-end request latency in seconds", labels: labels, bounds: s.e2e.bounds, counts: s.e2e.counts, sum: s.e2e.sum, created: created)
    }

    /// A histogram where every one of `count` observations was `value`.
    static func all(_ h: HistogramCounts, _ value: Double, _ count: Int) -> HistogramCounts {
        var h = h
        for _ in 0..<min(count, 1) { h.observe(value) }
        if count > 1 {
            for _ in 1..<count { h.observe(value) }
        }
        return h
    }
}

extension String {
    func replacingUnderscoresWithSpaces() -> String {
        String(self.map { $0 == "_" ? " " : $0 })
    }
}
