import FastJSON
import RoutingCore
import Testing
import XXHash

/// The Responses and Messages APIs keyed like chat: the same conversation has the same keys
/// through all three, Anthropic breakpoints set the group boundary, `prompt_cache_key` names the
/// group, and stored responses pin their follow-ups.
struct AgentKeysTests {
    static let tools = #"[{"type":"function","name":"lookup","description":"Finds a record","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}]"#

    static func json(_ value: JSONValue) -> [UInt8] { Array(value.serialized.utf8) }

    /// One conversation (system, user, assistant, user) in each API.
    static func conversation(_ api: RequestAPI, system: String = longSystem, last: String = "And then?") -> [UInt8] {
        let turns: [(String, String)] = [("user", "How do I reset my password?"), ("assistant", "Open settings."), ("user", last)]
        switch api {
        case .chat:
            return chatBody(system: system, turns: turns)
        case .responses:
            return Self.json(.object([
                "model": .string("m"), "instructions": .string(system),
                "input": .array(turns.map { .object(["role": .string($0.0), "content": .string($0.1)]) }),
            ]))
        case .messages:
            return Self.json(.object([
                "model": .string("m"), "max_tokens": .int(16), "system": .string(system),
                "messages": .array(turns.map { .object(["role": .string($0.0), "content": .string($0.1)]) }),
            ]))
        case .completions, .generate:
            fatalError("not a chat API")
        }
    }

    @Test func theSameConversationHasTheSameKeysThroughChatResponsesAndMessages() throws {
        let chat = try keys(.chat, Self.conversation(.chat))
        for api in [RequestAPI.responses, .messages] {
            let k = try keys(api, Self.conversation(api))
            #expect(k.chain == chat.chain, "\(api)")
            #expect(k.instruction == chat.instruction && k.instruction != nil, "\(api)")
            #expect(k.session == chat.session, "\(api)")
            #expect(k.promptBytes == chat.promptBytes, "\(api)")
        }
    }

    @Test func contentPartsOfEachAPIReadAsText() throws {
        let chat = try keys(.chat, Self.conversation(.chat))
        // Responses: typed message items with input_text / output_text parts; Messages: text blocks.
        let responses = Self.json(.object([
            "model": .string("m"), "instructions": .string(longSystem),
            "input": .array([
                .object(["type": .string("message"), "role": .string("user"), "content": .array([.object(["type": .string("input_text"), "text": .string("How do I reset my password?")])])]),
                .object(["type": .string("message"), "id": .string("msg_1"), "status": .string("completed"), "role": .string("assistant"),
                         "content": .array([.object(["type": .string("output_text"), "text": .string("Open settings.")])])]),
                .object(["role": .string("user"), "content": .string("And then?")]),
            ]),
        ]))
        let messages = Self.json(.object([
            "model": .string("m"), "max_tokens": .int(16),
            "system": .array([.object(["type": .string("text"), "text": .string(longSystem)])]),
            "messages": .array([
                .object(["role": .string("user"), "content": .array([.object(["type": .string("text"), "text": .string("How do I reset my password?")])])]),
                .object(["role": .string("assistant"), "content": .string("Open settings.")]),
                .object(["role": .string("user"), "content": .array([.object(["type": .string("text"), "text": .string("And then?"), "cache_control": .object(["type": .string("ephemeral")])])])]),
            ]),
        ]))
        let r = try keys(.responses, responses)
        let m = try keys(.messages, messages)
        #expect(r.session == chat.session && m.session == chat.session)
        #expect(r.instruction == chat.instruction && m.instruction == chat.instruction)
    }

    @Test func responsesItemsThatAreNotMessagesKeyByTheirContent() throws {
        func body(_ output: String, order: Bool = true) -> String {
            let call = order
                ? #"{"type":"function_call","call_id":"c1","name":"lookup","arguments":"{\"q\":1}"}"#
                : #"{"name":"lookup","arguments":"{\"q\":1}","call_id":"c1","type":"function_call"}"#
            return #"{"model":"m","instructions":"\#(longSystem)","input":[{"role":"user","content":"find it"},\#(call),{"type":"function_call_output","call_id":"c1","output":"\#(output)"},{"role":"user","content":"thanks"}]}"#
        }
        let filler = String(repeating: " record line", count: 200)
        let a = try keys(.responses, body("found 3 records" + filler))
        let b = try keys(.responses, body("found 3 records" + filler, order: false))
        let c = try keys(.responses, body("found 4 records" + filler))
        // Key order does not matter; the output does; the session is the first user message's.
        #expect(a.chain == b.chain && a.promptBytes == b.promptBytes)
        #expect(a.promptBytes == c.promptBytes && a.chain != c.chain && a.chain.first == c.chain.first)
        #expect(a.session == c.session && a.instruction == c.instruction && a.instruction != nil)
    }

    @Test func anthropicBreakpointsSetTheGroupBoundaryAndAreNotContent() throws {
        func body(_ systemBlocks: [JSONValue], tools: [JSONValue] = [], user: String = "hi") -> [UInt8] {
            Self.json(.object([
                "model": .string("m"), "max_tokens": .int(8), "system": .array(systemBlocks), "tools": .array(tools),
                "messages": .array([.object(["role": .string("user"), "content": .string(user)])]),
            ]))
        }
        let stable = String(repeating: "Stable rules of the project. ", count: 100)
        let marked: JSONValue = .object(["type": .string("text"), "text": .string(stable), "cache_control": .object(["type": .string("ephemeral")])])
        // Text after the client's breakpoint (today's date, a per-session note) changes: the group stays.
        let a = try keys(.messages, body([marked, .object(["type": .string("text"), "text": .string("Today is Monday.")])]))
        let b = try keys(.messages, body([marked, .object(["type": .string("text"), "text": .string("Today is Tuesday.")])]))
        #expect(a.instruction != nil && a.instruction == b.instruction)
        // Without the breakpoint the whole system is the group: the two differ.
        let plain: JSONValue = .object(["type": .string("text"), "text": .string(stable)])
        let c = try keys(.messages, body([plain, .object(["type": .string("text"), "text": .string("Today is Monday.")])]))
        let d = try keys(.messages, body([plain, .object(["type": .string("text"), "text": .string("Today is Tuesday.")])]))
        #expect(c.instruction != d.instruction)
        // cache_control itself is not content: with or without it, the same chain.
        #expect(a.chain == c.chain)
        // A tool marked as a breakpoint: the same tools give the same group whatever the system says after.
        let tool: JSONValue = .object([
            "name": .string("grep"), "description": .string(String(repeating: "Searches files. ", count: 200)),
            "input_schema": .object(["type": .string("object")]), "cache_control": .object(["type": .string("ephemeral")]),
        ])
        let e = try keys(.messages, body([plain], tools: [tool], user: "x"))
        let f = try keys(.messages, body([.object(["type": .string("text"), "text": .string("Other rules.")])], tools: [tool], user: "x"))
        #expect(e.instruction != nil && e.instruction == f.instruction)
    }

    @Test func claudeCodesAttributionBlockIsLeftOutAsVLLMLeavesItOut() throws {
        func body(_ hash: String) -> [UInt8] {
            Self.json(.object([
                "model": .string("m"), "max_tokens": .int(8),
                "system": .array([
                    .object(["type": .string("text"), "text": .string("x-anthropic-billing-header: cc_version=2.1; cch=\(hash);")]),
                    .object(["type": .string("text"), "text": .string(longSystem)]),
                ]),
                "messages": .array([.object(["role": .string("user"), "content": .string("hi")])]),
            ]))
        }
        let a = try keys(.messages, body("a1b2"))
        let b = try keys(.messages, body("c3d4"))
        #expect(a.chain == b.chain && a.instruction == b.instruction && a.instruction != nil)
    }

    @Test func promptCacheKeyNamesTheGroup() throws {
        let a = try keys(.chat, chatBody(system: "Short A.", turns: [("user", "one")], extra: #""prompt_cache_key":"tenant-7-app""#))
        let b = try keys(.chat, chatBody(system: "Different B.", turns: [("user", "two")], extra: #""prompt_cache_key":"tenant-7-app""#))
        let c = try keys(.chat, chatBody(system: "Short A.", turns: [("user", "one")], extra: #""prompt_cache_key":"other""#))
        #expect(a.instruction != nil && a.instruction?.key == b.instruction?.key)
        #expect(a.instruction?.key != c.instruction?.key)
        // The session stays the conversation's own.
        #expect(a.session != b.session)
        let r = try keys(.responses, #"{"model":"m","input":"hello","prompt_cache_key":"tenant-7-app"}"#)
        #expect(r.instruction?.key == a.instruction?.key)
    }

    @Test func storedResponsesAndConversationsKeyTheSession() throws {
        let tag = StoredResponseID.tag(replica: "r2")
        let id = StoredResponseID.make(tag: tag, request: 42)
        #expect(StoredResponseID.tag(of: id) == Substring(tag))
        #expect(StoredResponseID.tag(of: "resp_0123456789abcdef") == nil)
        let follow = try keys(.responses, #"{"model":"m","previous_response_id":"\#(id)","input":[]}"#)
        #expect(follow.storedResponse == id)
        #expect(follow.session?.source == .body("previous_response_id"))
        let conversation = try keys(.responses, #"{"model":"m","conversation":{"id":"conv_9"},"input":"hi"}"#)
        let again = try keys(.responses, #"{"model":"m","conversation":"conv_9","input":"something else"}"#)
        #expect(conversation.session == again.session && conversation.session?.source == .body("conversation"))
        // vLLM's own session_id field (a default session body field) wins over both.
        let explicit = try keys(.responses, #"{"model":"m","session_id":"s1","conversation":"conv_9","input":"hi"}"#)
        #expect(explicit.session?.source == .body("session_id"))
        #expect(try !keys(.responses, #"{"model":"m","input":"hi"}"#).namesRequestID)
        #expect(try keys(.responses, #"{"model":"m","input":"hi","request_id":"mine"}"#).namesRequestID)
    }

    @Test func badAgentBodiesSayWhatIsWrong() {
        for (api, body, words) in [
            (RequestAPI.responses, #"{"model":"m"}"#, "input"),
            (.responses, #"{"model":"m","input":42}"#, "input"),
            (.responses, #"{"model":"m","input":[]}"#, "empty"),
            (.messages, #"{"model":"m","max_tokens":3}"#, "messages"),
            (.messages, #"{"model":"m","system":7,"messages":[{"role":"user","content":"x"}]}"#, "system"),
        ] {
            let result = KeyExtractor.extract(api: api, body: Array(body.utf8), sessionHeader: nil, rules: KeyingRules())
            guard case .failure(let error) = result else {
                Issue.record("\(body) was keyed")
                continue
            }
            #expect(error.message.contains(words), "\(body): \(error.message)")
        }
    }
}

/// Stored responses are routed to the replica that holds them, by any router, from the id alone.
struct StoredResponseRoutingTests {
    let fleet = FleetSnapshot(replicas: (1...4).map { ReplicaSpec(name: "r\($0)", url: "http://10.0.0.\($0):8000") })

    @Test func aFollowUpGoesToTheReplicaThatHoldsItsResponse() throws {
        let router = Router(settings: RoutingSettings())
        for holder in 0..<4 {
            let id = StoredResponseID.make(tag: StoredResponseID.tag(replica: "r\(holder + 1)"), request: UInt64(holder) &* 977)
            let follow = try keys(.responses, #"{"model":"m","previous_response_id":"\#(id)","input":"next"}"#)
            let decision = router.decide(.success(follow), fleet: self.fleet, now: 0)
            #expect(decision.replica == holder && decision.tier == .stored)
            // A failure there is not retried elsewhere: another replica could only say "not found".
            #expect(decision.retryOrder(in: self.fleet, model: "m").isEmpty)
            let get = router.decide(.success(.storedResponse(id)), fleet: self.fleet, now: 0)
            #expect(get.replica == holder)
        }
    }

    @Test func aResponseOfAReplicaThatLeftIsUnknownAndAnUnhealthyHolderIsNoReplica() throws {
        let router = Router(settings: RoutingSettings())
        let gone = StoredResponseID.make(tag: StoredResponseID.tag(replica: "r9"), request: 1)
        let decision = router.decide(.success(.storedResponse(gone)), fleet: self.fleet, now: 0)
        #expect(decision.replica == nil)
        guard case .storedResponseGone(gone) = decision.basis else {
            Issue.record("\(decision.basis)")
            return
        }
        let down = FleetSnapshot(replicas: self.fleet.replicas, routable: [true, false, true, true])
        let held = StoredResponseID.make(tag: StoredResponseID.tag(replica: "r2"), request: 2)
        let unhealthy = router.decide(.success(.storedResponse(held)), fleet: down, now: 0)
        #expect(unhealthy.replica == nil && unhealthy.tier == .stored)
        guard case .storedResponse = unhealthy.basis else {
            Issue.record("\(unhealthy.basis)")
            return
        }
        // An id the router did not make is ordinary traffic (keyed by its body).
        let foreign = try keys(.responses, #"{"model":"m","previous_response_id":"resp_abc","input":"next"}"#)
        #expect(router.decide(.success(foreign), fleet: self.fleet, now: 0).tier != .stored)
    }
}
