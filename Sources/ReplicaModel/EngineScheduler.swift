import DequeModule

/// How fast an emulated engine is. The defaults are plausible for an 8B model (Llama-3-8B, bf16)
/// on one H100 80 GB under vLLM: prefill at 20k tokens/s (a cold 2000-token prompt in ~0.1 s, a
/// cached one in one ~10 ms step: the ~10x the router exists for), decode steps of 7 ms plus
/// 0.07 ms per running sequence (7-8 ms per token alone, ~25 ms at 256), 256 sequences per batch,
/// 8192 tokens per step (chunked prefill), about 460k tokens of KV cache (we use 500k).
public struct EngineTiming: Sendable, Equatable {
    public var prefillTokensPerSecond: Double = 20_000
    public var stepBaseSeconds: Double = 0.007
    public var stepSecondsPerSequence: Double = 0.000_07
    public var maxRunning: Int = 256
    public var maxBatchedTokens: Int = 8192
    /// Divides every duration (2 = twice as fast as the real engine).
    public var speed: Double = 1

    public init() {}

    /// Duration of one step that decodes `sequences` and prefills `prefillTokens`.
    public func stepSeconds(sequences: Int, prefillTokens: Int) -> Double {
        (self.stepBaseSeconds + self.stepSecondsPerSequence * Double(sequences)
            + Double(prefillTokens) / self.prefillTokensPerSecond) / self.speed
    }
}

/// A request as the engine sees it.
public struct EngineRequest: Sendable {
    public var id: Int
    public var chain: [UInt64]
    public var promptTokens: Int
    public var outputTokens: Int

    public init(id: Int, chain: [UInt64], promptTokens: Int, outputTokens: Int) {
        self.id = id
        self.chain = chain
        self.promptTokens = promptTokens
        self.outputTokens = max(1, outputTokens)
    }
}

/// Something that happened to a request, at the end of the step that did it.
public struct EngineEvent: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// Prefill finished and the first token came out; `cachedTokens` came from the prefix cache.
        case firstToken(cachedTokens: Int)
        /// One more token (streaming); only reported when `reportTokens` is on.
        case token(index: Int)
        case finished
        /// The request can never fit in the KV cache (longer than the whole cache).
        case rejected
    }

    public var id: Int
    public var kind: Kind
    public var time: Double

    public init(id: Int, kind: Kind, time: Double) {
        self.id = id
        self.kind = kind
        self.time = time
    }
}

/// Continuous batching in virtual time, as vLLM's V1 scheduler does it: a running batch of at most
/// `maxRunning` sequences, admitted in arrival order when their KV blocks fit; each step decodes
/// one token for every decoding sequence and spends the rest of `maxBatchedTokens` on prefill
/// chunks; a step lasts `EngineTiming.stepSeconds`.
///
/// Pure: the caller supplies the time (`submit(_:at:)`, `advance(to:)`) and gets events back. The
/// emulator drives it with the wall clock, the simulator with a virtual one.
public struct EngineScheduler: Sendable {
    public var cache: EngineCache
    public var timing: EngineTiming
    /// Report every token (for streaming emulation); off in the simulator.
    public var reportTokens: Bool

    struct Job: Sendable {
        var request: EngineRequest
        var cachedTokens = 0
        var prefillLeft = 0
        var decodeLeft = 0
        var generated = 0
        var extraBlocks = 0
    }

    private var waiting = Deque<Job>()
    private var running: [Job] = []
    /// End of the last step (the engine is busy until then).
    public private(set) var clock: Double = 0

    /// Token counters, as `vllm:prompt_tokens_total` / `vllm:generation_tokens_total`.
    public private(set) var promptTokens = 0
    public private(set) var generationTokens = 0
    public private(set) var finishedRequests = 0

    public init(cache: EngineCache, timing: EngineTiming = EngineTiming(), reportTokens: Bool = false) {
        self.cache = cache
        self.timing = timing
        self.reportTokens = reportTokens
    }

    public var waitingCount: Int { self.waiting.count }
    public var runningCount: Int { self.running.count }
    public var isIdle: Bool { self.waiting.isEmpty && self.running.isEmpty }

    /// Queues a request arriving at `time`.
    public mutating func submit(_ request: EngineRequest, at time: Double) {
        if self.isIdle { self.clock = max(self.clock, time) }
        self.waiting.append(Job(request: request))
    }

    /// Removes a request (client gone); its blocks are released. True if it was known.
    @discardableResult
    public mutating func cancel(id: Int) -> Bool {
        if let i = self.waiting.firstIndex(where: { $0.request.id == id }) {
            self.waiting.remove(at: i)
            return true
        }
        if let i = self.running.firstIndex(where: { $0.request.id == id }) {
            let job = self.running.remove(at: i)
            self.cache.release(job.request.chain, extraBlocks: job.extraBlocks)
            return true
        }
        return false
    }

    /// When the next step would start and end if nothing more arrived; nil when idle.
    public var nextStepEnd: Double? {
        self.isIdle ? nil : self.clock + self.peekStepSeconds()
    }

    /// Runs every step that starts before `horizon`; returns the events, in time order.
    public mutating func advance(to horizon: Double) -> [EngineEvent] {
        var events: [EngineEvent] = []
        while !self.isIdle, self.clock < horizon {
            self.admit()
            if self.running.isEmpty {
                // Nothing fits (a request larger than the whole cache): drop it rather than wedge.
                if let job = self.waiting.popFirst() {
                    events.append(EngineEvent(id: job.request.id, kind: .rejected, time: self.clock))
                }
                continue
            }
            // With no prefill in progress, every step is alike until a sequence finishes: whatever
            // still waits could not be admitted (slots or KV blocks) and cannot be until then.
            let prefilling = self.running.contains { $0.prefillLeft > 0 }
            if !prefilling, !self.reportTokens {
                self.fastForward(to: horizon, events: &events)
            } else {
                self.step(events: &events)
            }
        }
        return events
    }

    /// Admits waiting requests, in order, while slots and KV blocks allow.
    private mutating func admit() {
        while self.running.count < self.timing.maxRunning, var job = self.waiting.first {
            let outputBlocks = (job.request.outputTokens + self.cache.blockTokens - 1) / self.cache.blockTokens
            guard let cached = self.cache.admit(job.request.chain, promptTokens: job.request.promptTokens, extraBlocks: outputBlocks)
            else { break }
            self.waiting.removeFirst()
            job.cachedTokens = cached
            job.prefillLeft = max(1, job.request.promptTokens - cached)
            job.decodeLeft = job.request.outputTokens - 1
            job.extraBlocks = outputBlocks
            self.promptTokens += job.request.promptTokens
            self.running.append(job)
        }
    }

    private func peekStepSeconds() -> Double {
        var budget = self.timing.maxBatchedTokens
        var decoding = 0
        var prefill = 0
        for job in self.running {
            if job.prefillLeft == 0 {
                decoding += 1
                budget -= 1
            }
        }
        for job in self.running where job.prefillLeft > 0 && budget > 0 {
            let chunk = min(job.prefillLeft, budget)
            prefill += chunk
            budget -= chunk
        }
        if self.running.isEmpty, let first = self.waiting.first {
            prefill = min(self.timing.maxBatchedTokens, first.request.promptTokens)
        }
        return self.timing.stepSeconds(sequences: decoding, prefillTokens: prefill)
    }

    /// One step: decode a token for each decoding sequence, prefill with the remaining budget.
    private mutating func step(events: inout [EngineEvent]) {
        var budget = self.timing.maxBatchedTokens
        var decoding = 0
        var prefill = 0
        var decoded: [Int] = []
        var prefilled: [Int] = []
        for (i, job) in self.running.enumerated() where job.prefillLeft == 0 {
            decoding += 1
            budget -= 1
            decoded.append(i)
        }
        for (i, job) in self.running.enumerated() where job.prefillLeft > 0 && budget > 0 {
            let chunk = min(job.prefillLeft, budget)
            prefill += chunk
            budget -= chunk
            self.running[i].prefillLeft -= chunk
            if self.running[i].prefillLeft == 0 { prefilled.append(i) }
        }
        self.clock += self.timing.stepSeconds(sequences: decoding, prefillTokens: prefill)
        var done: [Int] = []
        for i in decoded {
            self.running[i].decodeLeft -= 1
            self.running[i].generated += 1
            self.generationTokens += 1
            if self.reportTokens {
                events.append(EngineEvent(id: self.running[i].request.id, kind: .token(index: self.running[i].generated), time: self.clock))
            }
            if self.running[i].decodeLeft <= 0 { done.append(i) }
        }
        for i in prefilled {
            self.running[i].generated = 1
            self.generationTokens += 1
            events.append(
                EngineEvent(id: self.running[i].request.id, kind: .firstToken(cachedTokens: self.running[i].cachedTokens), time: self.clock)
            )
            if self.running[i].decodeLeft <= 0 { done.append(i) }
        }
        self.finish(done.sorted(), events: &events)
    }

    /// Many identical decode steps at once: nothing to admit or prefill, so each step is alike until
    /// a sequence finishes or `horizon` is reached.
    private mutating func fastForward(to horizon: Double, events: inout [EngineEvent]) {
        let d = self.timing.stepSeconds(sequences: self.running.count, prefillTokens: 0)
        let untilDone = self.running.map(\.decodeLeft).min() ?? 1
        let untilHorizon = max(1, Int(((horizon - self.clock) / d).rounded(.up)))
        let steps = max(1, min(untilDone, untilHorizon))
        self.clock += Double(steps) * d
        var done: [Int] = []
        for i in self.running.indices {
            self.running[i].decodeLeft -= steps
            self.running[i].generated += steps
            if self.running[i].decodeLeft <= 0 { done.append(i) }
        }
        self.generationTokens += steps * self.running.count
        self.finish(done, events: &events)
    }

    private mutating func finish(_ indices: [Int], events: inout [EngineEvent]) {
        for i in indices.reversed() {
            let job = self.running.remove(at: i)
            self.cache.release(job.request.chain, extraBlocks: job.extraBlocks)
            self.finishedRequests += 1
            events.append(EngineEvent(id: job.request.id, kind: .finished, time: self.clock))
        }
    }
}
