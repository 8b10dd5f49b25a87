import Foundation
import NIOConcurrencyHelpers
import NIOCore
import PrometheusText
import ReplicaModel
import RoutingCore

/// What an emulated replica tells a request's connection.
public typealias EngineSink = @Sendable (EngineEvent) -> Void

/// One emulated vLLM or SGLang replica: the shared cache and timing model (`EngineScheduler`)
/// driven by the wall clock, plus the counters its `/metrics` exposes.
///
/// All mutable state is in one lock-protected core. In timed mode the engine steps on one event
/// loop (a scheduled task per step); connections hand requests in and get events back through a
/// sink. In instant mode a request is answered at once, with the cache still modeled.
public final class EmulatedReplica: Sendable {
    public let settings: EmulatorSettings
    let engineLoop: any EventLoop
    let start = NIODeadline.now()
    let createdUnix = Date().timeIntervalSince1970
    /// Mixed into response ids so two replicas never hand out the same id.
    let idSalt = UInt64.random(in: 0...UInt64.max)
    let core: NIOLockedValueBox<Core>
    /// Stored Responses (`storeResponses`), apart from the engine's lock.
    let responses: NIOLockedValueBox<ResponseStore>

    struct Job {
        var arrival: Double
        var promptTokens: Int
        var maxTokens: Int
        var outputChain: ArraySlice<UInt64>
        var firstToken: Double?
        var lastToken: Double?
    }

    struct Core {
        var engine: EngineScheduler
        var sinks: [Int: EngineSink] = [:]
        var jobs: [Int: Job] = [:]
        var pending: [EngineEvent] = []
        var pumpAt: Double?
        var faults: FaultPlan
        /// Health requests answered in `flap` mode so far.
        var flaps: UInt64 = 0
        var stats = ReplicaCounters()
        var nextID: UInt64 = 0
    }

    public init(settings: EmulatorSettings, engineLoop: any EventLoop) {
        self.settings = settings
        self.engineLoop = engineLoop
        let engine = EngineScheduler(
            cache: EngineCache(capacityTokens: settings.capacityTokens, blockTokens: settings.blockTokens),
            timing: settings.timing,
            reportTokens: true
        )
        self.core = NIOLockedValueBox(Core(engine: engine, faults: settings.faults))
        self.responses = NIOLockedValueBox(ResponseStore(capacity: settings.maxStoredResponses))
    }

    /// Seconds since the replica started.
    func now() -> Double {
        Double((NIODeadline.now() - self.start).nanoseconds) / 1e9
    }

    public var faults: FaultPlan {
        get { self.core.withLockedValue { $0.faults } }
    }

    public func setFaults(_ plan: FaultPlan) {
        self.core.withLockedValue { $0.faults = plan }
    }

    /// Health requests answered in `flap` mode so far.
    public var healthFlaps: UInt64 { self.core.withLockedValue { $0.flaps } }

    /// For the `flap` health fault: whether this health request fails (the 1st, 3rd, 5th, ...).
    func nextHealthFlapFails() -> Bool {
        self.core.withLockedValue { c in
            c.flaps += 1
            return c.flaps % 2 == 1
        }
    }

    /// A new request number (for ids and deterministic fault choices).
    func nextRequestNumber() -> UInt64 {
        self.core.withLockedValue { c in
            c.nextID += 1
            return c.nextID
        }
    }

    /// Counts an HTTP request and, for generation, hands out its number and the fault plan: one lock round trip.
    func begin(_ handler: HTTPHandlerName, method: String) -> (number: UInt64, faults: FaultPlan) {
        self.core.withLockedValue { c in
            c.stats.httpCounts[handler.rawValue, default: [:]][method, default: 0] += 1
            c.nextID += 1
            return (c.nextID, c.faults)
        }
    }

    func count(_ update: (inout ReplicaCounters) -> Void) {
        self.core.withLockedValue { update(&$0.stats) }
    }

    // MARK: - Requests

    /// Admits a request. In instant mode the result is immediate (cached tokens); in timed mode
    /// the sink gets the first token, each token and the end, on the engine loop.
    func submit(_ input: EngineInput, id: Int, output: [UInt8], sink: @escaping EngineSink) -> InstantResult? {
        let chain = input.chain(blockTokens: self.settings.blockTokens)
        let extra = self.outputChain(input, chain: chain, output: output)[...]
        let arrival = self.now()
        let request = EngineRequest(id: id, chain: chain, promptTokens: input.promptTokens, outputTokens: input.maxTokens)
        if self.settings.instant {
            return self.core.withLockedValue { c in
                c.stats.requests += 1
                // Admitted and released at once: one pass that counts the lookup and records the blocks.
                let cached = c.engine.cache.lookupThenRecord(chain, promptTokens: input.promptTokens)
                c.engine.cache.insertReleased(extra)
                c.stats.finish(prompt: input.promptTokens, cached: cached, generated: input.maxTokens, ttft: 0, e2e: 0, queue: 0, prefill: 0, decode: 0, maxTokens: input.maxTokens)
                return InstantResult(cachedTokens: cached)
            }
        }
        let schedule: Bool = self.core.withLockedValue { c in
            c.stats.requests += 1
            c.engine.submit(request, at: arrival)
            c.sinks[id] = sink
            c.jobs[id] = Job(arrival: arrival, promptTokens: input.promptTokens, maxTokens: input.maxTokens, outputChain: extra)
            if let at = c.pumpAt, at <= arrival { return false }
            c.pumpAt = arrival
            return true
        }
        if schedule { self.engineLoop.execute { self.pump() } }
        return nil
    }

    /// The blocks the answer adds after the prompt, as the next turn will render it.
    func outputChain(_ input: EngineInput, chain: [UInt64], output: [UInt8]) -> [UInt64] {
        // Chat-rendered answers (chat, Responses, Messages) end their turn in the next prompt.
        let tail = input.api == .chat || input.chatMessages != nil ? output + ChatTemplate.endOfTurn : output
        return input.chain(continuing: chain, with: tail, blockTokens: self.settings.blockTokens)
    }

    /// The client went away: stop generating and free the blocks.
    func cancel(id: Int) {
        self.core.withLockedValue { c in
            guard c.sinks.removeValue(forKey: id) != nil else { return }
            c.jobs[id] = nil
            c.engine.cancel(id: id)
            c.stats.cancelled += 1
        }
    }

    /// One engine step (or delivery of the events of the step that just ended).
    func pump() {
        let now = self.now()
        var deliveries: [(EngineSink, EngineEvent)] = []
        let next: Double? = self.core.withLockedValue { c in
            c.pumpAt = nil
            c.pending += c.engine.advance(to: now + 1e-6)
            var later: [EngineEvent] = []
            for event in c.pending {
                guard event.time <= now + 1e-6 else {
                    later.append(event)
                    continue
                }
                self.account(event, in: &c)
                if let sink = c.sinks[event.id] {
                    deliveries.append((sink, event))
                    if event.kind == .finished || event.kind == .rejected { c.sinks[event.id] = nil }
                }
            }
            c.pending = later
            let next = c.engine.isIdle ? later.map(\.time).min() : max(c.engine.clock, now + 0.0005)
            c.pumpAt = next
            return next
        }
        for (sink, event) in deliveries { sink(event) }
        if let next {
            self.engineLoop.scheduleTask(deadline: self.start + .nanoseconds(Int64(next * 1e9))) { self.pump() }
        }
    }

    /// Updates the counters and histograms for an event.
    private func account(_ event: EngineEvent, in c: inout Core) {
        guard var job = c.jobs[event.id] else { return }
        switch event.kind {
        case .firstToken(let cached):
            job.firstToken = event.time
            job.lastToken = event.time
            c.stats.ttft.observe(event.time - job.arrival)
            c.stats.pendingCached[event.id] = cached
            c.jobs[event.id] = job
        case .token:
            if let last = job.lastToken { c.stats.interToken.observe(event.time - last) }
            job.lastToken = event.time
            c.jobs[event.id] = job
        case .finished:
            let first = job.firstToken ?? event.time
            let cached = c.stats.pendingCached.removeValue(forKey: event.id) ?? 0
            c.engine.cache.insertReleased(job.outputChain)
            let prefill = max(0, first - job.arrival)
            c.stats.finish(
                prompt: job.promptTokens, cached: cached, generated: job.maxTokens, ttft: nil,
                e2e: event.time - job.arrival, queue: 0, prefill: prefill, decode: event.time - first, maxTokens: job.maxTokens
            )
            c.jobs[event.id] = nil
        case .rejected:
            c.stats.errors += 1
            c.jobs[event.id] = nil
        }
    }

    // MARK: - Introspection

    /// Requests waiting and running, KV usage: what `/metrics` and `/v1/loads` report.
    func load() -> (waiting: Int, running: Int, kvUsage: Double, active: Int) {
        self.core.withLockedValue { c in
            (c.engine.waitingCount, c.engine.runningCount, c.engine.cache.usage, c.sinks.count)
        }
    }

    /// A stored response (nil when not stored here, or when storing is off).
    func storedResponse(_ id: String) -> ResponseStore.Entry? {
        guard self.settings.storeResponses else { return nil }
        return self.responses.withLockedValue { $0.entries[id] }
    }

    func store(response id: String, _ entry: ResponseStore.Entry) {
        self.responses.withLockedValue { $0.put(id, entry) }
    }

    /// Forgets the prefix cache (`POST /reset_prefix_cache`, `POST /flush_cache`).
    func resetCache() {
        self.core.withLockedValue { $0.engine.cache.reset() }
    }

    public var stats: ReplicaCounters { self.core.withLockedValue { $0.stats } }

    /// The prefix-cache counters: queried and hit tokens.
    public var cacheCounters: (queried: Int, hits: Int) {
        self.core.withLockedValue { ($0.engine.cache.queriedTokens, $0.engine.cache.hitTokens) }
    }
}

/// The handlers `http_requests_total` distinguishes (vLLM labels requests by route).
enum HTTPHandlerName: String, Sendable {
    case chat = "/v1/chat/completions"
    case completions = "/v1/completions"
    case generate = "/generate"
    case responses = "/v1/responses"
    case messages = "/v1/messages"
    case countTokens = "/v1/messages/count_tokens"
    case health = "/health"
    case metrics = "/metrics"
    case models = "/v1/models"
    case tokenize = "/tokenize"
    case other
}

public struct InstantResult: Sendable {
    public var cachedTokens: Int
}

/// Counters and histograms of an emulated replica, named after vLLM's metrics.
public struct ReplicaCounters: Sendable {
    public var requests = 0
    public var completed = 0
    public var cancelled = 0
    public var errors = 0
    public var faulted = 0
    public var promptTokens = 0
    public var cachedTokens = 0
    public var generationTokens = 0
    var pendingCached: [Int: Int] = [:]
    var ttft = HistogramCounts(bounds: VLLMBuckets.ttft)
    var interToken = HistogramCounts(bounds: VLLMBuckets.latency)
    var e2e = HistogramCounts(bounds: VLLMBuckets.requestTime)
    var queue = HistogramCounts(bounds: VLLMBuckets.requestTime)
    var prefill = HistogramCounts(bounds: VLLMBuckets.requestTime)
    var decode = HistogramCounts(bounds: VLLMBuckets.requestTime)
    var inference = HistogramCounts(bounds: VLLMBuckets.requestTime)
    var perOutputToken = HistogramCounts(bounds: VLLMBuckets.latency)
    var promptHistogram = HistogramCounts(bounds: VLLMBuckets.tokens)
    var generationHistogram = HistogramCounts(bounds: VLLMBuckets.tokens)
    var maxTokensHistogram = HistogramCounts(bounds: VLLMBuckets.tokens)
    var computedHistogram = HistogramCounts(bounds: VLLMBuckets.tokens)
    /// Requests by handler and method.
    public var httpCounts: [String: [String: Int]] = [:]

    mutating func finish(
        prompt: Int,
        cached: Int,
        generated: Int,
        ttft: Double?,
        e2e: Double,
        queue: Double,
        prefill: Double,
        decode: Double,
        maxTokens: Int
    ) {
        self.completed += 1
        self.promptTokens += prompt
        self.cachedTokens += cached
        self.generationTokens += generated
        if let ttft { self.ttft.observe(ttft) }
        self.e2e.observe(e2e)
        self.queue.observe(queue)
        self.prefill.observe(prefill)
        self.decode.observe(decode)
        self.inference.observe(prefill + decode)
        if generated > 1 { self.perOutputToken.observe(decode / Double(generated - 1)) }
        self.promptHistogram.observe(Double(prompt))
        self.generationHistogram.observe(Double(generated))
        self.maxTokensHistogram.observe(Double(maxTokens))
        self.computedHistogram.observe(Double(prompt - cached))
    }
}

/// Bucket boundaries as vLLM 0.32 exposes them.
enum VLLMBuckets {
    static let tokens: [Double] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]
    static let iteration: [Double] = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
    static let n: [Double] = [1, 2, 5, 10, 20]
    static let ttft: [Double] = [
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560,
    ]
    static let latency: [Double] = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80]
    static let requestTime: [Double] = [
        0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680,
    ]
    static let preemptions: [Double] = [1, 2, 3, 4, 5, 10, 20]
}
