import FastJSON
import RoutingCore
import Testing
import XXHash

func chatBody(
    model: String = "m",
    system: String? = nil,
    turns: [(role: String, content: String)],
    extra: String = ""
) -> [UInt8] {
    var messages: [JSONValue] = []
    if let system { messages.append(.object(["role": .string("system"), "content": .string(system)])) }
    for turn in turns { messages.append(.object(["role": .string(turn.role), "content": .string(turn.content)])) }
    var text = JSONValue.object(["model": .string(model), "messages": .array(messages)]).serialized
    if !extra.isEmpty { text = String(text.dropLast()) + "," + extra + "}" }
    return Array(text.utf8)
}

func chatKeys(_ body: [UInt8]) throws -> RequestKeys {
    try keys(.chat, body)
}

func keys(_ api: RequestAPI, _ body: [UInt8], header: (String, String)? = nil, rules: KeyingRules = KeyingRules()) throws -> RequestKeys {
    try KeyExtractor.extract(api: api, body: body, sessionHeader: header.map { (name: $0.0, value: $0.1) }, rules: rules).get()
}

func keys(_ api: RequestAPI, _ text: String, rules: KeyingRules = KeyingRules()) throws -> RequestKeys {
    try keys(api, Array(text.utf8), rules: rules)
}

let longSystem = String(repeating: "You are a careful assistant for the ACME support desk. ", count: 60)

struct KeyExtractorTests {
    @Test func sameConversationKeepsItsSessionKeyAcrossTurns() throws {
        let turn1 = try chatKeys(chatBody(system: longSystem, turns: [("user", "How do I reset my password?")]))
        let turn2 = try chatKeys(chatBody(system: longSystem, turns: [
            ("user", "How do I reset my password?"), ("assistant", "Open settings."), ("user", "And then?"),
        ]))
        #expect(turn1.session == turn2.session)
        guard case .conversation = turn1.session?.source else {
            Issue.record("implicit session expected")
            return
        }
        #expect(turn1.instruction == turn2.instruction)
        // The earlier turn's full blocks are a prefix of the later turn's chain.
        #expect(Array(turn2.chain.prefix(turn1.chain.count)) == turn1.chain)
    }

    @Test func sameSystemPromptDifferentSessionsShareTheInstructionKeyOnly() throws {
        let a = try chatKeys(chatBody(system: longSystem, turns: [("user", "Question A")]))
        let b = try chatKeys(chatBody(system: longSystem, turns: [("user", "Question B")]))
        #expect(a.instruction != nil)
        #expect(a.instruction == b.instruction)
        #expect(a.session != b.session)
    }

    @Test func shortSystemPromptHasNoInstructionKey() throws {
        let k = try chatKeys(chatBody(system: "Be brief.", turns: [("user", "hi")]))
        #expect(k.instruction == nil)
        #expect(k.instructionBytes > 0)
    }

    @Test func saltsAndModelsSeparateScopes() throws {
        let base = try chatKeys(chatBody(system: longSystem, turns: [("user", "q")]))
        let salted = try chatKeys(chatBody(system: longSystem, turns: [("user", "q")], extra: #""cache_salt":"tenant-1""#))
        let salted2 = try chatKeys(chatBody(system: longSystem, turns: [("user", "q")], extra: #""cache_salt":"tenant-2""#))
        let other = try chatKeys(chatBody(model: "other", system: longSystem, turns: [("user", "q")]))
        let scopes = Set([base.scope, salted.scope, salted2.scope, other.scope])
        #expect(scopes.count == 4)
        let instructions = Set([base, salted, salted2, other].compactMap { $0.instruction?.key })
        #expect(instructions.count == 4)
        #expect(Set([base, salted, salted2, other].compactMap { $0.session?.key }).count == 4)
        #expect(Set([base, salted, salted2, other].compactMap { $0.chain.first }).count == 4)
        // Explicit session ids are scoped too.
        let h1 = try keys(.chat, chatBody(turns: [("user", "q")]), header: ("x-session-id", "s1"))
        let h2 = try keys(.chat, chatBody(model: "other", turns: [("user", "q")]), header: ("x-session-id", "s1"))
        #expect(h1.session?.key != h2.session?.key)
    }

    @Test func mergesWhatTheEngineCachesAlike() throws {
        let tools1 = #""tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{}}}}]"#
        let tools2 = #""tools": [ { "function": { "parameters": { "properties": { }, "type": "object" }, "name": "f" }, "type": "function" } ]"#
        let a = try chatKeys(chatBody(system: longSystem, turns: [("user", "é / \n x")], extra: tools1))
        let escaped = #"{"model":"m","messages":[{"content":"\#(longSystem)","role":"system"},{"role":"user","content":"\u00e9 \/ \u000a x"}],"#
            + tools2 + "}"
        let b = try keys(.chat, escaped)
        #expect(a.chain == b.chain)
        #expect(a.promptBytes == b.promptBytes)
        #expect(a.instruction == b.instruction)
        #expect(a.session == b.session)
        // One text part is the same as a plain string.
        let parts = #"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hello"}]}]}"#
        let plain = #"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#
        #expect(try keys(.chat, parts).session == keys(.chat, plain).session)
    }

    @Test func neverMergesWhatTheEngineCachesDifferently() throws {
        let base = try chatKeys(chatBody(turns: [("user", "hello")]))
        let variants: [[UInt8]] = [
            chatBody(turns: [("system", "hello")]),
            chatBody(turns: [("user", "hello ")]),
            chatBody(turns: [("user", "hello")], extra: #""tools":[]"#),
            chatBody(turns: [("user", "hello")], extra: #""chat_template_kwargs":{"enable_thinking":false}"#),
            Array(#"{"model":"m","messages":[{"role":"user","content":"hello","name":"bob"}]}"#.utf8),
            Array(#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"hello"}]}]}"#.utf8),
        ]
        for body in variants {
            let k = try keys(.chat, body)
            #expect(k.chain != base.chain || k.promptBytes != base.promptBytes || k.scope != base.scope || k.session != base.session)
            #expect(k.session != base.session)
        }
        // Token ids 3 and 34 never share a block.
        // A 7-byte block covers exactly the tag and "1,2,3," in the first prompt.
        let t1 = try keys(.completions, #"{"prompt":[1,2,3,5]}"#, rules: KeyingRules(blockBytes: 7))
        let t2 = try keys(.completions, #"{"prompt":[1,2,34]}"#, rules: KeyingRules(blockBytes: 7))
        #expect(t1.chain.count >= 1 && t2.chain.count >= 1)
        #expect(t1.chain[0] != t2.chain[0])
    }

    @Test func keyOrderInsideMessagesDoesNotMatter() throws {
        let a = try keys(.chat, #"{"model":"m","messages":[{"role":"user","content":"hi there"}]}"#)
        let b = try keys(.chat, #"{"messages":[{"content":"hi there","role":"user"}],"model":"m"}"#)
        #expect(a.chain == b.chain && a.session == b.session && a.promptBytes == b.promptBytes)
    }

    @Test func explicitSessionIdsWinInPriorityOrder() throws {
        let body = chatBody(turns: [("user", "q")], extra: #""session_id":"abc""#)
        let fromBody = try keys(.chat, body)
        #expect(fromBody.session?.source == .body("session_id"))
        let fromHeader = try keys(.chat, body, header: ("x-session-id", "abc"))
        #expect(fromHeader.session?.source == .header("x-session-id"))
        let nested = try keys(.generate, #"{"text":"hello","session_params":{"id":"s-9"}}"#)
        #expect(nested.session?.source == .body("session_params.id"))
        let rules = KeyingRules(sessionBodyFields: ["user", "metadata.conversation"])
        let custom = try keys(.chat, Array(#"{"model":"m","metadata":{"conversation":"c1"},"user":"u","messages":[{"role":"user","content":"q"}]}"#.utf8), rules: rules)
        #expect(custom.session?.source == .body("user"))
    }

    @Test func completionsAndGenerateBodies() throws {
        let c = try keys(.completions, #"{"model":"m","prompt":"Once upon a time","stream":true}"#)
        #expect(c.model == "m" && c.stream)
        let batch = try keys(.completions, #"{"model":"m","prompt":["a","b"]}"#)
        #expect(batch.promptBytes > 0)
        let ids = try keys(.completions, #"{"model":"m","prompt":[[1,2],[3]]}"#)
        #expect(ids.promptBytes > 0)
        let g = try keys(.generate, #"{"text":"Once upon a time","sampling_params":{"max_new_tokens":8}}"#)
        #expect(g.model == nil)
        let gl = try keys(.generate, #"{"text":"Once upon a time","lora_path":"a"}"#)
        #expect(g.scope != gl.scope)
        // The raw-prompt session depth: two long prompts sharing 4096 bytes share the session key.
        let prefix = String(repeating: "x", count: 5000)
        let p1 = try keys(.completions, #"{"prompt":"\#(prefix)AAA"}"#)
        let p2 = try keys(.completions, #"{"prompt":"\#(prefix)BBB"}"#)
        #expect(p1.session == p2.session)
    }

    @Test(arguments: [
        ("", KeyError.Kind.malformedJSON),
        ("{", .malformedJSON),
        ("[]", .invalidField),
        (#"{"model":"m"}"#, .invalidField),
        (#"{"model":"m","messages":[]}"#, .emptyPrompt),
        (#"{"model":"m","messages":"hi"}"#, .invalidField),
        (#"{"model":3,"messages":[{"role":"user","content":"x"}]}"#, .invalidField),
        (#"{"model":"m","messages":[{"content":"x"}]}"#, .invalidField),
        (#"{"model":"m","messages":[{"role":"user","content":7}]}"#, .invalidField),
        (#"{"model":"m","messages":[{"role":"user","content":"\ud800"}]}"#, .malformedJSON),
        (#"{"model":"m","messages":[{"role":"user","content":"x"}]} trailing"#, .malformedJSON),
        (#"{"model":"m","messages":[{"role":"user","content":"x"}],}"#, .malformedJSON),
    ])
    func badChatBodiesAreRefused(text: String, kind: KeyError.Kind) {
        let result = KeyExtractor.extract(api: .chat, body: Array(text.utf8), rules: KeyingRules())
        guard case .failure(let error) = result else {
            Issue.record("expected \(kind) for \(text)")
            return
        }
        #expect(error.kind == kind, "\(text): \(error)")
    }

    @Test func badRawPromptsAreRefused() {
        for (api, text) in [
            (RequestAPI.completions, #"{"prompt":""}"#), (.completions, #"{"prompt":[]}"#),
            (.completions, #"{"prompt":[1,"a"]}"#), (.completions, #"{"prompt":[-1]}"#),
            (.generate, #"{"input_ids":[[]]}"#), (.generate, #"{"sampling_params":{}}"#),
        ] {
            #expect(throws: KeyError.self, "\(text)") { try KeyExtractor.extract(api: api, body: Array(text.utf8), rules: KeyingRules()).get() }
        }
    }

    @Test(arguments: [UInt8(ascii: "b"), UInt8(ascii: "X")])
    func invalidUTF8IsRefused(at marker: UInt8) {
        // In the content (canonicalized) and in the model (decoded to a String).
        var body = Array(#"{"model":"X","messages":[{"role":"user","content":"ab"}]}"#.utf8)
        body[body.firstIndex(of: marker)!] = 0xFF
        #expect(throws: KeyError.self) { try KeyExtractor.extract(api: .chat, body: body, rules: KeyingRules()).get() }
    }

    @Test func oversizeBodyIsRefusedQuickly() {
        let big = Array(#"{"model":"m","messages":[{"role":"user","content":""#.utf8)
            + [UInt8](repeating: UInt8(ascii: "a"), count: 10 << 20) + Array(#""}]}"#.utf8)
        let result = KeyExtractor.extract(api: .chat, body: big, rules: KeyingRules())
        guard case .failure(let error) = result else {
            Issue.record("10 MB body was keyed")
            return
        }
        #expect(error.kind == .tooLarge)
    }

    @Test func unicodeEdgeCasesAreKeyed() throws {
        let texts = ["😀👩‍👩‍👧", "e\u{301}", "\u{FEFF}bom", "\u{202E}rtl", "a\u{0}b", "\u{10FFFF}", "日本語のテキスト"]
        var sessions = Set<UInt64>()
        for text in texts {
            let k = try chatKeys(chatBody(turns: [("user", text)]))
            sessions.insert(k.session!.key)
        }
        #expect(sessions.count == texts.count)
        // Escaped and raw forms of the same text are one key.
        let raw = try keys(.chat, #"{"model":"m","messages":[{"role":"user","content":"😀"}]}"#)
        let escaped = try keys(.chat, #"{"model":"m","messages":[{"role":"user","content":"\ud83d\ude00"}]}"#)
        #expect(raw.session == escaped.session)
    }

    /// The chain of one fixed request, pinned: any change to canonicalization or hashing shows here.
    @Test func goldenBlockChain() throws {
        let body = #"""
            {"model":"llama-3-8b","cache_salt":"tenant-a","tools":[{"type":"function","function":{"name":"lookup","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}],
             "messages":[{"role":"system","content":"\#(longSystem)"},{"role":"user","content":"Where is my order #1234?"},
             {"role":"assistant","content":"Let me check."},{"role":"user","content":[{"type":"text","text":"Thanks"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}
            """#
        let k = try keys(.chat, body, rules: KeyingRules(blockBytes: 256))
        var lines = [
            "scope \(k.scope.hex16)",
            "prompt_bytes \(k.promptBytes)",
            "instruction \(k.instruction.map { "\($0.key.hex16) \($0.bytes)" } ?? "none")",
            "session \(k.session.map { "\($0.key.hex16) \($0.source)" } ?? "none")",
        ]
        lines += k.chain.enumerated().map { "block \($0.offset) \($0.element.hex16)" }
        try Golden.check("block-chain.txt", lines.joined(separator: "\n") + "\n")
    }
}
