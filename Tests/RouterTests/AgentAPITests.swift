import CacheRouteRuntime
import CacheRouteTestSupport
import DataPlane
import FleetState
import NIOConcurrencyHelpers
import ReplicaModel
import ReplicaProbes
import FastJSON
import HTTPTransport
import LiveLoad
import NIOCore
import NIOHTTP1
import NIOPosix
import ReplicaEmulator
import RouterConfig
import RoutingCore
import Testing

/// The agents' APIs through the router: OpenAI Responses (stored responses found again by any
/// router instance) and Anthropic Messages, with the official clients.
@Suite(.serialized)
struct AgentAPITests {
    /// Two router instances in front of the same fleet, used alternately, with the official
    /// `openai` client: a stored multi-turn conversation (streamed and not) keeps finding its
    /// previous response, which only the replica that made it holds.
    @Test func storedResponsesContinueThroughTwoRoutersUsedAlternately() async throws {
        try await TestSupport.withEmulators(3, configure: { s, _ in
            s.instant = false
            s.timing.speed = 40
        }) { servers in
            let c = testConfiguration(servers.map { ReplicaSpec(name: $0.replica.settings.name, url: "http://127.0.0.1:\($0.port)") })
            let a = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
            let b = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
            let gone = StoredResponseID.make(tag: StoredResponseID.tag(replica: "r9"), request: 7)
            let script = """
                import openai, sys
                routers = [openai.OpenAI(base_url=f"http://127.0.0.1:{p}/v1", api_key="none", max_retries=0) for p in (\(a.proxy.port), \(b.proxy.port))]
                failures, prev, ids = 0, None, []
                for conversation in range(3):
                    # Each conversation its own long instructions: they spread over the fleet.
                    instructions = f"You are build assistant {conversation}. Follow the house rules. " * 60
                    prev = None
                    for turn in range(6):
                        c = routers[turn % 2]
                        kw = dict(model="cacheroute-demo", instructions=instructions, input=f"conversation {conversation} step {turn}",
                                  max_output_tokens=4, store=True)
                        if prev:
                            kw["previous_response_id"] = prev
                        try:
                            if turn % 2:
                                with c.responses.stream(**kw) as s:
                                    for _ in s:
                                        pass
                                    r = s.get_final_response()
                            else:
                                r = c.responses.create(**kw)
                            assert r.output_text and r.usage.input_tokens > 0, r
                            if turn > 0:
                                assert r.usage.input_tokens_details.cached_tokens > 0, r.usage
                            prev = r.id
                            ids.append(r.id)
                        except Exception as e:
                            failures += 1
                            print("failure", conversation, turn, repr(e))
                # Every stored response is found again, by either router.
                for i, rid in enumerate(ids):
                    got = routers[i % 2].responses.retrieve(rid)
                    assert got.id == rid and got.output_text, got
                # A response whose replica is gone: vLLM's own not-found error.
                try:
                    routers[0].responses.retrieve("\(gone)")
                    sys.exit("expected NotFoundError")
                except openai.NotFoundError as e:
                    assert e.body["message"] == "Response with id '\(gone)' not found." and e.body["param"] == "response_id", e.body
                try:
                    routers[1].responses.create(model="cacheroute-demo", input="next", previous_response_id="\(gone)")
                    sys.exit("expected NotFoundError")
                except openai.NotFoundError:
                    pass
                # Cancelling a finished response is the holder's own 400.
                try:
                    routers[0].responses.cancel(ids[0])
                    sys.exit("expected BadRequestError")
                except openai.BadRequestError as e:
                    assert "synchronous" in str(e), e
                print("failures", failures)
                print("ok" if failures == 0 else "failed")
                """
            guard let (status, output) = try await TestSupport.python(script, requires: "openai") else {
                print("skipped: python3 with the openai package is not available (pip install openai)")
                await a.stop()
                await b.stop()
                return
            }
            await a.stop()
            await b.stop()
            #expect(status == 0 && output.contains("ok\n") && output.contains("failures 0"), "\(output)")
            // The conversations were spread, and each replica answered only what it held.
            let served = servers.map { $0.replica.stats.requests }
            #expect(served.filter { $0 > 0 }.count >= 2, "\(served)")
        }
    }

    /// The router names each response after the replica that makes it (`request_id`, per
    /// attempt), leaves a client's own `request_id` alone, and forwards the rest of the body as
    /// the client sent it.
    @Test func theRouterNamesResponsesAfterTheirReplica() async throws {
        let body = #"{"id":"resp_x","object":"response","output":[],"usage":{"input_tokens":3,"input_tokens_details":{"cached_tokens":0},"output_tokens":1}}"#
        let replica = RecordingReplica(response: "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)")
        let server = try await LoopbackServer.start { RecordingReplica.Handler(replica) }
        let router = try await RouterRuntime.start(
            config: testConfiguration([ReplicaSpec(name: "rec", url: "http://127.0.0.1:\(server.port)")]), configPath: nil, logger: TestSupport.logger)
        do {
            let plain = #"  {"model":"cacheroute-demo","input":"hello","store":true}"#
            let named = #"{"model":"cacheroute-demo","input":"hello","request_id":"mine-1"}"#
            let big = #"{"model":"cacheroute-demo","input":"\#(String(repeating: "long input ", count: 4000))"}"#
            for text in [plain, named, big] {
                let r = try await TestSupport.post(router.proxy.port, "/v1/responses", text)
                #expect(r.status == .ok)
            }
            let seen = replica.requests.withLockedValue { $0 }
            #expect(seen.count == 3)
            let tag = StoredResponseID.tag(replica: "rec")
            for (request, original) in zip(seen, [plain, big]) where request.body.count != named.utf8.count {
                let text = String(decoding: request.body, as: UTF8.self)
                #expect(text.hasPrefix(#"{"request_id":"resp_cr\#(tag)"#), "\(text.prefix(80))")
                #expect(request.values("content-length") == ["\(request.body.count)"])
                // The rest is the client's body after its opening brace, byte for byte.
                let rest = original.drop { $0 != "{" }.dropFirst()
                #expect(text.hasSuffix(String(rest)))
                let value = try JSONValue.parse(request.body)
                #expect(StoredResponseID.tag(of: value["request_id"]?.stringValue ?? "") == Substring(tag))
            }
            #expect(seen.contains { $0.body == Array(named.utf8) }, "a client's own request_id is left alone")
        } catch {
            Issue.record(error)
        }
        await router.stop()
        await server.stop()
    }

    /// A stored response of a replica that left the fleet: 404 in vLLM's words, from the router,
    /// never an answer from a replica without the conversation; an unhealthy holder: 503.
    @Test func aResponseWhoseReplicaLeftIsNotFoundAndAnUnhealthyHolderIsUnavailable() async throws {
        try await TestSupport.withEmulators(2) { servers in
            let specs = servers.map { ReplicaSpec(name: $0.replica.settings.name, url: "http://127.0.0.1:\($0.port)") }
            var config = testConfiguration(specs)
            ProbeAndAdminTests.fastProbes(&config, servers)
            let both = try await RouterRuntime.start(config: config, configPath: nil, logger: TestSupport.logger)
            let probes = Task { try? await both.probes.run() }
            defer { probes.cancel() }
            let made = try await TestSupport.post(both.proxy.port, "/v1/responses", #"{"model":"cacheroute-demo","input":"remember this","max_output_tokens":2}"#)
            #expect(made.status == .ok)
            let holderName = try #require(made.headers["x-cacheroute-replica"].first)
            let id = try #require(try JSONValue.parse(made.bodyBytes)["id"]?.stringValue)
            let other = try #require(specs.first { $0.name != holderName })
            // A router whose fleet lacks the holder (it left, or was never configured there).
            let without = try await RouterRuntime.start(config: testConfiguration([other]), configPath: nil, logger: TestSupport.logger)
            let follow = try await TestSupport.post(without.proxy.port, "/v1/responses", #"{"model":"cacheroute-demo","input":"and?","previous_response_id":"\#(id)"}"#)
            #expect(follow.status == .notFound)
            let error = try JSONValue.parse(follow.bodyBytes)["error"]
            #expect(error?["message"]?.stringValue == "Response with id '\(id)' not found." && error?["code"]?.intValue == 404)
            #expect(error?["type"]?.stringValue == "invalid_request_error" && error?["param"]?.stringValue == "response_id")
            #expect(try await TestSupport.get(without.proxy.port, "/v1/responses/\(id)").status == .notFound)
            let otherServer = try #require(servers.first { $0.replica.settings.name == other.name })
            #expect(otherServer.replica.stats.requests == 0, "the replica without the conversation never saw it")
            await without.stop()
            // Through the first router: found; then its holder fails its health checks.
            #expect(try await TestSupport.get(both.proxy.port, "/v1/responses/\(id)").status == .ok)
            let holder = try #require(servers.first { $0.replica.settings.name == holderName })
            _ = try await TestSupport.post(holder.port, "/admin/faults", #"{"health":"fail"}"#)
            #expect(await eventually { both.state.health(of: holderName)?.state == .down })
            let down = try await TestSupport.post(both.proxy.port, "/v1/responses", #"{"model":"cacheroute-demo","input":"and?","previous_response_id":"\#(id)"}"#)
            #expect(down.status == .serviceUnavailable)
            #expect(String(buffer: down.body).contains(holderName), "\(String(buffer: down.body))")
            #expect(otherServer.replica.stats.requests == 0)
            probes.cancel()
            await both.stop()
        }
    }

    /// The official `anthropic` client: create and stream with `cache_control`, `count_tokens`,
    /// and Claude-Code-like sessions (long system and tools marked for caching, tool-use turns,
    /// several sessions of two tenants): each session stays on one replica, and the replicas'
    /// own usage shows at least 0.9 of the prompt served from cache after the first turn.
    @Test func claudeCodeLikeSessionsThroughTheAnthropicClient() async throws {
        try await TestSupport.withEmulators(4, configure: { s, _ in
            s.instant = false
            s.timing.speed = 40
        }) { servers in
            let c = testConfiguration(servers.map { ReplicaSpec(name: $0.replica.settings.name, url: "http://127.0.0.1:\($0.port)") })
            let router = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
            let script = """
                import anthropic, json, sys
                c = anthropic.Anthropic(base_url="http://127.0.0.1:\(router.proxy.port)", api_key="none", max_retries=0)
                def system(tenant):
                    return [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.0; cch=%d;" % id(object())},
                            {"type": "text", "text": ("You are Claude Code for tenant %d. Follow the repository rules. " % tenant) * 120,
                             "cache_control": {"type": "ephemeral"}}]
                tools = [{"name": "tool%d" % i, "description": "Runs step %d of the build. " % i * 15,
                          "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}} for i in range(12)]
                tools[-1]["cache_control"] = {"type": "ephemeral"}
                replicas, prompt, cached = {}, 0, 0
                for session in range(6):
                    tenant = session % 2
                    msgs = [{"role": "user", "content": "session %d: fix the failing test" % session}]
                    for turn in range(6):
                        kw = dict(model="cacheroute-demo", max_tokens=6, system=system(tenant), tools=tools, messages=msgs,
                                  metadata={"user_id": "user-%d" % session})
                        if turn % 2:
                            with c.messages.stream(**kw) as s:
                                text = "".join(s.text_stream)
                                r = s.get_final_message()
                                replica = s.response.headers.get("x-cacheroute-replica")
                        else:
                            raw = c.messages.with_raw_response.create(**kw)
                            r = raw.parse()
                            text = r.content[0].text
                            replica = raw.headers.get("x-cacheroute-replica")
                        assert text and r.usage.output_tokens == 6, r
                        replicas.setdefault(session, set()).add(replica)
                        if turn > 0:
                            prompt += r.usage.input_tokens + (r.usage.cache_read_input_tokens or 0)
                            cached += r.usage.cache_read_input_tokens or 0
                        msgs = msgs + [
                            {"role": "assistant", "content": [{"type": "text", "text": text},
                                                               {"type": "tool_use", "id": "tu%d" % turn, "name": "tool1", "input": {"path": "a.swift"}}]},
                            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu%d" % turn, "content": "ok " * 40,
                                                          "cache_control": {"type": "ephemeral"}}]}]
                n = c.messages.count_tokens(model="cacheroute-demo", system=system(0), tools=tools, messages=msgs)
                assert n.input_tokens > 1000, n
                try:
                    c.messages.create(model="missing", max_tokens=3, messages=[{"role": "user", "content": "x"}])
                    sys.exit("expected NotFoundError")
                except anthropic.NotFoundError:
                    pass
                print("replicas", json.dumps({k: sorted(v) for k, v in replicas.items()}))
                print("cached", cached, "of", prompt, round(cached / prompt, 3))
                assert all(len(v) == 1 for v in replicas.values()), replicas
                assert cached >= 0.9 * prompt
                print("ok")
                """
            guard let (status, output) = try await TestSupport.python(script, requires: "anthropic") else {
                print("skipped: python3 with the anthropic package is not available (pip install anthropic)")
                await router.stop()
                return
            }
            await router.stop()
            #expect(status == 0 && output.contains("ok\n"), "\(output)")
            // count_tokens reached a replica but committed nothing there.
            let counted = servers.reduce(0) { $0 + ($1.replica.stats.httpCounts["/v1/messages/count_tokens"]?["POST"] ?? 0) }
            #expect(counted == 1)
        }
    }

    /// Router errors on `/v1/messages` take Anthropic's shape.
    @Test func routerErrorsOnMessagesAreAnthropicShaped() async throws {
        try await withRouter(1, config: { c, s in ProbeAndAdminTests.fastProbes(&c, s) }) { router, servers in
            let probes = Task { try? await router.probes.run() }
            defer { probes.cancel() }
            let wrongMethod = try await TestSupport.get(router.proxy.port, "/v1/messages")
            #expect(wrongMethod.status == .methodNotAllowed)
            let value = try JSONValue.parse(wrongMethod.bodyBytes)
            #expect(value["type"]?.stringValue == "error" && value["error"]?["type"]?.stringValue == "invalid_request_error", "\(value.serialized)")
            _ = try await TestSupport.post(servers[0].port, "/admin/faults", #"{"health":"fail"}"#)
            #expect(await eventually { router.state.health(of: "r1")?.state == .down })
            let none = try await TestSupport.post(router.proxy.port, "/v1/messages", #"{"model":"cacheroute-demo","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}"#)
            #expect(none.status == .serviceUnavailable)
            let error = try JSONValue.parse(none.bodyBytes)
            #expect(error["type"]?.stringValue == "error" && error["error"]?["type"]?.stringValue == "overloaded_error", "\(error.serialized)")
            // Chat on the same router keeps the OpenAI shape.
            let chat = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", chatBody(session: 1))
            #expect(try JSONValue.parse(chat.bodyBytes)["error"]?["code"]?.stringValue == "no_healthy_replica")
        }
    }

    /// The demo workload rendered as chat, Responses and Messages: the same replica for every
    /// request and the same fleet hit ratio (sequential, instant replicas: exactly the same).
    @Test func theSameWorkloadGoesTheSameWayThroughEveryAPI() async throws {
        let workload = DemoWorkload(tenants: 6, conversationsPerTenant: 2, turns: 3...4, maxTokens: 8)
        let client = StreamingClient(client: TestSupport.client)
        var outcomes: [RequestAPI: (replicas: [String], hits: Double)] = [:]
        for api in [RequestAPI.chat, .responses, .messages] {
            // Instant replicas answer in microseconds: speeds learned from that are noise, so the
            // comparison is of keys and placement alone.
            try await withRouter(4, emulator: { s, _ in s.capacityTokens = 60_000 }, config: { c, _ in c.routing.placement.learnSpeed = false }) { router, servers in
                var replicas: [String] = []
                for conversation in workload.conversations {
                    var answers: [String] = []
                    for turn in conversation.turns.indices {
                        let answer = await client.send(
                            host: "127.0.0.1", port: router.proxy.port, path: api.path,
                            body: workload.body(conversation, turn: turn, answers: answers, api: api), timeout: 10)
                        #expect(answer.ok && !answer.text.isEmpty && answer.promptTokens != nil, "\(api): \(answer.error ?? "")")
                        answers.append(answer.text)
                        replicas.append(answer.replica ?? "?")
                    }
                }
                let counters = servers.map(\.replica.cacheCounters)
                let hits = Double(counters.reduce(0) { $0 + $1.hits }) / Double(max(1, counters.reduce(0) { $0 + $1.queried }))
                outcomes[api] = (replicas, hits)
            }
        }
        let chat = try #require(outcomes[.chat])
        #expect(Set(chat.replicas).count >= 2 && chat.hits > 0.5, "\(chat.replicas) \(chat.hits)")
        for api in [RequestAPI.responses, .messages] {
            let other = try #require(outcomes[api])
            #expect(other.replicas == chat.replicas, "\(api)")
            #expect(abs(other.hits - chat.hits) < 0.01, "\(api): \(other.hits) vs \(chat.hits)")
        }
    }
}
