import CacheRouteTestSupport
import FastJSON
import Foundation
import HTTPTransport
import NIOHTTP1
import PrometheusText
import ReplicaEmulator
import RouterConfig
import Admin
import CacheRouteRuntime
import DataPlane
import Discovery
import FleetState
import ReplicaProbes
import Telemetry
import RoutingCore
import NIOCore
import Testing

func fixture(_ name: String) throws -> String {
    let url = try #require(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil))
    return try String(contentsOf: url, encoding: .utf8)
}

/// Polls `condition` every 25 ms for up to `seconds`. The default is generous: on a 2-core
/// machine the CPU-bound suites that run alongside (a million prefixes, fuzzed heads) can hold
/// both threads of the cooperative pool for seconds, and with them the probe tasks being waited
/// on (seen in CI: every probe round landed right after a 5 s deadline). It returns as soon as
/// the condition holds, so a passing test waits no longer.
func eventually(_ seconds: Double = 20, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(25))
    }
    return try await condition()
}

@Suite struct MetricsParsingTests {
    @Test func theRealVLLMCaptureGivesTheSignals() throws {
        let m = PrometheusParser.parse(try fixture("vllm-0.32-metrics-under-load.txt"))
        #expect(m.skipped.isEmpty, "\(m.skipped)")
        let s = ReplicaSignals(m, engine: .vllm)
        #expect(s.waiting == 6)
        #expect(s.running == 2)
        #expect(abs((s.kvUsage ?? 0) - 0.0881542699724518) < 1e-12)
        #expect(s.cacheCounters?.queries == 51355)
        #expect(s.cacheCounters?.hits == 21504)
        #expect(s.cacheTokens == 46592)
        #expect(s.processStart == 1.79528840777e+09)
        // The idle capture (a later one of the same server) parses too.
        let idle = ReplicaSignals(PrometheusParser.parse(try fixture("vllm-0.32-metrics.txt")), engine: .vllm)
        #expect(idle.waiting == 0 && idle.running == 0)
        #expect(idle.cacheCounters != nil && idle.cacheTokens == 46592)
    }

    @Test func deprecatedVLLMAndSGLangNamesAreRead() {
        let old = PrometheusParser.parse(
            """
            vllm:num_requests_waiting{model_name="m"} 3
            vllm:gpu_cache_usage_perc{model_name="m"} 0.5
            vllm:gpu_prefix_cache_queries_total{model_name="m"} 100
            vllm:gpu_prefix_cache_hits_total{model_name="m"} 40
            """
        )
        let s = ReplicaSignals(old, engine: .vllm)
        #expect(s.waiting == 3 && s.kvUsage == 0.5)
        #expect(s.cacheCounters?.queries == 100 && s.cacheCounters?.hits == 40)
        for prefix in ["sglang:", "sglang_"] {
            let m = PrometheusParser.parse(
                """
                # TYPE \(prefix)num_queue_reqs gauge
                \(prefix)num_queue_reqs{model_name="m"} 7
                \(prefix)num_running_reqs{model_name="m"} 4
                \(prefix)token_usage{model_name="m"} 0.25
                \(prefix)cache_hit_rate{model_name="m"} 0.6
                """
            )
            // Even with the wrong engine configured, SGLang's names are recognized.
            for engine in [Engine.sglang, .vllm] {
                let g = ReplicaSignals(m, engine: engine)
                #expect(g.waiting == 7 && g.running == 4 && g.kvUsage == 0.25 && g.cacheHitRate == 0.6)
            }
        }
    }

    @Test func edgeCasesNeverCrashTheParser() {
        let text = """
            # HELP a_total A "quoted" help with a \\\\ backslash and a \\n newline
            # TYPE a_total counter
            a_total{path="/x\\"y\\\\z\\n",code="200"} 3 1700000000000
            a_created{path="/x"} 1.7e9
            no_type_metric 4.5
            nan_metric NaN
            inf_metric{le="+Inf"} +Inf
            neg_inf -Inf
            exemplar_total 5 # {trace_id="abc"} 1.0
            spaced { a = "1" , b="2" } 6
            garbage line here
            {"json": true}
            metric_without_value
            unterminated{a="1 2
            bad_value 1.2.3
            \r
            """
        let m = PrometheusParser.parse(text)
        #expect(m.samples(named: "a_total").first?.label("path") == "/x\"y\\z\n")
        #expect(m.samples(named: "a_total").first?.value == 3)
        #expect(m.types["a_total"] == "counter")
        #expect(m.help["a_total"]?.contains("\"quoted\"") == true)
        #expect(m.sum("no_type_metric") == 4.5)
        #expect(m.samples(named: "nan_metric").first?.value.isNaN == true)
        #expect(m.sum("inf_metric") == .infinity)
        #expect(m.sum("neg_inf") == -.infinity)
        #expect(m.sum("exemplar_total") == 5)
        #expect(m.samples(named: "spaced").first?.label("b") == "2")
        #expect(m.skipped.count == 5, "\(m.skipped)")
        #expect(m.skipped.map(\.line) == [11, 12, 13, 14, 15])
        // Random bytes: no crash, everything skipped or parsed.
        var rng = SplitMix64State(seed: 9)
        for _ in 0..<200 {
            let bytes = (0..<Int(rng.next() % 200)).map { _ in UInt8(truncatingIfNeeded: rng.next() % 128) }
            _ = PrometheusParser.parse(String(decoding: bytes, as: UTF8.self))
        }
    }

    @Test func hitUtilizationAcrossCounterResets() {
        var t = HitRatioTracker()
        #expect(t.update(queries: 1000, hits: 400) == nil)  // first scrape: no interval yet
        #expect(t.update(queries: 2000, hits: 1150) == 0.75)  // 750 of 1000
        #expect(t.update(queries: 2000, hits: 1150) == nil)  // no traffic: no new ratio
        #expect(t.update(queries: 300, hits: 30) == 0.1)  // restart: counts since the reset
        #expect(t.update(queries: 500, hits: 230) == 1.0)  // 200 of 200
        #expect(t.update(queries: 600, hits: 200) == 200.0 / 600.0)  // hits went down: a reset too (counts since it)
    }
}

struct SplitMix64State {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        return SplitMix64.mix(self.state)
    }
}

@Suite(.serialized)
struct ProbeAndAdminTests {
    /// Fast probes for tests: every 100 ms, down after 3 failures, up after 2 successes.
    static func fastProbes(_ c: inout RouterConfiguration, _ servers: [EmulatorServer]) {
        c.health.interval = 0.1
        c.health.timeout = 0.3
        c.health.metricsTimeout = 0.5
        c.health.thresholds.failureThreshold = 3
        c.health.thresholds.successThreshold = 2
    }

    @Test func healthHasHysteresisAgainstAFlappingReplica() async throws {
        try await withRouter(2, config: { c, s in
            Self.fastProbes(&c, s)
            c.health.timeout = 2  // a late answer is a failure too; on a loaded machine 0.3 s could be one
        }) { router, servers in
            let probes = Task { try? await router.probes.run() }
            defer { probes.cancel() }
            #expect(await eventually { router.probes.isReady })
            let port = servers[0].port
            func health(_ mode: String) async throws {
                _ = try await TestSupport.post(port, "/admin/faults", #"{"health":"\#(mode)"}"#)
            }
            // Every other probe fails (the emulator alternates per /health request, whatever the timing):
            // never 3 failures in a row, so the replica stays up through 12 probes.
            try await health("flap")
            var states: [ReplicaHealth.State] = []
            let flapped = await eventually(20) {
                states.append(router.state.health(of: "r1")?.state ?? .unknown)
                return servers[0].replica.healthFlaps >= 12
            }
            #expect(flapped)
            #expect(!states.contains(.down), "\(states)")
            // Failing for good takes it down; the other replica takes the traffic.
            try await health("fail")
            #expect(await eventually { router.state.health(of: "r1")?.state == .down })
            #expect(router.state.fleet.routable == [false, true])
            for session in 0..<5 {
                let r = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", chatBody(session: 300 + session))
                #expect(r.headers["x-cacheroute-replica"].first == "r2")
            }
            // Healthy again: back after the success threshold.
            try await health("ok")
            #expect(await eventually { router.state.health(of: "r1")?.state == .up })
            #expect(router.state.fleet.routable == [true, true])
        }
    }

    @Test func aKilledReplicaLeavesAndReturnsWithoutFailedRequests() async throws {
        try await withRouter(3, config: { c, s in
            Self.fastProbes(&c, s)
            c.upstream.retryMinPerSecond = 1000
            c.upstream.connectTimeout = 0.5
        }) { router, servers in
            let probes = Task { try? await router.probes.run() }
            defer { probes.cancel() }
            #expect(await eventually { router.probes.isReady })
            let victim = servers[1]
            let port = victim.port
            let statuses = try await withThrowingTaskGroup(of: [HTTPResponseStatus].self) { group in
                for worker in 0..<4 {
                    group.addTask {
                        var out: [HTTPResponseStatus] = []
                        for i in 0..<60 {
                            let body = #"{"model":"cacheroute-demo","max_tokens":2,"messages":[{"role":"user","content":"worker \#(worker) session \#(i % 20)"}]}"#
                            out.append(try await TestSupport.post(router.proxy.port, "/v1/chat/completions", body).status)
                            try await Task.sleep(for: .milliseconds(10))
                        }
                        return out
                    }
                }
                group.addTask {
                    try await Task.sleep(for: .milliseconds(200))
                    await victim.stop()
                    return []
                }
                var all: [HTTPResponseStatus] = []
                for try await s in group { all += s }
                return all
            }
            #expect(statuses.count == 240)
            #expect(statuses.allSatisfy { $0 == .ok }, "\(statuses.filter { $0 != .ok })")
            #expect(await eventually { router.state.fleet.routable[1] == false })
            // It comes back on the same port: probes bring it into rotation again.
            var settings = victim.replica.settings
            settings.instant = true
            let revived = try await EmulatorServer.start(settings: settings, port: port, logger: TestSupport.logger)
            defer { Task { await revived.stop() } }
            #expect(await eventually { router.state.fleet.routable[1] })
            var servedByR2 = false
            for session in 0..<30 where !servedByR2 {
                let body = #"{"model":"cacheroute-demo","max_tokens":1,"messages":[{"role":"user","content":"after \#(session)"}]}"#
                servedByR2 = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", body).headers["x-cacheroute-replica"].first == "r2"
            }
            #expect(servedByR2)
            await revived.stop()
        }
    }

    /// A replica that restarts between two probes is ejected by its failed requests and never
    /// probed down; the next good probe brings it back on trial, long before its 30 s ejection ends.
    @Test func aQuicklyRestartedReplicaIsBackAtTheNextGoodProbe() async throws {
        try await withRouter(2, config: { c, s in
            c.health.interval = 0.5
            c.health.timeout = 0.3
            c.health.thresholds.failureThreshold = 100  // probes never mark it down here
            c.health.thresholds.ejectAfterFailures = 1
            c.health.thresholds.ejectionSeconds = 30
            c.upstream.retryMinPerSecond = 1000
            c.upstream.connectTimeout = 0.5
        }) { router, servers in
            let probes = Task { try? await router.probes.run() }
            defer { probes.cancel() }
            #expect(await eventually { router.probes.isReady })
            let victim = servers[1]
            let port = victim.port
            await victim.stop()
            // Requests routed to it fail over, and eject it.
            for i in 0..<20 {
                let body = #"{"model":"cacheroute-demo","max_tokens":1,"messages":[{"role":"user","content":"before \#(i)"}]}"#
                #expect(try await TestSupport.post(router.proxy.port, "/v1/chat/completions", body).status == .ok)
            }
            #expect(router.state.fleet.routable[1] == false)
            var settings = victim.replica.settings
            settings.instant = true
            let revived = try await EmulatorServer.start(settings: settings, port: port, logger: TestSupport.logger)
            let started = ContinuousClock.now
            #expect(await eventually(5) { router.state.fleet.routable[1] })
            #expect(ContinuousClock.now - started < .seconds(5), "back within a few probe intervals, not after 30 s")
            var servedByR2 = false
            for session in 0..<30 where !servedByR2 {
                let body = #"{"model":"cacheroute-demo","max_tokens":1,"messages":[{"role":"user","content":"after \#(session)"}]}"#
                servedByR2 = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", body).headers["x-cacheroute-replica"].first == "r2"
            }
            #expect(servedByR2)
            await revived.stop()
        }
    }

    /// A replica that hangs (accepts, never answers) and then fails its probes: the requests
    /// already waiting on it go to another replica as soon as it is marked down, not after
    /// upstream.first_byte_timeout, and none fails.
    @Test func requestsWaitingOnAHungReplicaGoElsewhereWhenItIsMarkedDown() async throws {
        try await withRouter(2, config: { c, s in
            Self.fastProbes(&c, s)
            c.upstream.firstByteTimeout = 60
        }) { router, servers in
            let probes = Task { try? await router.probes.run() }
            defer { probes.cancel() }
            #expect(await eventually { router.probes.isReady })
            var hang = servers[1].replica.faults
            hang.mode = .hang
            hang.probability = 1
            servers[1].replica.setFaults(hang)
            let hung = hang
            let started = ContinuousClock.now
            let results = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
                for i in 0..<16 {
                    group.addTask {
                        let body = #"{"model":"cacheroute-demo","max_tokens":2,"messages":[{"role":"user","content":"hung \#(i)"}]}"#
                        let r = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", body, timeout: 30)
                        return (Int(r.status.code), r.headers["x-cacheroute-replica"].first)
                    }
                }
                group.addTask {
                    // Requests are on it; then its health checks start failing too.
                    try await Task.sleep(for: .milliseconds(400))
                    var down = hung
                    down.health = .fail
                    servers[1].replica.setFaults(down)
                    return (0, nil)
                }
                var all: [(Int, String?)] = []
                for try await r in group where r.0 != 0 { all.append(r) }
                return all
            }
            let elapsed = ContinuousClock.now - started
            #expect(results.count == 16 && results.allSatisfy { $0.0 == 200 && $0.1 == "r1" }, "\(results)")
            #expect(elapsed < .seconds(5), "waited \(elapsed), not the 60 s first-byte timeout")
            let metrics = String(decoding: router.metrics.render(), as: UTF8.self)
            #expect(metrics.contains(#"reason="replica_lost""#), "the moves are counted as retries")
        }
    }

    /// Replicas that hang with healthy probes: one emulated (accepts, never answers) and a
    /// blackhole (accepts the connection, reads nothing). A streamed request on either is stalled
    /// after its deadline and answered by the healthy replica; none fails.
    @Test func streamedRequestsOnAHungReplicaWithHealthyProbesMoveAfterTheirStallDeadline() async throws {
        final class Blackhole: ChannelInboundHandler, Sendable {
            typealias InboundIn = ByteBuffer
            func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
        }
        /// Answers an event stream's head at once (as vLLM does, before the first token), then nothing.
        final class HeadThenHang: ChannelInboundHandler, Sendable {
            typealias InboundIn = ByteBuffer
            typealias OutboundOut = ByteBuffer
            func channelRead(context: ChannelHandlerContext, data: NIOAny) {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: head)), promise: nil)
            }
        }
        let blackhole = try await LoopbackServer.start { Blackhole() }
        let headOnly = try await LoopbackServer.start { HeadThenHang() }
        try await TestSupport.withEmulators(2) { servers in
            var hang = servers[1].replica.faults
            hang.mode = .hang
            hang.probability = 1
            servers[1].replica.setFaults(hang)
            var c = testConfiguration(
                servers.map { ReplicaSpec(name: $0.replica.settings.name, url: "http://127.0.0.1:\($0.port)") }
                    + [ReplicaSpec(name: "hole", url: "http://127.0.0.1:\(blackhole.port)"), ReplicaSpec(name: "head", url: "http://127.0.0.1:\(headOnly.port)")])
            c.upstream.stall = StallSettings(factor: 4, minimumSeconds: 0.5)
            c.upstream.firstByteTimeout = 60
            c.upstream.retries = 3  // three of the four replicas hang: a request may meet each
            c.upstream.retryMinPerSecond = 1000
            c.health.thresholds.ejectAfterFailures = 0  // placement alone, no ejection, keeps sending some there
            let router = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
            let started = ContinuousClock.now
            let results = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
                for i in 0..<16 {
                    group.addTask {
                        let body = #"{"model":"cacheroute-demo","max_tokens":2,"stream":true,"messages":[{"role":"user","content":"stall \#(i)"}]}"#
                        let r = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", body, timeout: 30)
                        // The answer is r1's whole stream, not the held head of the one that hung.
                        #expect(r.bodyText.contains("data: [DONE]"), "\(r.bodyText)")
                        return (Int(r.status.code), r.headers["x-cacheroute-replica"].first)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let elapsed = ContinuousClock.now - started
            #expect(results.allSatisfy { $0.0 == 200 && $0.1 == "r1" }, "\(results)")
            #expect(elapsed < .seconds(5), "\(elapsed)")
            let metrics = String(decoding: router.metrics.render(), as: UTF8.self)
            #expect(metrics.contains(#"reason="stalled""#))
            #expect(metrics.contains(#"cacheroute_retries_total{replica="head",reason="stalled"}"#), "the held event-stream head was given up too")
            await router.stop()
        }
        await blackhole.stop()
        await headOnly.stop()
    }

    @Test func metricsAndAdminEndpoints() async throws {
        try await withRouter(2, config: Self.fastProbes) { router, servers in
            let admin = try #require(router.admin?.port)
            #expect(try await TestSupport.get(admin, "/readyz").status == .serviceUnavailable)
            let probes = Task { try? await router.probes.run() }
            defer { probes.cancel() }
            #expect(try await TestSupport.get(admin, "/healthz").status == .ok)
            #expect(try await eventually { try await TestSupport.get(admin, "/readyz").status == .ok })
            // Traffic that hits the cache: the second turn of each conversation.
            for session in 0..<6 {
                for turns in 1...2 {
                    _ = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", chatBody(session: 400 + session, turns: turns))
                }
            }
            let stream = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", chatBody(session: 400, turns: 3, stream: true))
            #expect(stream.status == .ok)
            _ = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", "{not json")
            // Wait for two scrapes after the traffic so the probed ratio covers it.
            #expect(await eventually { router.state.replicaReport().allSatisfy { ($0.probe.hitRatio ?? 0) > 0 || $0.load.inFlight == 0 && $0.probe.cacheQueries == 0 } })
            try await Task.sleep(for: .milliseconds(300))
            let text = try await TestSupport.get(admin, "/metrics").bodyText
            let m = PrometheusParser.parse(text)
            #expect(m.skipped.isEmpty, "\(m.skipped)")
            for name in ["r1", "r2"] {
                #expect(m.samples(named: "cacheroute_replica_up").first { $0.label("replica") == name }?.value == 1)
                let ratio = m.samples(named: "cacheroute_replica_prefix_cache_hit_ratio").first { $0.label("replica") == name }?.value
                #expect(ratio != nil)
            }
            let probed = m.samples(named: "cacheroute_replica_prefix_cache_hit_ratio").compactMap { $0.value.isNaN ? nil : $0.value }
            #expect(probed.contains { $0 > 0.3 }, "\(probed)")
            let ok = m.samples(named: "cacheroute_requests_total").filter { $0.label("status") == "200" && $0.label("route") == "chat" }
            #expect(ok.reduce(0) { $0 + $1.value } == 13)
            #expect(m.samples(named: "cacheroute_requests_total").contains { $0.label("status") == "400" })
            #expect((m.sum("cacheroute_routing_decisions_total") ?? 0) == 14)
            #expect((m.sum("cacheroute_replica_cached_tokens_total") ?? 0) > 0)
            #expect((m.sum("cacheroute_replica_prompt_tokens_total") ?? 0) > (m.sum("cacheroute_replica_cached_tokens_total") ?? 0))
            #expect(m.types["cacheroute_time_to_first_token_seconds"] == "histogram")
            #expect(m.sum("cacheroute_time_to_first_token_seconds_count") == 14)
            #expect(m.samples(named: "cacheroute_replica_in_flight").allSatisfy { $0.value == 0 })
            #expect(m.help["cacheroute_replica_up"] != nil)
            if let (status, output) = try await TestSupport.promtool(text) {
                #expect(status == 0, "\(output)")
            } else {
                print("skipped: promtool is not installed (Debian package prometheus)")
            }
            // /admin/replicas: health, load, probed signals.
            let replicas = try JSONValue.parse(try await TestSupport.get(admin, "/admin/replicas").bodyBytes)["replicas"]?.arrayValue ?? []
            #expect(replicas.count == 2)
            #expect(replicas.allSatisfy { $0["health"]?.stringValue == "up" && $0["routable"] == .bool(true) })
            #expect(replicas.allSatisfy { $0["cache_tokens"]?.intValue == 500_000 })
            #expect(replicas.allSatisfy { $0["queue_depth"]?.intValue == 0 })
            // /admin/explain: the decision with live state; the conversation is known now.
            let explain = try await TestSupport.post(admin, "/admin/explain", chatBody(session: 400, turns: 4))
            let decision = try JSONValue.parse(explain.bodyBytes)
            #expect(decision["tier"]?.stringValue == "session")
            #expect(decision["replica"]?.stringValue == stream.headers["x-cacheroute-replica"].first)
            _ = servers
        }
    }

    @Test func reloadsAreCounted() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cacheroute-metrics-\(UInt32.random(in: 0...UInt32.max)).yaml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try await TestSupport.withEmulators(1) { servers in
            try "replicas: [{name: r1, url: \"http://127.0.0.1:\(servers[0].port)\"}]\n".write(toFile: path, atomically: true, encoding: .utf8)
            var config = try RouterConfiguration.load(path: path)
            config.listen = ListenAddress(host: "127.0.0.1", port: 0)
            config.adminListen = ListenAddress(host: "127.0.0.1", port: 0)
            let runtime = try await RouterRuntime.start(config: config, configPath: path, logger: TestSupport.logger)
            #expect(runtime.reload?.reload(reason: "test") == true)
            try "replicas: oops\n".write(toFile: path, atomically: true, encoding: .utf8)
            #expect(runtime.reload?.reload(reason: "test") == false)
            let m = PrometheusParser.parse(String(decoding: runtime.metrics.render(), as: UTF8.self))
            #expect(m.samples(named: "cacheroute_config_reloads_total").first { $0.label("result") == "success" }?.value == 1)
            #expect(m.samples(named: "cacheroute_config_reloads_total").first { $0.label("result") == "failure" }?.value == 1)
            await runtime.stop()
        }
    }
}
