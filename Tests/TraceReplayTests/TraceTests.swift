import ReplicaModel
import RoutingCore
import Testing
import TraceReplay

struct TraceTests {
    @Test func badLinesAreReportedWithTheirNumbersAndSkipped() {
        let text = """
            {"timestamp": 0, "input_length": 600, "output_length": 10, "hash_ids": [1, 2]}
            not json
            {"timestamp": 5, "input_length": 600, "output_length": 10}
            # a comment

            {"timestamp": -1, "input_length": 10, "output_length": 1, "hash_ids": [3]}
            {"timestamp": 9, "input_length": 5000, "output_length": 1, "hash_ids": [3]}
            {"timestamp": 7, "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "headers": {"X-Session-Id": "a"}}
            {"timestamp": 8, "body": "text"}
            """
        let trace = Trace.parse(Array(text.utf8), name: "t")
        #expect(trace.requests.count == 2)
        #expect(trace.warnings.map(\.line) == [2, 3, 6, 7, 9])
        #expect(trace.warnings[0].description.hasPrefix("line 2: invalid JSON"))
        guard case .body(_, let headers, _) = trace.requests[1].content else {
            Issue.record("expected a body record")
            return
        }
        #expect(headers.first?.0 == "x-session-id")
    }

    @Test func renderingIsDeterministic() {
        let a = TraceRenderer.blockText(42, length: 2048)
        #expect(a == TraceRenderer.blockText(42, length: 2048))
        #expect(a.count == 2048)
        #expect(a != TraceRenderer.blockText(43, length: 2048))
        #expect(a.prefix(8) != TraceRenderer.blockText(43, length: 2048).prefix(8))
        // Pinned: a change to rendering shows here.
        #expect(String(decoding: TraceRenderer.blockText(7, length: 40), as: UTF8.self) == "[7] document state to time that not in h")
        let record = HashedRequest(inputTokens: 700, outputTokens: 5, hashIDs: [1, 2])
        let trace = Trace(name: "t", requests: [TraceRequest(line: 1, timestampMs: 0, content: .hashed(record))])
        let renderer = TraceRenderer(trace: trace)
        #expect(renderer.promptText(record).count == 700 * 4)
        let r1 = renderer.render(trace.requests[0])
        let r2 = renderer.render(trace.requests[0])
        #expect(r1.body == r2.body && r1.api == .completions)
    }

    @Test func groupsBecomeAChatWithTheSharedBlocksAsSystem() throws {
        let text = """
            {"timestamp": 0, "input_length": 1100, "output_length": 4, "hash_ids": [1, 2, 3], "group": 7, "session": 1, "turn": 1}
            {"timestamp": 1, "input_length": 1100, "output_length": 4, "hash_ids": [1, 2, 4], "group": 7, "session": 2, "turn": 1}
            """
        let trace = Trace.parse(Array(text.utf8), name: "g")
        let renderer = TraceRenderer(trace: trace)
        let r = renderer.render(trace.requests[0])
        #expect(r.api == .chat)
        #expect(r.headers.first?.1 == "trace-session-1")
        let input = try EngineInput.parse(api: .chat, body: r.body)
        #expect(String(decoding: input.prompt.prefix(22), as: UTF8.self) == "<|im_start|>system\n[1]")
        let a = try KeyExtractor.extract(api: .chat, body: r.body, rules: KeyingRules()).get()
        let b = try KeyExtractor.extract(api: .chat, body: renderer.render(trace.requests[1]).body, rules: KeyingRules()).get()
        #expect(a.instruction != nil && a.instruction == b.instruction)
    }

    /// Three requests whose bounds are worked out by hand (engine blocks of 16 tokens; hash blocks
    /// of 512 tokens align with them, and completions prompts have no template):
    /// r1 [1,2] 1024 tokens: 0 cached; r2 [1,2,3] 1536 tokens: blocks 1,2 = 1024 cached; r3 [4]: 0.
    /// Ideal = 1024 / 3072. A global LRU of 1024 tokens keeps only r1's... then r2's last blocks.
    @Test func boundsOnATinyTrace() {
        let text = """
            {"timestamp": 0, "input_length": 1024, "output_length": 1, "hash_ids": [1, 2]}
            {"timestamp": 1000, "input_length": 1536, "output_length": 1, "hash_ids": [1, 2, 3]}
            {"timestamp": 2000, "input_length": 512, "output_length": 1, "hash_ids": [4]}
            {"timestamp": 3000, "input_length": 1024, "output_length": 1, "hash_ids": [1, 2]}
            """
        let trace = Trace.parse(Array(text.utf8), name: "tiny")
        var options = SimulationOptions()
        options.replicas = 2
        let keying = KeyingRules()
        // Large caches: the LRU bound equals the ideal.
        options.capacityTokens = 100_000
        let big = Simulator(trace: PreparedTrace.prepare(trace, options: options, keying: keying), options: options).bounds()
        // r4 repeats r1 fully: 1024 tokens, the last block recomputed: 1008 cached.
        let expectedIdeal = Double(1024 + 1008) / Double(1024 + 1536 + 512 + 1024)
        #expect(abs(big.ideal - expectedIdeal) < 1e-9)
        #expect(abs(big.globalLRU - expectedIdeal) < 1e-9)
        // One LRU of 2 x 512 tokens (64 blocks). r1 fills it. r2 hits blocks 1-2 (1024 tokens) and,
        // recorded tail first, keeps blocks 1-2 (its block 3 is evicted again at once). r3 evicts
        // the least recent half: block 2. r4 finds block 1 only: 512 tokens.
        options.capacityTokens = 512
        let small = Simulator(trace: PreparedTrace.prepare(trace, options: options, keying: keying), options: options).bounds()
        #expect(abs(small.ideal - expectedIdeal) < 1e-9)
        #expect(abs(small.globalLRU - Double(1024 + 512) / Double(4096)) < 1e-9, "\(small.globalLRU)")
    }

    @Test func cacherouteBeatsRandomOnConversations() {
        // 40 conversations of 4 turns, each turn resending the history.
        var lines: [String] = []
        var t = 0
        for turn in 1...4 {
            for c in 0..<40 {
                let ids = (0..<(turn * 2)).map { c * 100 + $0 }
                lines.append(#"{"timestamp": \#(t), "input_length": \#(ids.count * 512), "output_length": 20, "hash_ids": \#(ids)}"#)
                t += 250
            }
        }
        let trace = Trace.parse(Array(lines.joined(separator: "\n").utf8), name: "conv")
        var options = SimulationOptions()
        options.replicas = 4
        options.capacityTokens = 200_000
        let sim = Simulator(trace: PreparedTrace.prepare(trace, options: options, keying: KeyingRules()), options: options)
        let ours = sim.run(.cacheroute(name: "cacheroute", settings: FleetSettings()))
        let random = sim.run(.baseline(.random))
        let bounds = sim.bounds()
        #expect(ours.hitRatio > 0.95 * bounds.globalLRU, "\(ours.hitRatio) vs bound \(bounds.globalLRU)")
        #expect(ours.hitRatio > random.hitRatio + 0.2)
        #expect(ours.requests == 160 && ours.rejected == 0)
        #expect(ours.perReplicaRequests.reduce(0, +) == 160)
    }
}
