import DequeModule
import RealModule
import ReplicaModel
import RoutingCore

/// A routing policy to simulate: cacheroute's own placement, or a baseline.
public enum SimulatedPolicy: Sendable {
    case cacheroute(name: String, settings: FleetSettings)
    case baseline(BaselinePolicy)

    public var name: String {
        switch self {
        case .cacheroute(let name, _): name
        case .baseline(let b): b.rawValue
        }
    }

    /// Parses `cacheroute`, `cacheroute-static` (the placement before speeds were learned: fixed
    /// speeds, bounded-load and probe ceilings as policy, no router queue), `round-robin`,
    /// `random`, `least-loaded`, `session-hash`.
    public static func named(_ name: String, settings: FleetSettings) -> SimulatedPolicy? {
        if name == "cacheroute" { return .cacheroute(name: name, settings: settings) }
        if name == "cacheroute-static" { return .cacheroute(name: name, settings: Self.staticSettings(settings)) }
        return BaselinePolicy(rawValue: name).map { .baseline($0) }
    }

    /// `settings` as the placement was before it learned speeds (2026-11): the comparison for
    /// the adaptive placement's goals.
    public static func staticSettings(_ settings: FleetSettings) -> FleetSettings {
        var s = settings
        s.routing.placement.learnSpeed = false
        s.routing.placement.loadFactor = 1.5
        s.routing.placement.ceilingFloor = 4
        s.routing.placement.maxWaiting = 64
        s.routing.placement.maxKVUsage = 0.98
        s.queue.enabled = false
        return s
    }
}

public struct SimulationOptions: Sendable {
    public var replicas = 8
    public var capacityTokens = 500_000
    /// KV block size of the simulated engines, in tokens (vLLM on GPU: 16).
    public var blockTokens = 16
    public var timing = EngineTiming()
    /// Trace timestamps are divided by this (2 = replay twice as fast).
    public var timeScale = 1.0
    /// Speed factor of each replica (cycled when fewer than the replicas), on top of `timing.speed`.
    public var replicaSpeeds: [Double]?
    /// How often the router sees probed queue depth and KV usage, in seconds.
    public var probeInterval = 2.0
    /// Buckets of the timeline (for plots), in seconds of virtual time.
    public var timelineBucket = 60.0
    /// Window over which each replica's in-flight count is time-averaged for the load imbalance.
    public var imbalanceWindow = 60.0

    public init() {}
}

/// A trace turned into what the simulation needs, once for every policy: arrival times, router
/// keys (the real key extraction over the rendered body) and the engine's block chain.
public struct PreparedTrace: Sendable {
    struct Item: Sendable {
        var arrival: Double
        /// The fairness key of the router's queue (the trace's group or session, when it has one).
        var tenant: String
        var keys: Result<RequestKeys, KeyError>
        var headers: [(String, String)]
        var engineChain: [UInt64]
        var promptTokens: Int
        var outputTokens: Int
    }

    var items: [Item]
    public var name: String
    public var skipped: [TraceWarning]

    public var count: Int { self.items.count }

    /// Renders and keys every request. `progress` gets the fraction done.
    public static func prepare(
        _ trace: Trace,
        options: SimulationOptions,
        keying: KeyingRules,
        progress: (Double) -> Void = { _ in }
    ) -> PreparedTrace {
        let renderer = TraceRenderer(trace: trace)
        var items: [Item] = []
        items.reserveCapacity(trace.requests.count)
        var skipped = trace.warnings
        let start = trace.requests.first?.timestampMs ?? 0
        for (n, request) in trace.requests.enumerated() {
            let rendered = renderer.render(request)
            let lookup: (String) -> String? = { name in rendered.headers.last { $0.0 == name }?.1 }
            let keys = KeyExtractor.extract(api: rendered.api, body: rendered.body, header: lookup, rules: keying)
            let input: EngineInput
            do {
                input = try EngineInput.parse(api: rendered.api, body: rendered.body)
            } catch {
                skipped.append(TraceWarning(line: request.line, message: "engine refused the request: \(error)"))
                continue
            }
            items.append(
                Item(
                    arrival: (request.timestampMs - start) / 1000 / options.timeScale,
                    tenant: Self.tenant(request),
                    keys: keys,
                    headers: rendered.headers,
                    engineChain: input.chain(blockTokens: options.blockTokens),
                    promptTokens: input.promptTokens,
                    outputTokens: rendered.outputTokens ?? input.maxTokens
                )
            )
            if n % 256 == 0 { progress(Double(n) / Double(max(1, trace.requests.count))) }
        }
        progress(1)
        return PreparedTrace(items: items, name: trace.name, skipped: skipped)
    }
}

extension PreparedTrace {
    /// The fairness key of a trace request: its group when the trace has groups (tenants sharing a
    /// prompt), else one tenant for all.
    static func tenant(_ request: TraceRequest) -> String {
        if case .hashed(let h) = request.content, let group = h.group { return "group-\(group)" }
        return ""
    }
}

/// What one policy did on a trace.
public struct PolicyResult: Sendable {
    public var name: String
    /// Token-weighted share of prompt tokens served from the replicas' prefix caches.
    public var hitRatio: Double
    /// Load imbalance: per window of `imbalanceWindow` seconds, each replica's time-averaged
    /// requests in flight, max over mean; median and 99th percentile over the windows (idle windows skipped).
    public var loadImbalanceP50: Double
    public var loadImbalanceP99: Double
    /// The same ratio sampled instantly at every arrival (noisy at low occupancy: 1 request against a mean of 0.25 reads 4).
    public var instantImbalanceP50: Double
    public var instantImbalanceP99: Double
    /// The per-window values behind the load imbalance percentiles.
    public var imbalanceWindows: [Double]
    /// Modeled time to first token, seconds.
    public var ttftP50: Double
    public var ttftP99: Double
    public var ttftMean: Double
    public var spills: Int
    public var tiers: [String: Int]
    public var perReplicaHitRatio: [Double]
    public var perReplicaRequests: [Int]
    public var requests: Int
    /// Requests never served: refused by the router's queue (full, or past their deadline) or by an engine.
    public var rejected: Int
    /// Of those, refused by the router's queue.
    public var queueRejected: Int
    /// Seconds requests waited in the router before going to a replica (every request sent counts; most wait 0).
    public var queueWaitMean: Double
    public var queueWaitP99: Double
    /// Requests that waited in the router at all.
    public var queued: Int
    public var completed: Int
    /// From the first arrival to the last answer, seconds.
    public var makespan: Double
    /// Completed requests per second of makespan.
    public var goodput: Double
    /// What the router learned of each replica's prefill speed (tokens/s) by the end (seeds for baselines).
    public var learnedPrefillTokensPerSecond: [Double]
    /// Per timeline bucket: fleet hit ratio and mean load imbalance.
    public var timeline: [(time: Double, hitRatio: Double, imbalance: Double)]
}

/// The reference bounds of a trace at a capacity.
public struct CacheBounds: Sendable {
    /// One infinite cache, arrival order: no router can beat it.
    public var ideal: Double
    /// One LRU cache of the whole fleet's capacity: perfect partitioning without duplication.
    public var globalLRU: Double
}

/// Replays a prepared trace in virtual time through the real routing core onto simulated replicas
/// (the emulator's cache and timing model).
public struct Simulator: Sendable {
    public var options: SimulationOptions
    public var trace: PreparedTrace

    public init(trace: PreparedTrace, options: SimulationOptions) {
        self.trace = trace
        self.options = options
    }

    /// The ideal and global-LRU bounds at the fleet's total capacity.
    public func bounds() -> CacheBounds {
        var seen = Set<UInt64>()
        var idealHits = 0
        var queried = 0
        var global = EngineCache(capacityTokens: self.options.capacityTokens * self.options.replicas, blockTokens: self.options.blockTokens)
        for item in self.trace.items {
            let usable = max(0, (item.promptTokens - 1) / self.options.blockTokens)
            var matched = 0
            for hash in item.engineChain {
                guard seen.contains(hash) else { break }
                matched += 1
            }
            idealHits += min(matched, usable) * self.options.blockTokens
            queried += item.promptTokens
            seen.formUnion(item.engineChain)
            global.lookupThenRecord(item.engineChain, promptTokens: item.promptTokens)
        }
        return CacheBounds(
            ideal: queried == 0 ? 0 : Double(idealHits) / Double(queried),
            globalLRU: global.queriedTokens == 0 ? 0 : Double(global.hitTokens) / Double(global.queriedTokens)
        )
    }

    /// Runs one policy. `progress` gets the fraction of requests placed.
    public func run(_ policy: SimulatedPolicy, progress: (Double) -> Void = { _ in }) -> PolicyResult {
        let n = self.options.replicas
        var settings = FleetSettings()
        switch policy {
        case .cacheroute(_, let s):
            settings = s
        case .baseline:
            settings.queue.enabled = false
        }
        var core = FleetRouter(
            settings: settings,
            replicas: (1...n).map { ReplicaSpec(name: "r\($0)", url: "http://sim/r\($0)", cacheTokens: self.options.capacityTokens) }
        )
        let fleet = core.fleet
        var engines = (0..<n).map { r in
            var timing = self.options.timing
            if let speeds = self.options.replicaSpeeds, !speeds.isEmpty { timing.speed *= speeds[r % speeds.count] }
            return EngineScheduler(cache: EngineCache(capacityTokens: self.options.capacityTokens, blockTokens: self.options.blockTokens), timing: timing)
        }
        let items = self.trace.items
        var placements = [Placement?](repeating: nil, count: items.count)
        var sentAt = [Double](repeating: 0, count: items.count)
        var firstTokenAt = [Double?](repeating: nil, count: items.count)
        var cachedTokens = [Int](repeating: 0, count: items.count)
        var inFlight = [Int](repeating: 0, count: n)
        var meter = LoadMeter(replicas: n, window: self.options.imbalanceWindow)
        var ttft: [Double] = []
        ttft.reserveCapacity(items.count)
        var queueWait: [Double] = []
        var imbalance: [Double] = []
        imbalance.reserveCapacity(items.count)
        var tiers: [String: Int] = [:]
        var rejected = 0
        var refusedByQueue = 0
        var completed = 0
        var lastFinish = 0.0
        var pending = EventHeap()
        var nextProbe = 0.0
        var timeline: [(time: Double, hitRatio: Double, imbalance: Double)] = []
        var bucketEnd = self.options.timelineBucket
        var bucketImbalance: [Double] = []
        var lastHits = 0
        var lastQueries = 0

        /// Sends request `i` to its placement's engine at `time`.
        func send(_ i: Int, _ placement: Placement, at time: Double) {
            let item = items[i]
            let replica = placement.replica
            placements[i] = placement
            sentAt[i] = time
            tiers[placement.decision.tier.rawValue, default: 0] += 1
            inFlight[replica] += 1
            meter.add(replica: replica, delta: 1, at: time)
            if time > item.arrival { queueWait.append(time - item.arrival) } else { queueWait.append(0) }
            engines[replica].submit(
                EngineRequest(id: i, chain: item.engineChain, promptTokens: item.promptTokens, outputTokens: item.outputTokens),
                at: time
            )
        }

        /// Queued requests that can go now go; those past their deadline are refused.
        func drainQueue(at time: Double) {
            for (request, placement) in core.dispatchQueued(now: time) { send(Int(request.id), placement, at: time) }
            for request in core.expireQueued(now: time) {
                _ = request
                rejected += 1
                refusedByQueue += 1
            }
        }

        func deliver(until time: Double) {
            while let event = pending.peek(), event.time <= time {
                pending.pop()
                let i = event.id
                switch event.kind {
                case .firstToken(let cached):
                    firstTokenAt[i] = event.time
                    cachedTokens[i] = cached
                    if let p = placements[i] { core.firstByte(&p.ticket) }
                    ttft.append(event.time - items[i].arrival)
                case .finished, .rejected:
                    guard let p = placements[i] else { break }
                    if event.kind == .rejected {
                        rejected += 1
                        _ = core.finish(p, outcome: .serverError(500), now: event.time)
                    } else {
                        completed += 1
                        lastFinish = max(lastFinish, event.time)
                        core.observe(
                            p, firstTokenSeconds: firstTokenAt[i].map { $0 - sentAt[i] }, seconds: event.time - sentAt[i],
                            promptTokens: items[i].promptTokens, cachedTokens: cachedTokens[i], outputTokens: items[i].outputTokens)
                        _ = core.finish(p, outcome: .success, now: event.time)
                    }
                    placements[i] = nil
                    inFlight[p.replica] -= 1
                    meter.add(replica: p.replica, delta: -1, at: event.time)
                case .token:
                    break
                }
                // Load dropped: what waits in the router may go now.
                drainQueue(at: event.time)
            }
        }

        func advance(to time: Double) {
            // Probes see the engines at their own times, between arrivals.
            while nextProbe <= time {
                for r in 0..<n {
                    for e in engines[r].advance(to: nextProbe) { pending.push(HeapEvent(time: e.time, id: e.id, kind: e.kind)) }
                }
                deliver(until: nextProbe)
                for r in 0..<n {
                    core.observeLoad(
                        fleet.replicas[r].name, waiting: engines[r].waitingCount, running: engines[r].runningCount, kvUsage: engines[r].cache.usage,
                        cacheTokens: nil)
                }
                drainQueue(at: nextProbe)
                nextProbe += self.options.probeInterval
            }
            for r in 0..<n {
                for e in engines[r].advance(to: time) { pending.push(HeapEvent(time: e.time, id: e.id, kind: e.kind)) }
            }
            deliver(until: time)
        }

        let deadline = settings.queue.timeoutSeconds
        for (i, item) in items.enumerated() {
            advance(to: item.arrival)
            while item.arrival >= bucketEnd {
                let hits = engines.reduce(0) { $0 + $1.cache.hitTokens }
                let queries = engines.reduce(0) { $0 + $1.cache.queriedTokens }
                let ratio = queries > lastQueries ? Double(hits - lastHits) / Double(queries - lastQueries) : 0
                let mean = bucketImbalance.isEmpty ? 1 : bucketImbalance.reduce(0, +) / Double(bucketImbalance.count)
                timeline.append((bucketEnd, ratio, mean))
                lastHits = hits
                lastQueries = queries
                bucketImbalance.removeAll(keepingCapacity: true)
                bucketEnd += self.options.timelineBucket
            }
            let total = inFlight.reduce(0, +)
            if total > 0 {
                let value = Double(inFlight.max()!) / (Double(total) / Double(n))
                imbalance.append(value)
                bucketImbalance.append(value)
            }
            switch policy {
            case .cacheroute:
                let request = QueuedRequest(
                    id: UInt64(i), keys: item.keys, headers: item.headers.map { (name: $0.0, value: $0.1) }, tenant: item.tenant,
                    enqueuedAt: item.arrival, deadline: item.arrival + deadline)
                switch core.admit(request, now: item.arrival) {
                case .placed(let placement): send(i, placement, at: item.arrival)
                case .queued: break
                case .rejected, .unplaced:
                    rejected += 1
                    refusedByQueue += 1
                }
            case .baseline(let b):
                guard let placement = core.route(baseline: b, item.keys, counter: UInt64(i), now: item.arrival).placement else {
                    rejected += 1
                    continue
                }
                send(i, placement, at: item.arrival)
            }
            if i % 128 == 0 { progress(Double(i) / Double(items.count)) }
        }
        // Load imbalance is measured while the trace arrives, not while the fleet drains afterwards.
        meter.stop(at: items.last?.arrival ?? 0)
        // Drain: the engines, and what still waits in the router.
        var t = items.last?.arrival ?? 0
        while engines.contains(where: { !$0.isIdle }) || !core.queue.isEmpty {
            t += 1
            advance(to: t)
            drainQueue(at: t)
        }
        deliver(until: .infinity)
        progress(1)

        let hits = engines.map(\.cache.hitTokens)
        let queries = engines.map(\.cache.queriedTokens)
        let start = items.first?.arrival ?? 0
        let makespan = max(0, lastFinish - start)
        return PolicyResult(
            name: policy.name,
            hitRatio: Double(hits.reduce(0, +)) / Double(max(1, queries.reduce(0, +))),
            loadImbalanceP50: Self.percentile(meter.samples, 0.5),
            loadImbalanceP99: Self.percentile(meter.samples, 0.99),
            instantImbalanceP50: Self.percentile(imbalance, 0.5),
            instantImbalanceP99: Self.percentile(imbalance, 0.99),
            imbalanceWindows: meter.samples,
            ttftP50: Self.percentile(ttft, 0.5),
            ttftP99: Self.percentile(ttft, 0.99),
            ttftMean: ttft.isEmpty ? 0 : ttft.reduce(0, +) / Double(ttft.count),
            spills: tiers["spill"] ?? 0,
            tiers: tiers,
            perReplicaHitRatio: zip(hits, queries).map { Double($0) / Double(max(1, $1)) },
            perReplicaRequests: engines.map(\.finishedRequests),
            requests: items.count,
            rejected: rejected,
            queueRejected: refusedByQueue,
            queueWaitMean: queueWait.isEmpty ? 0 : queueWait.reduce(0, +) / Double(queueWait.count),
            queueWaitP99: Self.percentile(queueWait, 0.99),
            queued: queueWait.filter { $0 > 0 }.count,
            completed: completed,
            makespan: makespan,
            goodput: makespan > 0 ? Double(completed) / makespan : 0,
            learnedPrefillTokensPerSecond: fleet.ids.map { core.router.service.estimate(replicaID: $0).prefillTokensPerSecond },
            timeline: timeline
        )
    }

    static func percentile(_ values: [Double], _ p: Double) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        let index = min(sorted.count - 1, max(0, Int((p * Double(sorted.count - 1)).rounded())))
        return sorted[index]
    }
}

/// Time-averaged requests in flight per replica, over fixed windows.
struct LoadMeter {
    var counts: [Int]
    var integrals: [Double]
    var last = 0.0
    var windowStart = 0.0
    let window: Double
    /// Max/mean of the window averages, one per window where the fleet was not idle.
    var samples: [Double] = []

    init(replicas: Int, window: Double) {
        self.counts = [Int](repeating: 0, count: replicas)
        self.integrals = [Double](repeating: 0, count: replicas)
        self.window = window
    }

    mutating func advance(to t: Double) {
        while t >= self.windowStart + self.window {
            let end = self.windowStart + self.window
            self.accumulate(until: end)
            let averages = self.integrals.map { $0 / self.window }
            let mean = averages.reduce(0, +) / Double(averages.count)
            // Skip idle windows: with less than a tenth of a request per replica there is no load to balance.
            if mean >= 0.1 { self.samples.append(averages.max()! / mean) }
            for i in self.integrals.indices { self.integrals[i] = 0 }
            self.windowStart = end
        }
        self.accumulate(until: t)
    }

    private mutating func accumulate(until t: Double) {
        let dt = t - self.last
        if dt > 0 {
            for i in self.counts.indices where self.counts[i] != 0 { self.integrals[i] += Double(self.counts[i]) * dt }
            self.last = t
        }
    }

    mutating func add(replica: Int, delta: Int, at t: Double) {
        if !self.stopped { self.advance(to: t) }
        self.counts[replica] += delta
    }

    var stopped = false

    /// Closes the windows that ended by `t` and stops sampling (a partial last window is dropped).
    mutating func stop(at t: Double) {
        self.advance(to: t)
        self.stopped = true
    }
}

/// Engine events waiting to be delivered, earliest first (ties in insertion order).
struct HeapEvent {
    var time: Double
    var id: Int
    var kind: EngineEvent.Kind
    var sequence = 0
}

struct EventHeap {
    private var items: [HeapEvent] = []
    private var counter = 0

    func peek() -> HeapEvent? { self.items.first }

    mutating func push(_ event: HeapEvent) {
        var e = event
        e.sequence = self.counter
        self.counter += 1
        self.items.append(e)
        var i = self.items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard Self.less(self.items[i], self.items[parent]) else { break }
            self.items.swapAt(i, parent)
            i = parent
        }
    }

    @discardableResult
    mutating func pop() -> HeapEvent? {
        guard !self.items.isEmpty else { return nil }
        self.items.swapAt(0, self.items.count - 1)
        let top = self.items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1
            let r = l + 1
            var m = i
            if l < self.items.count, Self.less(self.items[l], self.items[m]) { m = l }
            if r < self.items.count, Self.less(self.items[r], self.items[m]) { m = r }
            if m == i { break }
            self.items.swapAt(i, m)
            i = m
        }
        return top
    }

    static func less(_ a: HeapEvent, _ b: HeapEvent) -> Bool {
        a.time == b.time ? a.sequence < b.sequence : a.time < b.time
    }
}
