import CacheRouteTestSupport
import FastJSON
import Foundation
import HTTPTransport
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import ReplicaEmulator
import ReplicaModel
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

/// A system prompt long enough to form an instruction group (over 2 KiB).
let system = String(repeating: "You are the order assistant of ACME. Answer briefly and politely. ", count: 40)

func chatBody(session: Int, turns: Int = 1, stream: Bool = false, maxTokens: Int = 4) -> String {
    var messages = [#"{"role":"system","content":"\#(system)"}"#]
    for t in 0..<turns {
        messages.append(#"{"role":"user","content":"Customer \#(session) question \#(t) about order \#(session * 7)."}"#)
        if t < turns - 1 { messages.append(#"{"role":"assistant","content":"Answer \#(t) for \#(session)."}"#) }
    }
    let streaming = stream ? #","stream":true,"stream_options":{"include_usage":true}"# : ""
    return #"{"model":"cacheroute-demo","max_tokens":\#(maxTokens)\#(streaming),"messages":[\#(messages.joined(separator: ","))]}"#
}

/// A router configuration for tests: loopback, any free ports, no access log.
func testConfiguration(_ replicas: [ReplicaSpec]) -> RouterConfiguration {
    var c = RouterConfiguration()
    c.listen = ListenAddress(host: "127.0.0.1", port: 0)
    c.adminListen = ListenAddress(host: "127.0.0.1", port: 0)
    c.replicas = replicas
    c.logging.accessLog = false
    return c
}

/// Streams a chat request through the router to its end: the SSE events and the raw text.
func streamChat(_ router: RouterRuntime, session: Int, maxTokens: Int) async throws -> (events: [String], text: String) {
    let body = chatBody(session: session, stream: true, maxTokens: maxTokens)
    let stream = try await TestSupport.client.stream(
        .post(host: "127.0.0.1", port: router.proxy.port, path: "/v1/chat/completions", json: Array(body.utf8)),
        connectTimeout: 2,
        responseTimeout: 5
    )
    #expect(stream.status == .ok)
    var text = ""
    for try await chunk in stream.body { text += String(buffer: chunk) }
    return (TestSupport.sseEvents(text), text)
}

/// Starts `count` emulated replicas and the router in front of them, runs `body`, stops all.
func withRouter<T>(
    _ count: Int,
    emulator: (inout EmulatorSettings, Int) -> Void = { _, _ in },
    config: (inout RouterConfiguration, [EmulatorServer]) -> Void = { _, _ in },
    configPath: String? = nil,
    _ body: (RouterRuntime, [EmulatorServer]) async throws -> T
) async throws -> T {
    try await TestSupport.withEmulators(count, configure: emulator) { servers in
        var c = testConfiguration(servers.map { ReplicaSpec(name: $0.replica.settings.name, url: "http://127.0.0.1:\($0.port)") })
        config(&c, servers)
        let runtime = try await RouterRuntime.start(config: c, configPath: configPath, logger: TestSupport.logger)
        do {
            let result = try await body(runtime, servers)
            await runtime.stop()
            return result
        } catch {
            await runtime.stop()
            throw error
        }
    }
}

@Suite(.serialized)
struct ProxyTests {
    @Test func chatAndCompletionsAreRoutedAndAnswered() async throws {
        try await withRouter(3) { router, servers in
            let port = router.proxy.port
            let first = try await TestSupport.post(port, "/v1/chat/completions", chatBody(session: 1, turns: 1))
            #expect(first.status == .ok)
            let answer = try JSONValue.parse(first.bodyBytes)
            #expect(answer["object"]?.stringValue == "chat.completion")
            let replica = first.headers["x-cacheroute-replica"].first
            #expect(replica != nil)
            #expect(first.headers["x-cacheroute-tier"].first != nil)
            // The next turns of the conversation stay on that replica and hit its cache.
            for turns in 2...4 {
                let next = try await TestSupport.post(port, "/v1/chat/completions", chatBody(session: 1, turns: turns))
                #expect(next.headers["x-cacheroute-replica"].first == replica)
                let cached = try JSONValue.parse(next.bodyBytes)["usage"]?["prompt_tokens_details"]?["cached_tokens"]?.intValue ?? 0
                #expect(cached > 0)
            }
            let completion = try await TestSupport.post(port, "/v1/completions", #"{"model":"cacheroute-demo","prompt":"Once upon a time","max_tokens":2}"#)
            #expect(completion.status == .ok)
            #expect(try JSONValue.parse(completion.bodyBytes)["object"]?.stringValue == "text_completion")
            // Hop-by-hop headers are not passed on; the body arrived intact (the emulator parsed it).
            #expect(completion.headers["keep-alive"].isEmpty)
            let total = servers.reduce(0) { $0 + $1.replica.stats.completed }
            #expect(total == 5)
        }
    }

    @Test func everyRequestCarriesAnIDToTheReplicaAndBack() async throws {
        try await withRouter(1) { router, _ in
            let port = router.proxy.port
            func ask(_ id: String?) async throws -> (header: String?, answerID: String?) {
                let headers: HTTPHeaders = id.map { ["x-request-id": $0] } ?? [:]
                let r = try await TestSupport.post(port, "/v1/chat/completions", chatBody(session: 3), headers: headers)
                #expect(r.status == .ok)
                return (r.headers["x-request-id"].first, try JSONValue.parse(r.bodyBytes)["id"]?.stringValue)
            }
            // None sent: the router makes one, and the replica (vLLM's rule) names the answer after it.
            let made = try await ask(nil)
            let id = try #require(made.header)
            #expect(id.count == 16 && id.allSatisfy(\.isHexDigit))
            #expect(made.answerID == "chatcmpl-\(id)")
            #expect(try await ask(nil).header != id)
            // The client's own id goes through as it is.
            let own = try await ask("trace-7f3a:span-9")
            #expect(own.header == "trace-7f3a:span-9")
            #expect(own.answerID == "chatcmpl-trace-7f3a:span-9")
            // An unusable one (a quote, or too long) is replaced, not forwarded.
            for bad in [#"a"b"#, String(repeating: "x", count: 129)] {
                let replaced = try await ask(bad)
                #expect(replaced.header?.count == 16)
                #expect(replaced.answerID == "chatcmpl-\(replaced.header ?? "")")
            }
            // The router's own answers carry it too.
            let missing = try await TestSupport.get(port, "/nowhere")
            #expect(missing.status == .notFound)
            #expect(missing.headers["x-request-id"].first?.count == 16)
        }
    }

    @Test func sglangGenerateIsRouted() async throws {
        try await withRouter(2, emulator: { s, _ in s.engine = .sglang }) { router, _ in
            let r = try await TestSupport.post(router.proxy.port, "/generate", #"{"text":"Hello there","sampling_params":{"max_new_tokens":3}}"#)
            #expect(r.status == .ok)
            #expect(try JSONValue.parse(r.bodyBytes)["meta_info"]?["completion_tokens"]?.intValue == 3)
        }
    }

    @Test func modelsAreMergedAcrossTheFleet() async throws {
        try await withRouter(3, emulator: { s, i in s.model = "model-\(i % 2)" }) { router, _ in
            let r = try await TestSupport.get(router.proxy.port, "/v1/models")
            #expect(r.status == .ok)
            let ids = (try JSONValue.parse(r.bodyBytes)["data"]?.arrayValue ?? []).compactMap { $0["id"]?.stringValue }
            #expect(Set(ids) == ["model-0", "model-1"])
            #expect(ids.count == 2)
        }
    }

    @Test func streamsAreRelayedIntactAndIncrementally() async throws {
        try await withRouter(1, emulator: { s, _ in
            s.instant = false
            s.timing.speed = 1
            s.timing.stepBaseSeconds = 0.04
        }) { router, _ in
            let body = chatBody(session: 2, stream: true, maxTokens: 12)
            let stream = try await TestSupport.client.stream(
                .post(host: "127.0.0.1", port: router.proxy.port, path: "/v1/chat/completions", json: Array(body.utf8)),
                connectTimeout: 2,
                responseTimeout: 10
            )
            #expect(stream.headers["content-type"].first?.hasPrefix("text/event-stream") == true)
            let clock = ContinuousClock()
            var arrivals: [ContinuousClock.Instant] = []
            var text = ""
            for try await chunk in stream.body {
                arrivals.append(clock.now)
                text += String(buffer: chunk)
            }
            let events = TestSupport.sseEvents(text)
            #expect(events.last == "[DONE]")
            let content = events.dropLast().compactMap { try? JSONValue.parse($0) }
                .compactMap { $0["choices"]?[0]?["delta"]?["content"]?.stringValue }.joined()
            #expect(content.count == 48)
            // Chunks arrive as tokens are made (12 x 40 ms), not all at the end.
            #expect(arrivals.count >= 6, "\(arrivals.count) reads")
            if let first = arrivals.first, let last = arrivals.last {
                #expect(last - first > .milliseconds(250))
            }
        }
    }

    @Test func aClientThatLeavesCancelsTheUpstreamRequest() async throws {
        try await withRouter(1, emulator: { s, _ in
            s.instant = false
            s.timing.speed = 1
        }) { router, servers in
            let body = chatBody(session: 3, stream: true, maxTokens: 2000)
            let stream = try await TestSupport.client.stream(
                .post(host: "127.0.0.1", port: router.proxy.port, path: "/v1/chat/completions", json: Array(body.utf8)),
                connectTimeout: 2,
                responseTimeout: 5
            )
            var iterator = stream.body.makeAsyncIterator()
            _ = try await iterator.next()
            stream.cancel()
            var cancelled: Int64 = 0
            for _ in 0..<100 {
                try await Task.sleep(for: .milliseconds(20))
                cancelled = try JSONValue.parse(try await TestSupport.get(servers[0].port, "/admin/stats").bodyBytes)["cancelled"]?.intValue ?? 0
                if cancelled > 0 { break }
            }
            #expect(cancelled == 1)
            #expect(servers[0].replica.stats.completed == 0)
            // The router released the replica's load.
            var inFlight = -1
            for _ in 0..<50 {
                inFlight = router.state.load(of: "r1")?.inFlight ?? -1
                if inFlight == 0 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(inFlight == 0)
        }
    }

    @Test func aDeadReplicaIsRetriedBeforeTheFirstByte() async throws {
        try await withRouter(2, config: { c, _ in
            // A third replica nothing listens on: requests that hash to it fail over.
            c.replicas.append(ReplicaSpec(name: "dead", url: "http://127.0.0.1:1"))
            c.upstream.retryMinPerSecond = 100
            c.health.thresholds.ejectAfterFailures = 2
        }) { router, _ in
            var statuses: [HTTPResponseStatus] = []
            var servedBy = Set<String>()
            for session in 0..<30 {
                // Short prompts: no instruction group, so sessions spread over all three replicas.
                let body = #"{"model":"cacheroute-demo","max_tokens":1,"messages":[{"role":"user","content":"session \#(session)"}]}"#
                let r = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", body)
                statuses.append(r.status)
                servedBy.formUnion(r.headers["x-cacheroute-replica"])
            }
            #expect(statuses.allSatisfy { $0 == .ok }, "\(statuses)")
            #expect(!servedBy.contains("dead"))
            // Passive outlier detection took it out of rotation.
            #expect(router.state.health(of: "dead")?.ejectedUntil != nil)
        }
    }

    @Test func a5xxBeforeTheFirstByteIsRetriedElsewhere() async throws {
        try await withRouter(2, emulator: { s, i in
            if i == 0 { s.faults.mode = .error503 }
        }, config: { c, _ in c.upstream.retryMinPerSecond = 100 }) { router, servers in
            for session in 0..<12 {
                let r = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", chatBody(session: 200 + session))
                #expect(r.status == .ok)
                #expect(r.headers["x-cacheroute-replica"].first == "r2")
            }
            #expect(servers[1].replica.stats.completed == 12)
        }
    }

    @Test func retriesStayWithinTheBudget() async throws {
        try await withRouter(2, emulator: { s, i in
            if i == 0 { s.faults.mode = .error503 }
        }, config: { c, _ in
            // Budget: 10 tokens to start, 0.2 per request, nothing per second; no ejection, so
            // the failing replica keeps getting its share of first attempts.
            c.upstream.retryBudget = 0.2
            c.upstream.retryMinPerSecond = 0
            c.health.thresholds.ejectAfterFailures = 1_000_000
        }) { router, servers in
            let requests = 200
            var failed = 0
            for session in 0..<requests {
                let body = #"{"model":"cacheroute-demo","max_tokens":1,"messages":[{"role":"user","content":"budget \#(session)"}]}"#
                let r = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", body)
                if r.status != .ok { failed += 1 }
            }
            let attempts = servers[0].replica.stats.faulted + servers[1].replica.stats.completed
            let retries = attempts - requests
            #expect(retries > 0)
            #expect(retries <= 10 + requests / 5, "\(retries) retries for \(requests) requests")
            // The failing replica got more first attempts than the budget could retry.
            #expect(failed > 0)
            #expect(failed + retries == servers[0].replica.stats.faulted)
        }
    }

    @Test func aReplicaThatNeverAnswersGets504() async throws {
        try await withRouter(2, emulator: { s, _ in s.faults.mode = .hang }, config: { c, _ in
            c.upstream.firstByteTimeout = 0.5
            c.upstream.retries = 1
        }) { router, servers in
            let r = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", chatBody(session: 7))
            #expect(r.status == .gatewayTimeout)
            let error = try JSONValue.parse(Array(r.bodyText.utf8))
            #expect(error["error"]?["code"]?.stringValue == "gateway_timeout", "\(r.bodyText)")
            // A timeout is not retried (the replica may still be working on it): one replica saw it.
            #expect(servers.map { $0.replica.stats.faulted }.reduce(0, +) == 1)
        }
    }

    /// A replica that drops the connection mid-stream, or stops sending: the stream still ends
    /// cleanly (no connection error), its last event says what happened, no [DONE].
    @Test(arguments: [(FaultPlan.Mode.dieMidStream, 2, "bad_gateway"), (.stallMidStream, 3, "gateway_timeout")])
    func aStreamThatFailsMidwayEndsWithAnErrorEvent(mode: FaultPlan.Mode, chunks: Int, code: String) async throws {
        try await withRouter(1, emulator: { s, _ in
            s.instant = false
            s.timing.speed = 20
            s.faults.mode = mode
            s.faults.afterChunks = chunks
        }, config: { c, _ in c.upstream.idleTimeout = 1 }) { router, _ in
            let (events, text) = try await streamChat(router, session: 4, maxTokens: 20)
            #expect(events.count == chunks + 1, "\(events)")
            let last = try JSONValue.parse(Array((events.last ?? "").utf8))
            #expect(last["error"]?["code"]?.stringValue == code)
            #expect(!text.contains("[DONE]"))
        }
    }

    @Test func anOversizeBodyGets413() async throws {
        try await withRouter(1, config: { c, _ in c.limits.maxBodyBytes = 4096 }) { router, servers in
            let r = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", chatBody(session: 5, turns: 30))
            #expect(r.status == .payloadTooLarge)
            #expect(try JSONValue.parse(r.bodyBytes)["error"]?["code"]?.stringValue == "request_too_large")
            #expect(servers[0].replica.stats.completed == 0)
            // The same limit for a chunked body, which announces no length.
            let raw = try await RawConnection.connect(port: router.proxy.port)
            let chunk = String(repeating: "x", count: 3000)
            try await raw.send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
            try await raw.send("bb8\r\n\(chunk)\r\nbb8\r\n\(chunk)\r\n")
            let answer = try await raw.wait { $0.contains("\r\n\r\n{") }
            #expect(answer.hasPrefix("HTTP/1.1 413"))
            #expect(try await raw.waitForClose())
        }
    }

    @Test func noReplicaGives503WithRetryAfter() async throws {
        try await withRouter(1, config: { c, _ in c.replicas = [] }) { router, _ in
            let r = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", chatBody(session: 6))
            #expect(r.status == .serviceUnavailable)
            #expect(r.headers["retry-after"].first == "2")
            #expect(try JSONValue.parse(r.bodyBytes)["error"]?["type"]?.stringValue == "service_unavailable")
            #expect(try await TestSupport.get(router.proxy.port, "/health").status == .serviceUnavailable)
        }
    }

    @Test func malformedRequestsGetClearErrors() async throws {
        try await withRouter(1, config: { c, _ in c.limits.maxHeaderBytes = 2048 }) { router, _ in
            let port = router.proxy.port
            func exchange(_ request: String) async throws -> String {
                let raw = try await RawConnection.connect(port: port)
                try await raw.send(request)
                let text = try await raw.wait { $0.contains("\r\n\r\n{") && $0.hasSuffix("}") }
                await raw.close()
                return text
            }
            #expect(try await exchange("GARBAGE\r\n\r\n").hasPrefix("HTTP/1.1 400"))
            #expect(try await exchange("GET /v1/models HTTP/2.0\r\nhost: x\r\n\r\n").hasPrefix("HTTP/1.1 505"))
            #expect(try await exchange("GET /v1/models HTTP/1.1\r\nhost: x\r\n folded: value\r\n\r\n").hasPrefix("HTTP/1.1 400"))
            // Bare LF line ends: refused at once (`exchange` waits 5 s; the header timeout is 15 s).
            #expect(try await exchange("GET /v1/models HTTP/1.1\nhost: x\n\n").hasPrefix("HTTP/1.1 400"))
            #expect(try await exchange("\nGET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n").hasPrefix("HTTP/1.1 400"))
            // Exactly one Host in HTTP/1.1 (HTTP/1.0 may omit it: see the pipelining test).
            #expect(try await exchange("GET /v1/models HTTP/1.1\r\n\r\n").contains("needs a Host header"))
            #expect(try await exchange("GET /v1/models HTTP/1.1\r\nhost: a\r\nHost: b\r\n\r\n").hasPrefix("HTTP/1.1 400"))
            let smuggle = "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
            #expect(try await exchange(smuggle).hasPrefix("HTTP/1.1 400"))
            let big = "GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: \(String(repeating: "a", count: 4000))\r\n\r\n"
            #expect(try await exchange(big).hasPrefix("HTTP/1.1 431"))
            #expect(try await exchange("GET /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n").hasPrefix("HTTP/1.1 405"))
            #expect(try await exchange("GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n").hasPrefix("HTTP/1.1 404"))
            let notJSON = try await TestSupport.post(port, "/v1/chat/completions", "{not json")
            // Unkeyable bodies are still forwarded (the replica gives its own 400).
            #expect(notJSON.status == .badRequest)
        }
    }

    @Test func pipelinedAndChunkedRequestsAreAnsweredInOrder() async throws {
        try await withRouter(2) { router, _ in
            let raw = try await RawConnection.connect(port: router.proxy.port)
            var batch = ""
            for i in 0..<3 {
                let body = #"{"model":"cacheroute-demo","prompt":"pipelined \#(i)","max_tokens":1}"#
                batch += "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)"
            }
            let body = #"{"model":"cacheroute-demo","prompt":"chunked","max_tokens":1}"#
            let half = body.utf8.count / 2
            let a = String(body.prefix(half)), b = String(body.dropFirst(half))
            batch += "POST /v1/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            batch += "\(String(a.utf8.count, radix: 16))\r\n\(a)\r\n\(String(b.utf8.count, radix: 16))\r\n\(b)\r\n0\r\n\r\n"
            try await raw.send(batch)
            let text = try await raw.wait { $0.components(separatedBy: "HTTP/1.1 200").count == 5 }
            #expect(text.components(separatedBy: "HTTP/1.1 200").count == 5, "\(text)")
            #expect(!raw.isClosed)
            await raw.close()
            // HTTP/1.0 without keep-alive: answered, then closed.
            let old = try await RawConnection.connect(port: router.proxy.port)
            try await old.send("POST /v1/completions HTTP/1.0\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)")
            #expect(try await old.waitForClose())
            #expect(old.text.hasPrefix("HTTP/1.1 200"))
        }
    }

    @Test func aSlowClientCannotHoldTheServer() async throws {
        try await withRouter(1, config: { c, _ in
            c.limits.headerTimeout = 0.5
            c.limits.idleTimeout = 1
        }) { router, _ in
            let loris = try await RawConnection.connect(port: router.proxy.port)
            try await loris.send("POST /v1/completions HTTP/1.1\r\nhost: x\r\n")
            for _ in 0..<3 {
                try await Task.sleep(for: .milliseconds(200))
                try? await loris.send("x-slow: 1\r\n")
            }
            #expect(try await loris.waitForClose(timeout: 3))
            #expect(loris.text.isEmpty || loris.text.hasPrefix("HTTP/1.1 408"))
            // An idle keep-alive connection is closed after idle_timeout.
            let idle = try await RawConnection.connect(port: router.proxy.port)
            try await idle.send("GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            #expect(try await idle.waitForClose(timeout: 4))
            #expect(idle.text.hasPrefix("HTTP/1.1 200"))
        }
    }

    @Test func connectionsBeyondTheLimitAreClosedAndTheSlotComesBack() async throws {
        try await withRouter(1, config: { c, _ in c.limits.maxConnections = 2 }) { router, _ in
            let request = "GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
            let first = try await RawConnection.connect(port: router.proxy.port)
            let second = try await RawConnection.connect(port: router.proxy.port)
            for connection in [first, second] {
                try await connection.send(request)
                _ = try await connection.wait { $0.contains("\r\n\r\n") }
            }
            // Both held open (keep-alive): a third is closed without an answer.
            let third = try await RawConnection.connect(port: router.proxy.port)
            try? await third.send(request)
            #expect(try await third.waitForClose(timeout: 3))
            #expect(third.text.isEmpty)
            // Once one leaves, a new connection is served.
            await first.close()
            var served = false
            for _ in 0..<50 where !served {
                let next = try await RawConnection.connect(port: router.proxy.port)
                try? await next.send(request)
                served = ((try? await next.wait(timeout: 0.5) { $0.hasPrefix("HTTP/1.1 200") }) != nil)
                await next.close()
            }
            #expect(served)
            #expect(router.proxy.server.connectionCount <= 2)
            await second.close()
        }
    }

    @Test func reloadUnderTrafficLosesNothing() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cacheroute-reload-\(UInt32.random(in: 0...UInt32.max)).yaml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try await TestSupport.withEmulators(3) { servers in
            func yaml(_ replicas: [EmulatorServer]) -> String {
                "listen: 127.0.0.1:0\nlogging: {access_log: false}\nreplicas:\n"
                    + replicas.map { "  - {name: \($0.replica.settings.name), url: \"http://127.0.0.1:\($0.port)\"}\n" }.joined()
            }
            try yaml(servers).write(toFile: path, atomically: true, encoding: .utf8)
            var config = try RouterConfiguration.load(path: path)
            config.listen = ListenAddress(host: "127.0.0.1", port: 0)
            config.adminListen = ListenAddress(host: "127.0.0.1", port: 0)
            let runtime = try await RouterRuntime.start(config: config, configPath: path, logger: TestSupport.logger)
            let port = runtime.proxy.port
            let results = try await withThrowingTaskGroup(of: [HTTPResponseStatus].self) { group in
                for worker in 0..<6 {
                    group.addTask {
                        var statuses: [HTTPResponseStatus] = []
                        for i in 0..<40 {
                            let stream = i % 4 == 0
                            let r = try await TestSupport.post(port, "/v1/chat/completions", chatBody(session: worker * 100 + i % 7, turns: 1 + i % 3, stream: stream))
                            statuses.append(r.status)
                        }
                        return statuses
                    }
                }
                group.addTask {
                    // Membership changes while requests fly: drop a replica, add it back, reorder.
                    for round in 0..<6 {
                        try await Task.sleep(for: .milliseconds(40))
                        let set = round % 2 == 0 ? Array(servers.prefix(2)) : servers.reversed()
                        try yaml(set).write(toFile: path, atomically: true, encoding: .utf8)
                        #expect(runtime.reload?.reload(reason: "test") == true)
                    }
                    return []
                }
                var all: [HTTPResponseStatus] = []
                for try await statuses in group { all += statuses }
                return all
            }
            await runtime.stop()
            #expect(results.count == 240)
            #expect(results.allSatisfy { $0 == .ok }, "\(results.filter { $0 != .ok })")
        }
    }

    @Test func aBadReloadKeepsTheRunningConfiguration() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cacheroute-bad-\(UInt32.random(in: 0...UInt32.max)).yaml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try await TestSupport.withEmulators(2) { servers in
            let good = "listen: 127.0.0.1:0\nlogging: {access_log: false}\nreplicas:\n"
                + servers.map { "  - {name: \($0.replica.settings.name), url: \"http://127.0.0.1:\($0.port)\"}\n" }.joined()
            try good.write(toFile: path, atomically: true, encoding: .utf8)
            var config = try RouterConfiguration.load(path: path)
            config.listen = ListenAddress(host: "127.0.0.1", port: 0)
            config.adminListen = ListenAddress(host: "127.0.0.1", port: 0)
            let runtime = try await RouterRuntime.start(config: config, configPath: path, logger: TestSupport.logger)
            let before = runtime.state.version
            try "replicas:\n  - {name: r1, url: ftp://nope}\nrouting: {load: {factor: -1}}\n".write(toFile: path, atomically: true, encoding: .utf8)
            #expect(runtime.reload?.reload(reason: "test") == false)
            #expect(runtime.state.version == before)
            #expect(runtime.state.fleet.replicas.count == 2)
            #expect(runtime.state.reloadFailures == 1)
            let r = try await TestSupport.post(runtime.proxy.port, "/v1/chat/completions", chatBody(session: 7))
            #expect(r.status == .ok)
            await runtime.stop()
        }
    }

    @Test func shutdownDrainsAStreamInFlight() async throws {
        try await TestSupport.withEmulators(1, configure: { s, _ in
            s.instant = false
            s.timing.speed = 1
            s.timing.stepBaseSeconds = 0.03
        }) { servers in
            let c = testConfiguration([ReplicaSpec(name: "r1", url: "http://127.0.0.1:\(servers[0].port)")])
            let runtime = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
            let body = chatBody(session: 8, stream: true, maxTokens: 20)
            let stream = try await TestSupport.client.stream(
                .post(host: "127.0.0.1", port: runtime.proxy.port, path: "/v1/chat/completions", json: Array(body.utf8)),
                connectTimeout: 2,
                responseTimeout: 5
            )
            async let stopped: Void = runtime.stop(drain: 5)
            var text = ""
            for try await chunk in stream.body { text += String(buffer: chunk) }
            await stopped
            #expect(TestSupport.sseEvents(text).last == "[DONE]")
        }
    }

    @Test func theOpenAIClientWorksThroughTheRouter() async throws {
        try await withRouter(2, emulator: { s, _ in
            s.instant = false
            s.timing.speed = 20
        }) { router, _ in
            guard let result = try await TestSupport.openAIClientCheck(port: router.proxy.port, chatArguments: #",extra_headers={"x-session-id": "abc"}"#) else {
                print("skipped: python3 with the openai package is not available (pip install openai)")
                return
            }
            #expect(result.passed, "\(result.output)")
        }
    }
}

/// Keeps what is logged to it, for tests of log lines.
struct CapturingLogHandler: LogHandler {
    let records: NIOLockedValueBox<[(message: String, metadata: Logger.Metadata)]>
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = self.metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 })
        self.records.withLockedValue { $0.append((event.message.description, merged)) }
    }
}

@Suite struct AccessLogTests {
    @Test func oneLinePerRequestWithItsFactsAndNoPromptText() async throws {
        let records = NIOLockedValueBox<[(message: String, metadata: Logger.Metadata)]>([])
        let access = Logger(label: "cacheroute.access") { _ in CapturingLogHandler(records: records) }
        try await TestSupport.withEmulators(2) { servers in
            var c = testConfiguration(servers.map { ReplicaSpec(name: $0.replica.settings.name, url: "http://127.0.0.1:\($0.port)") })
            c.logging.accessLog = true
            let router = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger, accessLogger: access)
            let secret = "the-secret-prompt-words \(system)"
            let body = #"{"model":"cacheroute-demo","max_tokens":2,"messages":[{"role":"user","content":"\#(secret)"}]}"#
            let ok = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", body, headers: ["x-request-id": "log-test-1", "x-session-id": "session-zz9"])
            let missing = try await TestSupport.get(router.proxy.port, "/nowhere")
            await router.stop()
            #expect(ok.status == .ok && missing.status == .notFound)
            let lines = records.withLockedValue { $0 }
            #expect(lines.count == 2)
            let first = try #require(lines.first).metadata
            #expect(first["request_id"]?.description == "log-test-1")
            #expect(first["client"]?.description == "127.0.0.1")
            #expect(first["status"]?.description == "200")
            #expect(first["route"]?.description == "chat")
            #expect(first["replica"]?.description == ok.headers["x-cacheroute-replica"].first)
            #expect(first["tier"]?.description == ok.headers["x-cacheroute-tier"].first)
            #expect(first["ms"] != nil && first["ttfb_ms"] != nil && first["bytes_in"]?.description == "\(body.utf8.count)")
            #expect(lines.last?.metadata["status"]?.description == "404")
            // Never the prompt, nor the session id.
            for (_, metadata) in lines {
                for value in metadata.values {
                    #expect(!value.description.contains("secret-prompt") && !value.description.contains("session-zz9"))
                }
            }
        }
    }
}
