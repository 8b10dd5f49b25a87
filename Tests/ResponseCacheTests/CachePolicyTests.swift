import FastJSON
import Foundation
import ResponseCache
import RoutingCore
import Testing

@Suite struct CacheKeyTests {
    static var settings: CacheSettings {
        var s = CacheSettings()
        s.enabled = true
        s.defaultMode = .exact
        return s
    }

    static let base = #"{"model":"m","messages":[{"role":"system","content":"You help."},{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":16}"#

    static func analyze(
        _ body: String, api: RequestAPI = .chat, path: String = "/v1/chat/completions", tenant: String = "", headers: [String: String] = [:],
        settings: CacheSettings = Self.settings
    ) -> CachePolicy.Analysis {
        Array(body.utf8).withUnsafeBytes { raw in
            CachePolicy.analyze(api: api, path: path, body: raw, tenant: tenant, header: { headers[$0] }, settings: settings)
        }
    }

    static func request(_ body: String, api: RequestAPI = .chat, path: String = "/v1/chat/completions", tenant: String = "", headers: [String: String] = [:])
        -> CacheRequest?
    {
        if case .use(let r) = Self.analyze(body, api: api, path: path, tenant: tenant, headers: headers).decision { return r }
        return nil
    }

    static func key(_ body: String, api: RequestAPI = .chat, path: String = "/v1/chat/completions", tenant: String = "") -> CacheKey? {
        Self.request(body, api: api, path: path, tenant: tenant)?.key
    }

    /// Every sampling and output parameter, the prompt, tools, the salt, the model, the path and
    /// the tenant change the key.
    @Test func fieldsThatChangeTheAnswerChangeTheKey() throws {
        let k = try #require(Self.key(Self.base))
        let changes = [
            #""temperature":0,"max_tokens":16"#: #""temperature":0,"max_tokens":17"#,
            #""model":"m""#: #""model":"m2""#,
            #""content":"Hi""#: #""content":"Hi!""#,
            #""content":"You help.""#: #""content":"You help!""#,
        ]
        for (from, to) in changes {
            let other = try #require(Self.key(Self.base.replacingOccurrences(of: from, with: to)))
            #expect(other != k, "\(to)")
        }
        let added = [
            #""top_p":0.5"#, #""seed":1"#, #""stop":["\n"]"#, #""response_format":{"type":"json_object"}"#, #""n":2"#, #""logprobs":true"#,
            #""tools":[{"type":"function","function":{"name":"f"}}]"#, #""cache_salt":"t1""#, #""presence_penalty":0.1"#, #""tool_choice":"none""#,
        ]
        for member in added {
            let other = try #require(Self.key(Self.base.replacingOccurrences(of: #""max_tokens":16"#, with: #""max_tokens":16,"# + member)))
            #expect(other != k, "\(member)")
        }
        #expect(Self.key(Self.base, tenant: "acme") != k)
        #expect(Self.key(Self.base.replacingOccurrences(of: "\"messages\"", with: "\"prompt\":\"x\",\"messages\""), path: "/v1/other") != k)
        let completions = Self.key(#"{"model":"m","prompt":"Hi","temperature":0}"#, api: .completions, path: "/v1/completions")
        let chat = Self.key(#"{"model":"m","prompt":"Hi","temperature":0}"#)
        #expect(completions != chat)
    }

    /// Delivery and identity fields, member order and whitespace do not.
    @Test func fieldsThatDoNotChangeTheAnswerKeepTheKey() throws {
        let k = try #require(Self.key(Self.base))
        let same = [
            Self.base.replacingOccurrences(of: #""max_tokens":16"#, with: #""max_tokens":16,"stream":true,"stream_options":{"include_usage":true}"#),
            Self.base.replacingOccurrences(of: #""max_tokens":16"#, with: #""max_tokens":16,"user":"u-1","request_id":"abc","metadata":{"a":"b"}"#),
            Self.base.replacingOccurrences(of: #""max_tokens":16"#, with: #""max_tokens":16,"cache":{"mode":"exact"}"#),
            #"{ "max_tokens": 16, "temperature": 0, "messages": [ {"content":"You help.","role":"system"}, {"role":"user","content":"Hi"} ], "model": "m" }"#,
        ]
        for body in same { #expect(Self.key(body) == k, "\(body)") }
    }

    @Test func sampledRequestsBypassUnlessAllowed() throws {
        let sampled = Self.base.replacingOccurrences(of: #""temperature":0"#, with: #""temperature":0.7"#)
        guard case .bypass(let why) = Self.analyze(sampled).decision else { Issue.record("sampled was cached"); return }
        #expect(why.contains("sampled"))
        let unset = Self.base.replacingOccurrences(of: #""temperature":0,"#, with: "")
        guard case .bypass = Self.analyze(unset).decision else { Issue.record("unset temperature was cached"); return }
        #expect(Self.key(sampled.replacingOccurrences(of: #""max_tokens":16"#, with: #""max_tokens":16,"seed":7"#)) != nil)
        var allowing = Self.settings
        allowing.allowSampled = true
        guard case .use = Self.analyze(sampled, settings: allowing).decision else { Issue.record("allow_sampled ignored"); return }
    }

    @Test func optInByHeaderBodyAndRoute() throws {
        var s = Self.settings
        s.defaultMode = .off
        guard case .off = Self.analyze(Self.base, settings: s).decision else { Issue.record("cached by default"); return }
        guard case .use(let viaHeader) = Self.analyze(Self.base, headers: ["x-cacheroute-cache": "exact"], settings: s).decision else {
            Issue.record("header ignored")
            return
        }
        #expect(viaHeader.mode == .exact)
        let withField = Self.base.replacingOccurrences(of: #"{"model""#, with: #"{"cache":{"mode":"exact","ttl":30},"model""#)
        let a = Self.analyze(withField, settings: s)
        guard case .use(let viaBody) = a.decision else { Issue.record("body field ignored"); return }
        #expect(viaBody.ttlSeconds == 30)
        // The member is cut out with its comma: the rest is the request as it would be without it.
        let strip = try #require(a.strip)
        var bytes = Array(withField.utf8)
        bytes.removeSubrange(strip)
        #expect(String(decoding: bytes, as: UTF8.self) == Self.base)
        // A route turns it on for a model and can forbid it.
        s.routes = [CacheRoute(match: CacheMatch(model: "m"), mode: .exact), CacheRoute(match: CacheMatch(tenant: "unsafe"), maxMode: .off)]
        guard case .use = Self.analyze(Self.base, settings: s).decision else { Issue.record("route ignored"); return }
        guard case .bypass = Self.analyze(Self.base.replacingOccurrences(of: "\"m\"", with: "\"x\""), tenant: "unsafe", headers: ["x-cacheroute-cache": "exact"], settings: s).decision
        else {
            Issue.record("max_mode off ignored")
            return
        }
        guard case .bypass = Self.analyze(Self.base, headers: ["x-cacheroute-cache": "bogus"], settings: s).decision else {
            Issue.record("a bad header value was accepted")
            return
        }
    }

    @Test func cacheControlIsHonoured() throws {
        let noStore = try #require(Self.request(Self.base, headers: ["cache-control": "no-store"]))
        #expect(!noStore.store && noStore.lookup)
        let noCache = try #require(Self.request(Self.base, headers: ["cache-control": "no-cache"]))
        #expect(noCache.store && !noCache.lookup)
        guard case .bypass = Self.analyze(Self.base, headers: ["cache-control": "no-cache, no-store"]).decision else {
            Issue.record("no-store, no-cache not bypassed")
            return
        }
    }

    @Test func storedResponsesBypass() {
        let body = #"{"model":"m","input":"Hi","temperature":0}"#
        guard case .bypass = Self.analyze(body, api: .responses, path: "/v1/responses").decision else { Issue.record("store default cached"); return }
        #expect(Self.key(body.replacingOccurrences(of: "}", with: #","store":false}"#), api: .responses, path: "/v1/responses") != nil)
    }

    /// The semantic gate: the varying text is the last user turn; everything else must match.
    @Test func semanticQueryTakesTheLastUserTurn() throws {
        var s = Self.settings
        s.defaultMode = .semantic
        s.semantic.embeddingsURL = "http://127.0.0.1:1/v1/embeddings"
        s.semantic.scopeHeaders = ["x-locale"]
        func query(_ body: String, tenant: String = "", headers: [String: String] = [:]) -> SemanticQuery? {
            guard case .use(let r) = Self.analyze(body, tenant: tenant, headers: headers, settings: s).decision else { return nil }
            return r.semantic
        }
        let q = try #require(query(Self.base))
        #expect(q.text == "Hi")
        let other = try #require(query(Self.base.replacingOccurrences(of: #""content":"Hi""#, with: #""content":"Hello there""#)))
        #expect(other.gate == q.gate && other.text == "Hello there")
        let gates = [
            query(Self.base, tenant: "t2"),
            query(Self.base.replacingOccurrences(of: #""temperature":0"#, with: #""temperature":0,"seed":3"#)),
            query(Self.base.replacingOccurrences(of: "You help.", with: "You help!")),
            query(Self.base.replacingOccurrences(of: #""max_tokens":16"#, with: #""max_tokens":16,"tools":[{"type":"function","function":{"name":"f"}}]"#)),
            query(Self.base, headers: ["x-locale": "de"]),
        ]
        for g in gates { #expect(g != nil && g!.gate != q.gate) }
        #expect(query(Self.base.replacingOccurrences(of: #""content":"Hi""#, with: #""content":[{"type":"image_url","image_url":{"url":"x"}}]"#)) == nil)
    }

    @Test func malformedBodiesBypass() {
        guard case .bypass = Self.analyze("[1,2]").decision else { Issue.record("array body"); return }
        guard case .bypass = Self.analyze(#"{"model":"#).decision else { Issue.record("cut body"); return }
    }
}

@Suite struct CachedAnswerTests {
    static let chat = #"{"id":"chatcmpl-abc","object":"chat.completion","created":1700000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}"#
    static let stream =
        "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n"
        + "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n"
        + "data: [DONE]\n\n"

    @Test func encodesAndRejectsCorruption() throws {
        let a = CachedAnswer(
            form: .stream, contentType: "text/event-stream", storedAt: 1, expiresAt: 2, id: Array("chatcmpl-abc".utf8), created: Array("1700000000".utf8),
            vector: [0.5, -0.25], body: Array(Self.stream.utf8))
        let bytes = a.encoded()
        #expect(CachedAnswer.decode(bytes) == a)
        var flipped = bytes
        flipped[bytes.count / 2] ^= 1
        #expect(CachedAnswer.decode(flipped) == nil)
        #expect(CachedAnswer.decode(Array(bytes.dropLast(3))) == nil)
        #expect(CachedAnswer.decode(Array("garbage".utf8)) == nil)
    }

    @Test func onlyCompleteSuccessesAreStored() {
        #expect((try? AnswerCheck.inspect(api: .chat, form: .json, body: Array(Self.chat.utf8)).get()) != nil)
        let unfinished = Self.chat.replacingOccurrences(of: #""finish_reason":"stop""#, with: #""finish_reason":null"#)
        #expect(throws: AnswerRefusal.unfinished) { try AnswerCheck.inspect(api: .chat, form: .json, body: Array(unfinished.utf8)).get() }
        #expect(throws: AnswerRefusal.error) {
            try AnswerCheck.inspect(api: .chat, form: .json, body: Array(#"{"error":{"message":"boom"}}"#.utf8)).get()
        }
        #expect((try? AnswerCheck.inspect(api: .chat, form: .stream, body: Array(Self.stream.utf8)).get()) != nil)
        // A stream cut before its end, or that carries an error event, is not stored.
        let cut = String(Self.stream.dropLast("data: [DONE]\n\n".count))
        #expect(throws: AnswerRefusal.unfinished) { try AnswerCheck.inspect(api: .chat, form: .stream, body: Array(cut.utf8)).get() }
        let errored = cut + "data: {\"error\":{\"message\":\"replica failed\"}}\n\ndata: [DONE]\n\n"
        #expect(throws: AnswerRefusal.error) { try AnswerCheck.inspect(api: .chat, form: .stream, body: Array(errored.utf8)).get() }
        let messages =
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\"}}\n\n"
            + "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n"
            + "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        #expect((try? AnswerCheck.inspect(api: .messages, form: .stream, body: Array(messages.utf8)).get())?.id == Array("msg_1".utf8))
        #expect(throws: AnswerRefusal.unfinished) {
            try AnswerCheck.inspect(api: .messages, form: .stream, body: Array(messages.replacingOccurrences(of: "message_stop", with: "ping").utf8)).get()
        }
    }

    /// A streamed replay is the stored stream byte for byte but for the id and the time.
    @Test func replayRewritesOnlyIdAndTime() throws {
        let id = try #require(try? AnswerCheck.inspect(api: .chat, form: .stream, body: Array(Self.stream.utf8)).get())
        let a = CachedAnswer(
            form: .stream, contentType: "text/event-stream", storedAt: 1, expiresAt: 2, id: id.id, created: id.created, body: Array(Self.stream.utf8))
        let fresh = Replay.freshID(like: a.id)
        #expect(String(decoding: fresh, as: UTF8.self).hasPrefix("chatcmpl-cache"))
        let out = String(decoding: Replay.body(a, api: .chat, id: fresh, now: 1800000000), as: UTF8.self)
        let expected = Self.stream.replacingOccurrences(of: "chatcmpl-abc", with: String(decoding: fresh, as: UTF8.self))
            .replacingOccurrences(of: "1700000000", with: "1800000000")
        #expect(out == expected)
        #expect(Replay.events(Array(out.utf8)).count == 3)
        // A JSON replay says its prompt was cached.
        let j = try #require(try? AnswerCheck.inspect(api: .chat, form: .json, body: Array(Self.chat.utf8)).get())
        let ja = CachedAnswer(form: .json, contentType: "application/json", storedAt: 1, expiresAt: 2, id: j.id, created: j.created, body: Array(Self.chat.utf8))
        let doc = try JSONValue.parse(Replay.body(ja, api: .chat, id: fresh, now: 5))
        #expect(doc["id"]?.stringValue == String(decoding: fresh, as: UTF8.self))
        #expect(doc["created"]?.intValue == 5)
        #expect(doc["usage"]?["prompt_tokens_details"]?["cached_tokens"]?.intValue == 10)
    }
}

@Suite struct SemanticIndexTests {
    static func key(_ n: UInt64) -> CacheKey { CacheKey(scope: 1, high: 0, low: n) }

    @Test func nearestWithinAGateAndBounded() throws {
        var index = SemanticIndex(maxPerGate: 3, maxVectors: 5)
        let a = try #require(SemanticIndex.normalized([1, 0, 0]))
        let b = try #require(SemanticIndex.normalized([0, 1, 0]))
        index.insert(gate: 1, .init(key: Self.key(1), vector: a, expiresAt: 100))
        index.insert(gate: 1, .init(key: Self.key(2), vector: b, expiresAt: 100))
        let q = try #require(SemanticIndex.normalized([0.9, 0.1, 0]))
        let found = index.nearest(gate: 1, to: q, now: 0)
        let near = try #require(found)
        #expect(near.entry.key == Self.key(1) && near.similarity > 0.99)
        #expect(index.nearest(gate: 2, to: a, now: 0) == nil)
        // Expired entries are not found (and are dropped).
        #expect(index.nearest(gate: 1, to: a, now: 200) == nil)
        #expect(index.count == 0)
        for n in 0..<10 { index.insert(gate: UInt64(n % 3), .init(key: Self.key(UInt64(n)), vector: a, expiresAt: 100)) }
        #expect(index.count <= 5)
    }
}
