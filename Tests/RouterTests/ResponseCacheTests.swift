import Admin
import CacheRouteRuntime
import CacheStore
import DataPlane
import Telemetry
import CacheRouteTestSupport
import FastJSON
import Foundation
import HTTPTransport
import NIOConcurrencyHelpers
import NIOHTTP1
import ReplicaEmulator
import ResponseCache
import RouterConfig
import RoutingCore
import Testing

/// The response cache in front of a fleet: exact hits answered without a replica, streams
/// replayed byte for byte but for ids and times, what is never stored, TTLs, invalidation, Redis.
@Suite(.serialized)
struct ResponseCacheTests {
    static func body(_ text: String, stream: Bool = false, extra: String = "") -> String {
        #"{"model":"cacheroute-demo","messages":[{"role":"user","content":"\#(text)"}],"temperature":0,"max_tokens":6,"stream":\#(stream)\#(extra)}"#
    }

    func withCachedRouter(
        configure: (inout RouterConfiguration) -> Void = { _ in }, _ body: (RouterRuntime, [EmulatorServer]) async throws -> Void
    ) async throws {
        try await TestSupport.withEmulators(1) { servers in
            var c = testConfiguration(servers.map { ReplicaSpec(name: $0.replica.settings.name, url: "http://127.0.0.1:\($0.port)") })
            c.cache.enabled = true
            c.cache.defaultMode = .exact
            configure(&c)
            let router = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
            do {
                try await body(router, servers)
            } catch {
                await router.stop()
                throw error
            }
            await router.stop()
        }
    }

    func post(_ router: RouterRuntime, _ body: String, headers: HTTPHeaders = [:]) async throws -> (HTTPClientResponse, String) {
        let r = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", body, headers: headers)
        return (r, r.headers["x-cacheroute-cache"].first ?? "-")
    }

    /// Replaces every id and creation time so two answers compare on their content.
    static func normalized(_ text: String) -> String {
        var t = text.replacingOccurrences(of: #""id":"[^"]*""#, with: #""id":"X""#, options: .regularExpression)
        t = t.replacingOccurrences(of: #""created":[0-9]+"#, with: #""created":0"#, options: .regularExpression)
        return t
    }

    @Test func exactHitsNeverReachAReplica() async throws {
        try await withCachedRouter { router, servers in
            let (first, r1) = try await post(router, Self.body("one"))
            #expect(first.status == .ok && r1 == "miss")
            let calls = servers[0].replica.stats.requests
            for _ in 0..<20 {
                let (again, r) = try await post(router, Self.body("one"))
                #expect(again.status == .ok && r == "hit-exact")
                #expect(again.headers["x-cacheroute-replica"].isEmpty)
                #expect(again.headers["age"].first != nil)
                let doc = try JSONValue.parse(again.bodyBytes)
                #expect(doc["choices"]?[0]?["message"]?["content"] == (try JSONValue.parse(first.bodyBytes))["choices"]?[0]?["message"]?["content"])
                #expect(doc["id"] != (try JSONValue.parse(first.bodyBytes))["id"])
                #expect(doc["usage"]?["prompt_tokens_details"]?["cached_tokens"] == doc["usage"]?["prompt_tokens"])
            }
            #expect(servers[0].replica.stats.requests == calls, "a hit called the replica")
            // Off by request, and the body's `cache` member never reaches the replica.
            let (off, r2) = try await post(router, Self.body("one"), headers: ["x-cacheroute-cache": "off"])
            #expect(off.status == .ok && r2 == "bypass")
            let (_, r3) = try await post(router, Self.body("two", extra: #","cache":{"mode":"exact"}"#))
            #expect(r3 == "miss")
            let metrics = String(decoding: router.metrics.render(), as: UTF8.self)
            #expect(metrics.contains(#"cacheroute_cache_requests_total{result="hit_exact"} 20"#), "\(metrics)")
        }
    }

    @Test func streamedHitReplaysTheStreamByteForByte() async throws {
        try await withCachedRouter { router, servers in
            let (live, r1) = try await post(router, Self.body("stream me", stream: true))
            #expect(r1 == "miss")
            let (hit, r2) = try await post(router, Self.body("stream me", stream: true))
            #expect(r2 == "hit-exact")
            #expect(hit.headers["content-type"].first?.hasPrefix("text/event-stream") == true)
            #expect(Self.normalized(hit.bodyText) == Self.normalized(live.bodyText))
            #expect(hit.bodyText != live.bodyText, "ids should be fresh")
            #expect(TestSupport.sseEvents(hit.bodyText).last == "[DONE]")
            // One fresh id for the whole stream.
            let ids = Set(TestSupport.sseEvents(hit.bodyText).dropLast().compactMap { try? JSONValue.parse($0)["id"]?.stringValue })
            #expect(ids.count == 1)
        }
    }

    @Test func pacedReplaySpreadsTheEvents() async throws {
        try await withCachedRouter(configure: { $0.cache.streamPacingSeconds = 0.02 }) { router, _ in
            _ = try await post(router, Self.body("paced", stream: true))
            let started = Date()
            let (hit, r) = try await post(router, Self.body("paced", stream: true))
            #expect(r == "hit-exact" && TestSupport.sseEvents(hit.bodyText).count == 9)
            #expect(Date().timeIntervalSince(started) >= 0.15)
            // The connection serves the next request after the replay.
            let (_, r2) = try await post(router, Self.body("paced", stream: true))
            #expect(r2 == "hit-exact")
        }
    }

    @Test func errorsTruncatedStreamsAndNoStoreAreNotStored() async throws {
        try await withCachedRouter { router, servers in
            var fault = servers[0].replica.faults
            fault.mode = .dieMidStream
            fault.afterChunks = 2
            servers[0].replica.setFaults(fault)
            _ = try? await post(router, Self.body("cut", stream: true))
            fault.mode = .error500
            servers[0].replica.setFaults(fault)
            _ = try await post(router, Self.body("boom"))
            fault.mode = .none
            servers[0].replica.setFaults(fault)
            #expect(try await post(router, Self.body("cut", stream: true)).1 == "miss")
            #expect(try await post(router, Self.body("boom")).1 == "miss")
            // no-store: looked up, not stored.
            let (_, r) = try await post(router, Self.body("private"), headers: ["cache-control": "no-store"])
            #expect(r == "miss")
            #expect(try await post(router, Self.body("private"), headers: ["cache-control": "no-store"]).1 == "miss")
            // no-cache: not looked up, stored.
            #expect(try await post(router, Self.body("boom"), headers: ["cache-control": "no-cache"]).1 == "miss")
            // Sampled requests bypass.
            let sampled = Self.body("s").replacingOccurrences(of: #""temperature":0"#, with: #""temperature":0.8"#)
            let (_, rs) = try await post(router, sampled)
            #expect(rs == "bypass")
            let stats = router.cache!.stats()
            #expect(stats.refused["unfinished"] == nil && stats.refused["error"] == nil)  // a cut stream or a 500 never reaches the store
            #expect(stats.stores == 3, "\(stats)")
        }
    }

    @Test func ttlExpiresEntries() async throws {
        try await withCachedRouter(configure: { $0.cache.ttlSeconds = 1 }) { router, _ in
            _ = try await post(router, Self.body("short"))
            #expect(try await post(router, Self.body("short")).1 == "hit-exact")
            try await Task.sleep(for: .milliseconds(1100))
            #expect(try await post(router, Self.body("short")).1 == "miss")
        }
    }

    @Test func adminDeletesAllByScopeOrKey() async throws {
        try await withCachedRouter { router, _ in
            let (a, _) = try await post(router, Self.body("a"))
            _ = try await post(router, Self.body("b"))
            let key = try #require(a.headers["x-cacheroute-cache-key"].first)
            let admin = router.admin!.port
            func delete(_ query: String) async throws -> HTTPClientResponse {
                try await TestSupport.client.execute(HTTPClientRequest(host: "127.0.0.1", port: admin, method: .DELETE, path: "/admin/cache" + query), timeout: 5)
            }
            let one = try await delete("?key=" + key)
            #expect(one.status == .ok && one.bodyText.contains(#""deleted":1"#), "\(one.bodyText)")
            #expect(try await post(router, Self.body("a")).1 == "miss")
            #expect(try await post(router, Self.body("b")).1 == "hit-exact")
            let scope = try await delete("?model=cacheroute-demo")
            #expect(scope.bodyText.contains(#""deleted":2"#), "\(scope.bodyText)")
            #expect(try await post(router, Self.body("b")).1 == "miss")
            let all = try await delete("")
            #expect(all.bodyText.contains(#""deleted":1"#), "\(all.bodyText)")
            #expect(try await delete("?bogus=1").status == .badRequest)
            #expect(try await delete("?key=zz").status == .badRequest)
        }
    }

    @Test func officialClientReadsHits() async throws {
        try await withCachedRouter { router, _ in
            let script = """
                import openai
                c = openai.OpenAI(base_url="http://127.0.0.1:\(router.proxy.port)/v1", api_key="none", max_retries=0)
                args = dict(model="cacheroute-demo", messages=[{"role": "user", "content": "client"}], max_tokens=5, temperature=0)
                a = c.chat.completions.with_raw_response.create(**args)
                b = c.chat.completions.with_raw_response.create(**args)
                assert a.headers["x-cacheroute-cache"] == "miss" and b.headers["x-cacheroute-cache"] == "hit-exact", (a.headers, b.headers)
                assert a.parse().choices[0].message.content == b.parse().choices[0].message.content
                def text(stream): return "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
                s1 = text(c.chat.completions.create(stream=True, **args))
                r = c.chat.completions.with_raw_response.create(stream=True, **args)
                assert r.headers["x-cacheroute-cache"] == "hit-exact", r.headers
                assert text(r.parse()) == s1 and len(s1) > 0
                # A JSON answer served as a stream (converted), read by the client.
                args2 = dict(args, messages=[{"role": "user", "content": "converted"}])
                whole = c.chat.completions.create(**args2).choices[0].message.content
                r2 = c.chat.completions.with_raw_response.create(stream=True, **args2)
                assert r2.headers["x-cacheroute-cache"] == "hit-exact" and text(r2.parse()) == whole, r2.headers
                print("ok")
                """
            guard let (status, output) = try await TestSupport.python(script, requires: "openai") else { return }
            #expect(status == 0 && output.contains("ok"), "\(output)")
        }
    }

    @Test func anthropicClientReadsHits() async throws {
        try await withCachedRouter { router, _ in
            let script = """
                import anthropic
                c = anthropic.Anthropic(base_url="http://127.0.0.1:\(router.proxy.port)", api_key="none", max_retries=0)
                args = dict(model="cacheroute-demo", max_tokens=5, extra_body={"temperature": 0}, messages=[{"role": "user", "content": "Hello"}])
                a = c.messages.with_raw_response.create(**args)
                b = c.messages.with_raw_response.create(**args)
                assert a.headers["x-cacheroute-cache"] == "miss" and b.headers["x-cacheroute-cache"] == "hit-exact", (a.headers, b.headers)
                ma, mb = a.parse(), b.parse()
                assert ma.content[0].text == mb.content[0].text and mb.id != ma.id
                assert mb.usage.cache_read_input_tokens == ma.usage.input_tokens + (ma.usage.cache_read_input_tokens or 0), mb.usage
                with c.messages.stream(**dict(args, messages=[{"role": "user", "content": "Streamed"}])) as s:
                    live = "".join(s.text_stream)
                with c.messages.stream(**dict(args, messages=[{"role": "user", "content": "Streamed"}])) as s:
                    again = "".join(s.text_stream)
                assert live == again and live, (live, again)
                print("ok")
                """
            guard let (status, output) = try await TestSupport.python(script, requires: "anthropic") else { return }
            #expect(status == 0 && output.contains("ok"), "\(output)")
        }
    }

    /// Two routers share one Redis; killing it fails no request; it recovers when Redis returns.
    @Test func redisSharedAndFailingSafely() async throws {
        guard let server = TestSupport.which("redis-server") else {
            print("skipped: redis-server is not installed (scripts/setup --test installs it)")
            return
        }
        let port = Int.random(in: 20000..<30000)
        func startRedis() throws -> Process {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: server)
            p.arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            return p
        }
        var redis = try startRedis()
        defer { kill(redis.processIdentifier, SIGKILL) }
        try await Task.sleep(for: .milliseconds(300))
        try await TestSupport.withEmulators(1) { servers in
            var c = testConfiguration(servers.map { ReplicaSpec(name: $0.replica.settings.name, url: "http://127.0.0.1:\($0.port)") })
            c.cache.enabled = true
            c.cache.defaultMode = .exact
            c.cache.backend = .redis
            c.cache.redis.port = port
            c.cache.redis.keyPrefix = "test\(port):"
            let a = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
            let b = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
            defer {
                Task {
                    await a.stop()
                    await b.stop()
                }
            }
            #expect(try await post(a, Self.body("shared")).1 == "miss")
            #expect(try await post(b, Self.body("shared")).1 == "hit-exact")
            // The other form from the shared entry (converted).
            #expect(try await post(b, Self.body("shared", stream: true)).1 == "hit-exact")
            kill(redis.processIdentifier, SIGKILL)
            try await Task.sleep(for: .milliseconds(200))  // (Process.waitUntilExit spins on Linux)
            for _ in 0..<10 {
                let (r, result) = try await post(a, Self.body("shared"))
                #expect(r.status == .ok && result == "miss")
            }
            #expect(a.cache!.stats().redisErrors > 0)
            redis = try startRedis()
            try await Task.sleep(for: .milliseconds(1300))
            var recovered = false
            for _ in 0..<10 where !recovered {
                _ = try await post(a, Self.body("again"))
                recovered = try await post(b, Self.body("again")).1 == "hit-exact"
                if !recovered { try await Task.sleep(for: .milliseconds(300)) }
            }
            #expect(recovered)
        }
    }

    /// The semantic gates, with an embeddings endpoint that gives every text the same vector
    /// (similarity 1): only the gates keep requests apart. A dead endpoint costs nothing but the hit.
    @Test func semanticHitsStayWithinTheirGates() async throws {
        let vector = (0..<8).map { _ in "0.5" }.joined(separator: ",")
        let doc = #"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[\#(vector)]}],"model":"m"}"#
        let embeddings = RecordingReplica(response: "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: \(doc.utf8.count)\r\n\r\n\(doc)")
        let server = try await LoopbackServer.start { RecordingReplica.Handler(embeddings) }
        defer { Task { await server.stop() } }
        try await withCachedRouter(configure: { c in
            c.cache.defaultMode = .semantic
            c.cache.semantic.embeddingsURL = "http://127.0.0.1:\(server.port)/v1/embeddings"
        }) { router, servers in
            let (_, first) = try await post(router, Self.body("How do I reset my password?"))
            #expect(first == "miss")
            let calls = servers[0].replica.stats.requests
            let (hit, r) = try await post(router, Self.body("What are the steps to reset my password?"))
            #expect(r == "hit-semantic" && hit.headers["x-cacheroute-cache-similarity"].first == "1.0", "\(hit.headers)")
            #expect(servers[0].replica.stats.requests == calls)
            // The embedded text is the last user turn only.
            #expect(embeddings.requests.withLockedValue { $0.last.map { String(decoding: $0.body, as: UTF8.self) } }?.contains("steps to reset") == true)
            let tools = #","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{}}}}]"#
            let gated: [(String, HTTPHeaders)] = [
                (Self.body("Reset password?"), ["x-tenant": "other"]),
                (Self.body("Reset password?").replacingOccurrences(of: #""temperature":0"#, with: #""temperature":0.5,"seed":1"#), [:]),
                (Self.body("Reset password?", extra: tools), [:]),
                (Self.body("Reset password?").replacingOccurrences(of: #""max_tokens":6"#, with: #""max_tokens":7"#), [:]),
            ]
            for (body, headers) in gated {
                let (_, result) = try await post(router, body, headers: headers)
                #expect(result == "miss", "\(body) \(headers)")
            }
            // Exact mode asked for: no semantic hit.
            #expect(try await post(router, Self.body("Password reset how?"), headers: ["x-cacheroute-cache": "exact"]).1 == "miss")
            await server.stop()
            let (answer, down) = try await post(router, Self.body("Totally new question"))
            #expect(answer.status == .ok && down == "miss")
            #expect(router.cache!.stats().embeddingErrors >= 1)
        }
    }

    /// A stream's deltas joined (chat content, completions text, Responses output text, Messages text).
    static func joinedText(_ sse: String) -> String {
        var out = ""
        for data in TestSupport.sseEvents(sse) {
            guard let e = try? JSONValue.parse(data) else { continue }
            if let t = e["choices"]?[0]?["delta"]?["content"]?.stringValue {
                out += t
            } else if let t = e["choices"]?[0]?["text"]?.stringValue {
                out += t
            } else if e["type"]?.stringValue == "response.output_text.delta", let t = e["delta"]?.stringValue {
                out += t
            } else if let t = e["delta"]?["text"]?.stringValue {
                out += t
            }
        }
        return out
    }

    /// The key leaves `stream` out: an answer stored in one form serves the other.
    @Test func oneFormServesTheOther() async throws {
        try await withCachedRouter { router, _ in
            let port = router.proxy.port
            // Chat: stream stored, JSON served; JSON stored, stream served.
            let (live, _) = try await post(router, Self.body("forms", stream: true))
            let (json, r1) = try await post(router, Self.body("forms"))
            #expect(r1 == "hit-exact")
            #expect((try JSONValue.parse(json.bodyBytes))["choices"]?[0]?["message"]?["content"]?.stringValue == Self.joinedText(live.bodyText))
            let (liveJSON, _) = try await post(router, Self.body("forms 2"))
            let (stream, r2) = try await post(router, Self.body("forms 2", stream: true))
            #expect(r2 == "hit-exact" && TestSupport.sseEvents(stream.bodyText).last == "[DONE]")
            #expect(Self.joinedText(stream.bodyText) == (try JSONValue.parse(liveJSON.bodyBytes))["choices"]?[0]?["message"]?["content"]?.stringValue)
            // Completions, Responses (store: false) and Messages: stream stored, JSON served.
            let cases: [(path: String, body: String, text: (JSONValue) -> String?)] = [
                ("/v1/completions", #"{"model":"cacheroute-demo","prompt":"Once","temperature":0,"max_tokens":5,"stream":true}"#, { $0["choices"]?[0]?["text"]?.stringValue }),
                ("/v1/responses", #"{"model":"cacheroute-demo","input":"Hello","temperature":0,"max_output_tokens":5,"store":false,"stream":true}"#, {
                    $0["output"]?[0]?["content"]?[0]?["text"]?.stringValue
                }),
                ("/v1/messages", #"{"model":"cacheroute-demo","messages":[{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":5,"stream":true}"#, {
                    $0["content"]?[0]?["text"]?.stringValue
                }),
            ]
            for c in cases {
                let streamed = try await TestSupport.post(port, c.path, c.body)
                #expect(streamed.headers["x-cacheroute-cache"].first == "miss", "\(c.path) \(streamed.headers)")
                let whole = try await TestSupport.post(port, c.path, c.body.replacingOccurrences(of: #","stream":true"#, with: ""))
                #expect(whole.headers["x-cacheroute-cache"].first == "hit-exact", "\(c.path)")
                let doc = try JSONValue.parse(whole.bodyBytes)
                #expect(c.text(doc) == Self.joinedText(streamed.bodyText) && !(c.text(doc) ?? "").isEmpty, "\(c.path): \(whole.bodyText)")
            }
        }
    }
}
