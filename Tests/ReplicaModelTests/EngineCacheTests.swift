import ReplicaModel
import RoutingCore
import Testing

func chain(_ text: String, salt: String? = nil, blockTokens: Int = 4) -> (chain: [UInt64], tokens: Int) {
    let input = EngineInput(api: .completions, model: nil, prompt: Array(text.utf8), maxTokens: 1, salt: salt)
    return (input.chain(blockTokens: blockTokens), input.promptTokens)
}

struct EngineCacheTests {
    // Blocks of 4 tokens = 16 bytes.
    let a = String(repeating: "a", count: 16)
    let b = String(repeating: "b", count: 16)
    let c = String(repeating: "c", count: 16)

    @Test func hitsOnlyForExactBlockPrefixes() {
        var cache = EngineCache(capacityTokens: 1000, blockTokens: 4)
        let first = chain(a + b + c + "x")
        #expect(cache.admit(first.chain, promptTokens: first.tokens) == 0)
        cache.release(first.chain)
        // Same first two blocks, different third: two blocks hit.
        let second = chain(a + b + a + "x")
        #expect(cache.cachedTokens(second.chain, promptTokens: second.tokens) == 8)
        // A different first block: nothing, although later blocks are equal text.
        let third = chain(c + b + c + "x")
        #expect(cache.cachedTokens(third.chain, promptTokens: third.tokens) == 0)
        // A fully cached prompt still computes its last token: the last block is given up.
        let same = chain(a + b + c)
        #expect(cache.cachedTokens(same.chain, promptTokens: same.tokens) == 8)
    }

    @Test func saltsIsolate() {
        var cache = EngineCache(capacityTokens: 1000, blockTokens: 4)
        let plain = chain(a + b + c + "x")
        _ = cache.admit(plain.chain, promptTokens: plain.tokens)
        cache.release(plain.chain)
        #expect(cache.cachedTokens(chain(a + b + c + "x", salt: "t1").chain, promptTokens: plain.tokens) == 0)
        let salted = chain(a + b + c + "x", salt: "t1")
        _ = cache.admit(salted.chain, promptTokens: salted.tokens)
        cache.release(salted.chain)
        #expect(cache.cachedTokens(chain(a + b + c + "x", salt: "t1").chain, promptTokens: plain.tokens) == 12)
        #expect(cache.cachedTokens(chain(a + b + c + "x", salt: "t2").chain, promptTokens: plain.tokens) == 0)
    }

    @Test func evictsLeastRecentlyReleasedTailsFirst() {
        var cache = EngineCache(capacityTokens: 16, blockTokens: 4)  // 4 blocks
        let first = chain(a + b + c + "x")  // 3 full blocks
        _ = cache.admit(first.chain, promptTokens: first.tokens)
        cache.release(first.chain)
        let other = chain(c + c + "x")  // 2 full blocks: one of first's must go, its tail
        _ = cache.admit(other.chain, promptTokens: other.tokens)
        cache.release(other.chain)
        #expect(cache.usedBlocks == 4)
        #expect(cache.cachedPrefix(first.chain) == 2)
        #expect(cache.cachedPrefix(other.chain) == 2)
    }

    @Test func pinnedBlocksSurviveAndFullCachesMakeRequestsWait() {
        var cache = EngineCache(capacityTokens: 16, blockTokens: 4)
        let running = chain(a + b + c + "x")
        #expect(cache.admit(running.chain, promptTokens: running.tokens) == 0)
        // Only one block is free: a two-block request must wait, and the pinned blocks stay.
        let other = chain(c + c + "x")
        #expect(cache.admit(other.chain, promptTokens: other.tokens) == nil)
        #expect(cache.cachedPrefix(running.chain) == 3)
        cache.release(running.chain)
        #expect(cache.admit(other.chain, promptTokens: other.tokens) == 0)
        #expect(cache.cachedPrefix(running.chain) == 2)
    }

    @Test func countersAreTokenWeighted() {
        var cache = EngineCache(capacityTokens: 1000, blockTokens: 4)
        let p = chain(a + b + c + "x")
        _ = cache.admit(p.chain, promptTokens: p.tokens)
        cache.release(p.chain)
        _ = cache.admit(p.chain, promptTokens: p.tokens)
        #expect(cache.queriedTokens == 2 * p.tokens)
        #expect(cache.hitTokens == 12)
        #expect(cache.usage > 0)
    }
}

struct EngineSchedulerTests {
    func scheduler(_ timing: EngineTiming = EngineTiming()) -> EngineScheduler {
        EngineScheduler(cache: EngineCache(capacityTokens: 100_000, blockTokens: 16), timing: timing)
    }

    func firstToken(_ events: [EngineEvent], _ id: Int) -> Double? {
        events.first { $0.id == id && { if case .firstToken = $0.kind { true } else { false } }($0) }?.time
    }

    @Test func aCachedPromptIsAboutTenTimesFaster() {
        var engine = self.scheduler()
        let text = String(repeating: "word ", count: 1600)  // 8000 bytes = 2000 tokens
        let p = EngineInput(api: .completions, model: nil, prompt: Array(text.utf8), maxTokens: 1)
        engine.submit(EngineRequest(id: 1, chain: p.chain(blockTokens: 16), promptTokens: p.promptTokens, outputTokens: 1), at: 0)
        let cold = self.firstToken(engine.advance(to: 100), 1)!
        engine.submit(EngineRequest(id: 2, chain: p.chain(blockTokens: 16), promptTokens: p.promptTokens, outputTokens: 1), at: 10)
        let warm = self.firstToken(engine.advance(to: 200), 2)! - 10
        #expect(cold > 0.09 && cold < 0.12, "cold 2000-token prefill \(cold) s")
        #expect(cold / warm > 8, "cold \(cold) warm \(warm)")
        #expect(engine.cache.hitTokens == 1984)
    }

    @Test func slotsLimitTheBatchAndTheRestWaits() {
        var timing = EngineTiming()
        timing.maxRunning = 2
        var engine = self.scheduler(timing)
        for id in 0..<4 {
            let p = EngineInput(api: .completions, model: nil, prompt: Array("request \(id) ".utf8), maxTokens: 50)
            engine.submit(EngineRequest(id: id, chain: p.chain(blockTokens: 16), promptTokens: p.promptTokens, outputTokens: 50), at: 0)
        }
        _ = engine.advance(to: 0.001)
        #expect(engine.runningCount == 2 && engine.waitingCount == 2)
        let events = engine.advance(to: 100)
        let finished = events.filter { $0.kind == .finished }
        #expect(finished.count == 4)
        // The later two start only when the first two finish (continuous batching, FIFO).
        let first = self.firstToken(events, 2)!
        let done0 = finished.first { $0.id == 0 }!.time
        #expect(first > done0)
    }

    @Test func speedScalesEveryDuration() {
        var fast = EngineTiming()
        fast.speed = 4
        var a = self.scheduler()
        var b = self.scheduler(fast)
        let p = EngineInput(api: .completions, model: nil, prompt: Array(String(repeating: "x", count: 4000).utf8), maxTokens: 20)
        let r = EngineRequest(id: 1, chain: p.chain(blockTokens: 16), promptTokens: p.promptTokens, outputTokens: 20)
        a.submit(r, at: 0)
        b.submit(r, at: 0)
        let ta = a.advance(to: 100).last!.time
        let tb = b.advance(to: 100).last!.time
        #expect(abs(ta / tb - 4) < 0.01)
    }

    @Test func fastForwardMatchesStepByStep() {
        var stepped = self.scheduler()
        stepped.reportTokens = true
        var skipped = self.scheduler()
        for id in 0..<20 {
            let p = EngineInput(api: .completions, model: nil, prompt: Array(String(repeating: "q\(id)", count: 300).utf8), maxTokens: 10 + id * 7)
            let r = EngineRequest(id: id, chain: p.chain(blockTokens: 16), promptTokens: p.promptTokens, outputTokens: p.maxTokens)
            stepped.submit(r, at: Double(id) * 0.05)
            skipped.submit(r, at: Double(id) * 0.05)
            _ = stepped.advance(to: Double(id + 1) * 0.05)
            _ = skipped.advance(to: Double(id + 1) * 0.05)
        }
        let a = stepped.advance(to: 1000).filter { $0.kind == .finished }.map(\.time)
        let b = skipped.advance(to: 1000).filter { $0.kind == .finished }.map(\.time)
        #expect(stepped.generationTokens == skipped.generationTokens)
        #expect(abs((a.max() ?? 0) - (b.max() ?? 0)) < 1e-6)
    }

    @Test func aPromptLargerThanTheCacheIsRejected() {
        var engine = EngineScheduler(cache: EngineCache(capacityTokens: 64, blockTokens: 16))
        let p = EngineInput(api: .completions, model: nil, prompt: Array(String(repeating: "z", count: 4000).utf8), maxTokens: 1)
        engine.submit(EngineRequest(id: 9, chain: p.chain(blockTokens: 16), promptTokens: p.promptTokens, outputTokens: 1), at: 0)
        #expect(engine.advance(to: 10).contains { $0.id == 9 && $0.kind == .rejected })
    }
}

struct EngineInputTests {
    @Test func chatIsRenderedWithTheTemplate() throws {
        let body = #"{"model":"m","messages":[{"role":"system","content":"Be \"nice\"."},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"text","text":"there"}]}],"max_tokens":7,"cache_salt":"s","stream":true,"stream_options":{"include_usage":true}}"#
        let input = try EngineInput.parse(api: .chat, body: Array(body.utf8))
        #expect(String(decoding: input.prompt, as: UTF8.self)
            == "<|im_start|>system\nBe \"nice\".<|im_end|>\n<|im_start|>user\nhi\nthere<|im_end|>\n<|im_start|>assistant\n")
        #expect(input.maxTokens == 7 && input.salt == "s" && input.stream && input.includeUsage)
    }

    @Test func completionsAndGenerate() throws {
        let c = try EngineInput.parse(api: .completions, body: Array(#"{"prompt":"abcdefgh","max_tokens":3}"#.utf8))
        #expect(c.promptTokens == 2 && c.maxTokens == 3)
        let g = try EngineInput.parse(api: .generate, body: Array(#"{"input_ids":[1,2,3],"sampling_params":{"max_new_tokens":5},"rid":"x"}"#.utf8))
        #expect(g.promptTokens == 3 && g.maxTokens == 5 && g.requestID == "x")
    }

    @Test(arguments: ["{}", #"{"messages":[]}"#, #"{"messages":"x"}"#, "nope", #"{"messages":[{"content":"x"}]}"#, #"{"messages":[{"role":"user","content":"x"}],"max_tokens":0}"#])
    func badBodiesAreRefused(body: String) {
        #expect(throws: EngineInputError.self) { try EngineInput.parse(api: .chat, body: Array(body.utf8)) }
    }
}
