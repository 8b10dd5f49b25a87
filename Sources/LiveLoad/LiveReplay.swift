import HTTPTransport
import NIOHTTP1
import PrometheusText
import ReplicaProbes
import RouterConfig
import RoutingCore
import Synchronization
import TraceReplay

/// How a trace is replayed against a live endpoint.
public struct ReplaySettings: Sendable {
    /// Divide the trace's timestamps by this (2 = twice as fast).
    public var timeScale = 1.0
    /// Each request is sent at a uniformly random point of the `jitterSeconds` (trace time) after
    /// its timestamp: the Mooncake conversation trace records time in ~3 s steps.
    public var jitterSeconds = 3.0
    /// Requests in flight at most; later ones wait (and are counted as delayed).
    public var concurrency = 64
    /// Stop sending after this many seconds of wall time (nil: the whole trace).
    public var durationSeconds: Double?
    /// Send at most this many requests.
    public var maxRequests: Int?
    /// Bound on the head and every gap of an answer.
    public var requestTimeout = 300.0
    public var seed: UInt64 = 1

    public init() {}
}

/// One replayed request.
public struct ReplaySample: Sendable {
    public var line: Int
    /// Seconds after the replay started that it was sent.
    public var sentAt: Double
    public var answer: StreamedAnswer
}

public struct ReplayResult: Sendable {
    public var samples: [ReplaySample]
    /// Requests that waited for a concurrency slot past their time.
    public var delayed: Int
    /// Requests of the trace not sent (duration or count bound).
    public var notSent: Int
    public var wallSeconds: Double
}

/// Sends a trace's requests to an OpenAI-compatible endpoint with the trace's timing (scaled and
/// jittered), bounded concurrency and duration, streaming on, and records what each one saw.
public enum LiveReplay {
    public static func run(
        trace: Trace,
        renderer: TraceRenderer,
        target: ReplicaURL,
        settings: ReplaySettings,
        client: StreamingClient,
        progress: @escaping @Sendable (_ done: Int, _ total: Int) -> Void = { _, _ in }
    ) async -> ReplayResult {
        // The schedule: trace time, scaled, jittered (deterministic for the seed).
        var rng = SeededRandom(seed: settings.seed)
        let t0 = trace.requests.first?.timestampMs ?? 0
        var schedule = trace.requests.map { r -> (at: Double, request: TraceRequest) in
            let jitter = settings.jitterSeconds > 0 ? Double(rng.next() % 1_000_000) / 1_000_000 * settings.jitterSeconds : 0
            return (((r.timestampMs - t0) / 1000 + jitter) / settings.timeScale, r)
        }
        schedule.sort { $0.at < $1.at }
        if let max = settings.maxRequests { schedule = Array(schedule.prefix(max)) }
        let total = schedule.count
        let clock = ContinuousClock()
        let start = clock.now
        func elapsed() -> Double {
            let d = clock.now - start
            return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        }
        let done = SharedCounter()
        var delayed = 0
        var sent = 0
        let samples: [ReplaySample] = await withTaskGroup(of: ReplaySample.self) { group in
            var collected: [ReplaySample] = []
            var inFlight = 0
            for (at, request) in schedule {
                if let limit = settings.durationSeconds, at > limit || elapsed() > limit { break }
                let wait = at - elapsed()
                if wait > 0 { try? await Task.sleep(for: .milliseconds(Int(wait * 1000))) }
                if inFlight >= settings.concurrency {
                    delayed += 1
                    if let s = await group.next() {
                        collected.append(s)
                        inFlight -= 1
                    }
                }
                let rendered = renderer.render(request)
                let sentAt = elapsed()
                sent += 1
                inFlight += 1
                group.addTask {
                    var headers = HTTPHeaders()
                    for (name, value) in rendered.headers { headers.add(name: name, value: value) }
                    let answer = await client.send(
                        host: target.host,
                        port: target.port,
                        path: target.pathPrefix + rendered.path,
                        body: rendered.body,
                        headers: headers,
                        timeout: settings.requestTimeout
                    )
                    progress(done.increment(), total)
                    return ReplaySample(line: request.line, sentAt: sentAt, answer: answer)
                }
            }
            for await s in group { collected.append(s) }
            return collected
        }
        return ReplayResult(samples: samples.sorted { $0.sentAt < $1.sentAt }, delayed: delayed, notSent: total - sent + (trace.requests.count - total), wallSeconds: elapsed())
    }
}

/// The prefix-cache counters of a set of replicas (their own `/metrics`), to measure a fleet's
/// hit ratio over a run as the replicas count it.
public enum FleetCounters {
    public struct Reading: Sendable {
        public var queries: Double
        public var hits: Double
    }

    /// Reads each `host:port` (nil where the scrape failed or the replica has no counters).
    public static func read(_ endpoints: [(host: String, port: Int)], client: HTTPClient) async -> [Reading?] {
        await withTaskGroup(of: (Int, Reading?).self) { group in
            for (i, e) in endpoints.enumerated() {
                group.addTask {
                    guard let r = try? await client.execute(HTTPClientRequest(host: e.host, port: e.port, path: "/metrics"), timeout: 5),
                        r.status == .ok
                    else { return (i, nil) }
                    let signals = ReplicaSignals(PrometheusParser.parse(r.bodyText), engine: .vllm)
                    return (i, signals.cacheCounters.map { Reading(queries: $0.queries, hits: $0.hits) })
                }
            }
            var out = [Reading?](repeating: nil, count: endpoints.count)
            for await (i, r) in group { out[i] = r }
            return out
        }
    }

    /// Hit ratio from readings before and after (counter resets count from zero).
    public static func hitRatio(before: [Reading?], after: [Reading?]) -> (ratio: Double, queries: Double)? {
        var queries = 0.0
        var hits = 0.0
        for (b, a) in zip(before, after) {
            guard let a else { continue }
            let b = b ?? Reading(queries: 0, hits: 0)
            let reset = a.queries < b.queries || a.hits < b.hits
            queries += reset ? a.queries : a.queries - b.queries
            hits += reset ? a.hits : a.hits - b.hits
        }
        return queries > 0 ? (hits / queries, queries) : nil
    }
}

/// A counter shared by concurrent tasks.
public final class SharedCounter: Sendable {
    private let value = Mutex(0)

    public init() {}

    /// Adds one; returns the new value.
    public func increment() -> Int {
        self.value.withLock { v in
            v += 1
            return v
        }
    }
}
