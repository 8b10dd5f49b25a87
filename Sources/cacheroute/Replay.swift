import ArgumentParser
import FastJSON
import Foundation
import HTTPTransport
import LiveLoad
import NIOPosix
import RouterConfig
import RoutingCore
import TraceReplay

struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay a trace against a live OpenAI-compatible endpoint (cacheroute, another router, or one replica).",
        discussion: """
            Sends the trace's requests with its timing (scaled by --time-scale, each jittered within \
            --jitter seconds of trace time), at most --concurrency in flight, streaming on; records \
            time to first token and totals. With --replica (repeatable) it reads those replicas' \
            own prefix-cache counters before and after, for the fleet hit ratio as they count it.

            Traces: Mooncake-style JSONL (timestamp, input_length, output_length, hash_ids) or JSONL \
            of OpenAI request bodies (timestamp, body, path, headers); see `cacheroute simulate --help`.
            """
    )

    @Option(help: "The trace file (JSONL).")
    var trace: String

    @Option(help: "Where to send the requests, e.g. http://127.0.0.1:8080.")
    var target: String

    @Option(name: .customLong("time-scale"), help: "Divide trace timestamps by this (2 = twice as fast).")
    var timeScale = 1.0

    @Option(help: "Jitter each request uniformly within this many seconds of trace time (the Mooncake traces step in 3 s).")
    var jitter = 3.0

    @Option(help: "Requests in flight at most.")
    var concurrency = 64

    @Option(help: "Stop sending after this many seconds.")
    var duration: Double?

    @Option(name: .customLong("max-requests"), help: "Send at most this many requests.")
    var maxRequests: Int?

    @Option(help: "Model name for requests rendered from hash ids.")
    var model = "cacheroute-demo"

    @Option(name: .customLong("replica"), help: "A replica URL whose /metrics prefix-cache counters count toward the fleet hit ratio (repeatable).")
    var replicas: [String] = []

    @Option(help: "Seconds an answer may stall (head or between chunks) before it counts as failed.")
    var timeout = 300.0

    @Option(help: "Seed of the jitter.")
    var seed: UInt64 = 1

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func run() async throws {
        let target: ReplicaURL
        switch ReplicaURL.parse(self.target) {
        case .success(let url): target = url
        case .failure(let error):
            printError("--target: \(error.description)")
            throw ExitCode(1)
        }
        var replicaURLs: [ReplicaURL] = []
        for text in self.replicas {
            switch ReplicaURL.parse(text) {
            case .success(let url): replicaURLs.append(url)
            case .failure(let error):
                printError("--replica: \(error.description)")
                throw ExitCode(1)
            }
        }
        guard self.timeScale > 0, self.concurrency > 0 else {
            printError("--time-scale and --concurrency must be positive")
            throw ExitCode(1)
        }
        let trace = try loadTrace(self.trace)
        var settings = ReplaySettings()
        settings.timeScale = self.timeScale
        settings.jitterSeconds = self.jitter
        settings.concurrency = self.concurrency
        settings.durationSeconds = self.duration
        settings.maxRequests = self.maxRequests
        settings.requestTimeout = self.timeout
        settings.seed = self.seed
        var renderer = TraceRenderer(trace: trace, model: self.model)
        renderer.stream = true
        let http = HTTPClient(group: MultiThreadedEventLoopGroup.singleton)
        let endpoints = replicaURLs.map { (host: $0.host, port: $0.port) }
        let before = await FleetCounters.read(endpoints, client: http)
        let progress = ProgressBar(enabled: !self.json, total: 1)
        let result = await LiveReplay.run(
            trace: trace,
            renderer: renderer,
            target: target,
            settings: settings,
            client: StreamingClient(client: http)
        ) { done, total in
            progress.update(stage: 0, fraction: Double(done) / Double(max(1, total)), label: "\(done)/\(total) requests")
        }
        progress.finish()
        // Let the replicas' counters settle (a cancelled tail), then read them again.
        try? await Task.sleep(for: .milliseconds(200))
        let after = await FleetCounters.read(endpoints, client: http)
        let report = ReplayReport(result: result, fleet: FleetCounters.hitRatio(before: before, after: after), replicas: replicaURLs.count)
        if self.json {
            print(report.json.pretty)
        } else {
            report.printTable(trace: self.trace, target: self.target)
        }
    }
}

/// The summary of a live replay.
struct ReplayReport {
    var result: ReplayResult
    /// The replicas' own counters (nil without --replica).
    var fleet: (ratio: Double, queries: Double)?
    var replicas: Int

    var ok: [ReplaySample] { self.result.samples.filter { $0.answer.ok } }

    static func percentile(_ values: [Double], _ p: Double) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
    }

    var ttfts: [Double] { self.ok.compactMap(\.answer.ttft) }
    var totals: [Double] { self.ok.map(\.answer.seconds) }

    /// Router-observed ratio from `usage` (cached over prompt tokens), where answers carried it.
    var observed: Double? {
        let with = self.ok.filter { $0.answer.promptTokens != nil && $0.answer.cachedTokens != nil }
        let prompt = with.reduce(0) { $0 + ($1.answer.promptTokens ?? 0) }
        return prompt > 0 ? Double(with.reduce(0) { $0 + ($1.answer.cachedTokens ?? 0) }) / Double(prompt) : nil
    }

    var errors: [String: Int] {
        var out: [String: Int] = [:]
        for s in self.result.samples where !s.answer.ok {
            let key = s.answer.status == 0 ? "connect/stream" : s.answer.status == 200 ? "stream error" : "HTTP \(s.answer.status)"
            out[key, default: 0] += 1
        }
        return out
    }

    var byReplica: [String: Int] {
        var out: [String: Int] = [:]
        for s in self.ok { if let r = s.answer.replica { out[r, default: 0] += 1 } }
        return out
    }

    var json: JSONValue {
        func num(_ v: Double?) -> JSONValue { v.map { .double($0) } ?? .null }
        return .object([
            "requests": .int(Int64(self.result.samples.count)),
            "ok": .int(Int64(self.ok.count)),
            "errors": .int(Int64(self.result.samples.count - self.ok.count)),
            "error_kinds": .object(self.errors.sorted { $0.key < $1.key }.map { JSONValue.Member($0.key, .int(Int64($0.value))) }),
            "not_sent": .int(Int64(self.result.notSent)),
            "delayed": .int(Int64(self.result.delayed)),
            "wall_seconds": .double(self.result.wallSeconds),
            "throughput_rps": .double(Double(self.ok.count) / max(1e-9, self.result.wallSeconds)),
            "ttft_p50": num(Self.percentile(self.ttfts, 0.5)),
            "ttft_p99": num(Self.percentile(self.ttfts, 0.99)),
            "total_p50": num(Self.percentile(self.totals, 0.5)),
            "total_p99": num(Self.percentile(self.totals, 0.99)),
            "hit_ratio": num(self.fleet?.ratio),
            "hit_ratio_source": .string(self.fleet != nil ? "replica counters" : "none (pass --replica)"),
            "observed_hit_ratio": num(self.observed),
            "replicas": .object(self.byReplica.sorted { $0.key < $1.key }.map { JSONValue.Member($0.key, .int(Int64($0.value))) }),
        ])
    }

    func printTable(trace: String, target: String) {
        func ms(_ v: Double?) -> String { v.map { "\(Int(($0 * 1000).rounded())) ms" } ?? "-" }
        func pct(_ v: Double?) -> String { v.map { "\(Int(($0 * 1000).rounded()) / 10).\(Int(($0 * 1000).rounded()) % 10) %" } ?? "-" }
        print("replay of \(trace) against \(target)")
        print("requests        \(self.result.samples.count) sent, \(self.ok.count) ok, \(self.result.samples.count - self.ok.count) failed, \(self.result.notSent) not sent (bounds), \(self.result.delayed) delayed by the concurrency limit")
        if !self.errors.isEmpty { print("failures        " + self.errors.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")) }
        print("wall time       \(Demo.format(self.result.wallSeconds)) s, \(Demo.format(Double(self.ok.count) / max(1e-9, self.result.wallSeconds))) req/s")
        print("TTFT            p50 \(ms(Self.percentile(self.ttfts, 0.5))), p99 \(ms(Self.percentile(self.ttfts, 0.99)))")
        print("total           p50 \(ms(Self.percentile(self.totals, 0.5))), p99 \(ms(Self.percentile(self.totals, 0.99)))")
        if let fleet = self.fleet {
            print("fleet hit ratio \(pct(fleet.ratio)) of \(Int(fleet.queries)) prompt tokens looked up (the \(self.replicas) replicas' own counters)")
        } else {
            print("fleet hit ratio - (pass --replica URL for each replica to read their counters)")
        }
        if let observed = self.observed { print("observed        \(pct(observed)) of prompt tokens reported cached in answers (usage)") }
        if !self.byReplica.isEmpty {
            print("served by       " + self.byReplica.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
    }
}
