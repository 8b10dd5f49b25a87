import CacheRouteTestSupport
import Dispatch
import PrometheusText
import RouterConfig
import Admin
import CacheRouteRuntime
import DataPlane
import Discovery
import FleetState
import ReplicaProbes
import Telemetry
import RoutingCore
import Testing

/// The per-request families are counted per thread and summed at scrape time: the sums, the
/// histogram buckets and the exposition text must come out as one shared counter would give.
@Suite struct RequestMetricsTests {
    static func state(_ names: [String]) -> RouterState {
        var c = RouterConfiguration()
        c.replicas = names.enumerated().map { ReplicaSpec(name: $0.element, url: "http://127.0.0.1:\(1 + $0.offset)") }
        return RouterState(config: c, logger: TestSupport.logger, eventLoops: 2)
    }

    static func summary(replica: String?, status: Int, seconds: Double, ttft: Double?, tier: Tier?) -> RequestSummary {
        var s = RequestSummary(route: "chat", method: "POST", path: "/v1/chat/completions")
        s.replica = replica
        s.status = status
        s.seconds = seconds
        s.firstTokenSeconds = ttft
        s.tier = tier
        s.usagePromptTokens = replica == nil ? nil : 100
        s.usageCachedTokens = replica == nil ? nil : 40
        return s
    }

    @Test func countsFromManyThreadsAddUp() async throws {
        let state = Self.state(["r1", "r2"])
        let metrics = RouterMetrics(state: state)
        // 8 threads x 500 requests: r1 answers 200 in 20 ms (TTFT 5 ms, on a bucket bound), r2
        // answers 503 in 2 s, and every tenth request is refused by the router itself.
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for i in 0..<500 {
                if i % 10 == 0 {
                    metrics.requestFinished(Self.summary(replica: nil, status: 400, seconds: 0.001, ttft: nil, tier: nil))
                } else if i % 2 == 0 {
                    metrics.requestFinished(Self.summary(replica: "r1", status: 200, seconds: 0.02, ttft: 0.005, tier: .session))
                } else {
                    metrics.requestFinished(Self.summary(replica: "r2", status: 503, seconds: 2, ttft: nil, tier: .group))
                }
            }
        }
        let text = String(decoding: metrics.render(), as: UTF8.self)
        let m = PrometheusParser.parse(text)
        #expect(m.skipped.isEmpty, "\(m.skipped)")
        func value(_ name: String, _ labels: [String: String]) -> Double? {
            m.samples(named: name).first { s in labels.allSatisfy { s.label($0.key) == $0.value } }?.value
        }
        #expect(value("cacheroute_requests_total", ["route": "chat", "replica": "r1", "status": "200"]) == 1600)
        #expect(value("cacheroute_requests_total", ["route": "chat", "replica": "r2", "status": "503"]) == 2000)
        #expect(value("cacheroute_requests_total", ["route": "chat", "replica": "none", "status": "400"]) == 400)
        #expect(value("cacheroute_routing_decisions_total", ["tier": "session"]) == 1600)
        #expect(value("cacheroute_routing_decisions_total", ["tier": "group"]) == 2000)
        #expect(value("cacheroute_routing_decisions_total", ["tier": "pinned"]) == 0)
        #expect(m.types["cacheroute_time_to_first_token_seconds"] == "histogram")
        // le is inclusive: 5 ms lands in the 0.005 bucket; buckets are cumulative.
        #expect(value("cacheroute_time_to_first_token_seconds_bucket", ["replica": "r1", "le": "0.005"]) == 1600)
        #expect(value("cacheroute_time_to_first_token_seconds_bucket", ["replica": "r1", "le": "+Inf"]) == 1600)
        #expect(value("cacheroute_time_to_first_token_seconds_count", ["replica": "r2"]) == 0)
        #expect(value("cacheroute_request_duration_seconds_bucket", ["replica": "r1", "le": "0.01"]) == 0)
        #expect(value("cacheroute_request_duration_seconds_bucket", ["replica": "r1", "le": "0.05"]) == 1600)
        #expect(value("cacheroute_request_duration_seconds_bucket", ["replica": "r2", "le": "1.0"]) == 0)
        #expect(value("cacheroute_request_duration_seconds_bucket", ["replica": "r2", "le": "2.5"]) == 2000)
        #expect(abs((value("cacheroute_request_duration_seconds_sum", ["replica": "r2"]) ?? 0) - 4000) < 1e-6)
        #expect(value("cacheroute_request_duration_seconds_count", ["replica": "r2"]) == 2000)
        #expect(value("cacheroute_replica_prompt_tokens_total", ["replica": "r1"]) == 160_000)
        #expect(value("cacheroute_replica_cached_tokens_total", ["replica": "r2"]) == 80_000)
        #expect(m.help["cacheroute_requests_total"] == MetricName.help[MetricName.requests])
        if let (status, output) = try await TestSupport.promtool(text) {
            #expect(status == 0, "\(output)")
        } else {
            print("skipped: promtool is not installed (Debian package prometheus)")
        }
    }

    @Test func aReplicaThatLeavesTakesItsSeriesAlong() {
        let state = Self.state(["r1", "r2"])
        let metrics = RouterMetrics(state: state)
        // Before any request every replica has its (zero) series.
        var m = PrometheusParser.parse(String(decoding: metrics.render(), as: UTF8.self))
        #expect(m.samples(named: "cacheroute_request_duration_seconds_count").map { $0.label("replica") ?? "" }.sorted() == ["r1", "r2"])
        metrics.requestFinished(Self.summary(replica: "r1", status: 200, seconds: 0.1, ttft: 0.05, tier: .session))
        metrics.requestFinished(Self.summary(replica: "r2", status: 200, seconds: 0.1, ttft: 0.05, tier: .session))
        var c = RouterConfiguration()
        c.replicas = [ReplicaSpec(name: "r1", url: "http://127.0.0.1:1")]
        state.apply(c)
        m = PrometheusParser.parse(String(decoding: metrics.render(), as: UTF8.self))
        #expect(m.samples(named: "cacheroute_request_duration_seconds_count").map { $0.label("replica") ?? "" } == ["r1"])
        #expect(m.samples(named: "cacheroute_requests_total").map { $0.label("replica") ?? "" } == ["r1"])
        #expect(m.sum("cacheroute_routing_decisions_total") == 2)
    }
}
