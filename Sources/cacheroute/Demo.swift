import ArgumentParser
import Admin
import CacheRouteRuntime
import DataPlane
import Foundation
import HTTPTransport
import LiveLoad
import Logging
import NIOCore
import NIOPosix
import ReplicaEmulator
import ReplicaModel
import ReplicaProbes
import RouterConfig
import RoutingCore
import Synchronization
import UnixSignals

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "See cacheroute work: four emulated replicas, the router in front, a chat workload, a comparison.",
        discussion: """
            Starts four emulated vLLM replicas (prefix cache, continuous batching, scaled timing) and the \
            router in front of them from an embedded configuration, replays a built-in multi-tenant \
            chat workload through it, then the same workload round-robin over four fresh replicas, \
            and prints per-replica requests, prefix-cache hit ratio (the replicas' own counters) and \
            time to first token for both. With --keep the router stays up for curl.
            """
    )

    @Option(help: "Router port (with --keep: where to curl).")
    var port = 8080

    @Option(name: .customLong("admin-port"), help: "Admin port (/metrics, /admin/replicas).")
    var adminPort = 9090

    @Flag(help: "Keep the router and its replicas running after the comparison (Ctrl-C stops).")
    var keep = false

    @Option(help: "Replica speed factor (1 = the modeled H100; higher runs the demo faster).")
    var speed = 2.0

    @Option(help: "A speed factor per replica on top of --speed, comma-separated (an unequal fleet: 1,1,2,2).")
    var speeds: String?

    @Option(help: "Conversations in flight at once.")
    var concurrency = 12

    @Option(name: .customLong("capacity-tokens"), help: "KV-cache capacity of each replica, in tokens.")
    var capacityTokens = 24_000

    @Option(help: "The API the workload speaks: chat, responses (OpenAI Responses) or messages (Anthropic Messages).")
    var api = "chat"

    /// The router's configuration; `REPLICAS` becomes the emulated fleet.
    static let embeddedConfig = """
        # cacheroute demo: the router in front of four local emulated replicas.
        listen: 127.0.0.1:PORT
        admin_listen: 127.0.0.1:ADMIN
        replicas:
        REPLICAS
        logging: {level: warning, access_log: false}
        health: {interval: 1s}
        """

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        let logger = Logger(label: "cacheroute.demo")
        let workload = DemoWorkload()
        let client = StreamingClient(client: HTTPClient(group: MultiThreadedEventLoopGroup.singleton))
        print(
            """
            cacheroute demo: 4 emulated vLLM replicas (\(self.capacityTokens / 1000)k-token KV cache each, timing x\(Self.format(self.speed))\(self.speeds.map { ", speeds \($0)" } ?? "")), \
            \(workload.conversations.count) conversations from 8 tenants, \(workload.requestCount) streamed \(self.api == "chat" ? "chat" : self.api == "responses" ? "Responses" : "Messages") requests, \(self.concurrency) at a time.
            """
        )
        let progress = ProgressBar(enabled: true, total: 2)

        // 1. Through cacheroute.
        let routed = try await self.startFleet(logger: logger)
        var config: RouterConfiguration
        do {
            config = try Self.config(port: self.port, adminPort: self.adminPort, replicas: routed)
        } catch {
            for s in routed { await s.stop() }
            throw error
        }
        let runtime: RouterRuntime
        do {
            runtime = try await RouterRuntime.start(config: config, configPath: nil, logger: logger)
        } catch {
            for s in routed { await s.stop() }
            printError("cannot listen on 127.0.0.1:\(self.port) or :\(self.adminPort) (\(error)); pick others with --port and --admin-port")
            throw ExitCode(1)
        }
        let probes = Task { try? await runtime.probes.run() }
        let api = self.requestAPI
        let viaRouter = await Self.drive(workload, api: api, concurrency: self.concurrency, progress: progress, stage: 0, label: "cacheroute") { _ in
            (runtime.proxy.port, nil, client)
        }

        // 2. The same workload round-robin over a fresh fleet.
        let plain = try await self.startFleet(logger: logger)
        let counter = SharedCounter()
        let viaRoundRobin = await Self.drive(workload, api: api, concurrency: self.concurrency, progress: progress, stage: 1, label: "round-robin") { _ in
            let server = plain[counter.increment() % plain.count]
            return (server.port, server.replica.settings.name, client)
        }
        progress.finish()
        for s in plain { await s.stop() }

        self.report(routed: (viaRouter, routed), roundRobin: (viaRoundRobin, plain))

        guard self.keep else {
            probes.cancel()
            await runtime.stop()
            for s in routed { await s.stop() }
            return
        }
        print(
            """

            The router is up on http://127.0.0.1:\(runtime.proxy.port) with the four replicas behind it. Try:
              curl -s http://127.0.0.1:\(runtime.proxy.port)/v1/chat/completions -H 'content-type: application/json' \\
                -d '{"model":"cacheroute-demo","messages":[{"role":"user","content":"Hello"}],"max_tokens":8}' -i
              \(CommandLine.arguments[0]) explain --config <(echo '\(Self.inlineConfig(port: runtime.proxy.port, replicas: routed))') <<< '{"model":"cacheroute-demo","messages":[{"role":"user","content":"Hello"}]}'
              curl -s http://127.0.0.1:\(runtime.admin?.port ?? self.adminPort)/admin/replicas      # health, load, hit ratios
              curl -s http://127.0.0.1:\(runtime.admin?.port ?? self.adminPort)/metrics             # Prometheus
            Ctrl-C stops.
            """
        )
        let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm)
        for await _ in signals { break }
        probes.cancel()
        await runtime.stop(drain: 2)
        for s in routed { await s.stop() }
    }

    func validate() throws {
        if let text = self.speeds {
            let parts = text.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) > 0 }) else {
                throw ValidationError("--speeds: expected positive numbers separated by commas, got '\(text)'")
            }
        }
        guard self.speed > 0 else { throw ValidationError("--speed must be positive") }
        guard ["chat", "responses", "messages"].contains(self.api) else {
            throw ValidationError("--api: expected chat, responses or messages, got '\(self.api)'")
        }
    }

    var requestAPI: RequestAPI { RequestAPI(rawValue: self.api) ?? .chat }

    /// The per-replica factors of `--speeds` (1 for every replica without it).
    var speedFactors: [Double] {
        let parsed = (self.speeds ?? "").split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }.filter { $0 > 0 }
        return parsed.isEmpty ? [1] : parsed
    }

    func startFleet(logger: Logger) async throws -> [EmulatorServer] {
        var servers: [EmulatorServer] = []
        for i in 1...4 {
            var settings = EmulatorSettings()
            settings.name = "r\(i)"
            settings.capacityTokens = self.capacityTokens
            settings.timing.speed = self.speed * self.speedFactors[(i - 1) % self.speedFactors.count]
            servers.append(try await EmulatorServer.start(settings: settings, port: 0, logger: logger))
        }
        return servers
    }

    static func config(port: Int, adminPort: Int, replicas: [EmulatorServer]) throws -> RouterConfiguration {
        let list = replicas.map { "  - {name: \($0.replica.settings.name), url: \"http://127.0.0.1:\($0.port)\"}" }.joined(separator: "\n")
        let yaml = Self.embeddedConfig.replacingOccurrences(of: "ADMIN", with: String(adminPort)).replacingOccurrences(of: "PORT", with: String(port)).replacingOccurrences(of: "REPLICAS", with: list)
        return try RouterConfiguration.parse(yaml: yaml, file: "<embedded demo config>")
    }

    static func inlineConfig(port: Int, replicas: [EmulatorServer]) -> String {
        "replicas: [" + replicas.map { "{name: \($0.replica.settings.name), url: \"http://127.0.0.1:\($0.port)\"}" }.joined(separator: ", ") + "]"
    }

    /// One finished request as the demo client saw it.
    struct Sample: Sendable {
        var replica: String?
        var answer: StreamedAnswer
    }

    /// Runs every conversation turn by turn (each turn waits for the previous answer), `concurrency` conversations at a time.
    static func drive(
        _ workload: DemoWorkload,
        api: RequestAPI = .chat,
        concurrency: Int,
        progress: ProgressBar,
        stage: Int,
        label: String,
        target: @escaping @Sendable (Int) -> (port: Int, replica: String?, client: StreamingClient)
    ) async -> [Sample] {
        let total = workload.requestCount
        let done = SharedCounter()
        return await withTaskGroup(of: [Sample].self) { group in
            var all: [Sample] = []
            for (index, conversation) in workload.conversations.enumerated() {
                if index >= concurrency, let samples = await group.next() { all += samples }
                group.addTask {
                    var answers: [String] = []
                    var samples: [Sample] = []
                    for turn in conversation.turns.indices {
                        let (port, replica, client) = target(index)
                        let answer = await client.send(
                            host: "127.0.0.1",
                            port: port,
                            path: api.path,
                            body: workload.body(conversation, turn: turn, answers: answers, api: api),
                            timeout: 60
                        )
                        answers.append(answer.text.isEmpty ? "(no answer)" : answer.text)
                        samples.append(Sample(replica: replica ?? answer.replica, answer: answer))
                        progress.update(stage: stage, fraction: Double(done.increment()) / Double(total), label: label)
                    }
                    return samples
                }
            }
            for await samples in group { all += samples }
            return all
        }
    }

    func report(routed: ([Sample], [EmulatorServer]), roundRobin: ([Sample], [EmulatorServer])) {
        struct Row {
            var requests = 0
            var queried = 0
            var hits = 0
            var ttft: [Double] = []
        }
        func rows(_ samples: [Sample], _ servers: [EmulatorServer]) -> [Row] {
            var rows = servers.map { s -> Row in
                let c = s.replica.cacheCounters
                return Row(requests: s.replica.stats.requests, queried: c.queried, hits: c.hits)
            }
            for s in samples {
                if let name = s.replica, let i = servers.firstIndex(where: { $0.replica.settings.name == name }), let t = s.answer.ttft {
                    rows[i].ttft.append(t)
                }
            }
            return rows
        }
        let a = rows(routed.0, routed.1)
        let b = rows(roundRobin.0, roundRobin.1)
        func pct(_ hits: Int, _ queried: Int) -> String { queried == 0 ? "-" : Self.format(Double(hits) / Double(queried) * 100) + " %" }
        func ms(_ values: [Double], _ p: Double) -> String {
            guard !values.isEmpty else { return "-" }
            let sorted = values.sorted()
            return "\(Int((sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] * 1000).rounded())) ms"
        }
        func pad(_ s: String, _ n: Int) -> String { s + String(repeating: " ", count: max(0, n - s.count)) }
        let ttftA = routed.0.compactMap(\.answer.ttft)
        let ttftB = roundRobin.0.compactMap(\.answer.ttft)
        print("")
        print(pad("", 9) + pad("cacheroute", 33) + "| round-robin")
        let columns = pad("requests", 10) + pad("hit ratio", 11) + pad("TTFT p50", 12)
        print(pad("replica", 9) + columns + "| " + columns)
        func cells(_ r: Row) -> String { pad(String(r.requests), 10) + pad(pct(r.hits, r.queried), 11) + pad(ms(r.ttft, 0.5), 12) }
        for i in a.indices {
            print(pad("r\(i + 1)", 9) + cells(a[i]) + "| " + cells(b[i]))
        }
        let fa = (a.reduce(0) { $0 + $1.hits }, a.reduce(0) { $0 + $1.queried })
        let fb = (b.reduce(0) { $0 + $1.hits }, b.reduce(0) { $0 + $1.queried })
        func fleet(_ rows: [Row], _ hq: (Int, Int), _ ttft: [Double]) -> String {
            pad(String(rows.reduce(0) { $0 + $1.requests }), 10) + pad(pct(hq.0, hq.1), 11) + pad(ms(ttft, 0.5), 12)
        }
        print(pad("fleet", 9) + fleet(a, fa, ttftA) + "| " + fleet(b, fb, ttftB))
        print("")
        print("time to first token   cacheroute p50 \(ms(ttftA, 0.5)), p99 \(ms(ttftA, 0.99))   round-robin p50 \(ms(ttftB, 0.5)), p99 \(ms(ttftB, 0.99))")
        let failedA = routed.0.filter { !$0.answer.ok }.count
        let failedB = roundRobin.0.filter { !$0.answer.ok }.count
        print("failed requests       cacheroute \(failedA), round-robin \(failedB)")
        if fb.1 > 0, fa.1 > 0, fa.1 > fa.0 {
            let missA = fa.1 - fa.0
            let missB = fb.1 - fb.0
            print(
                "prefill work (prompt tokens not in cache)   cacheroute \(missA), round-robin \(missB): "
                    + "\(Self.format(Double(missB) / Double(missA)))x less with cacheroute"
            )
        }
    }

    static func format(_ value: Double) -> String {
        let tenths = Int((value * 10).rounded())
        return tenths % 10 == 0 ? "\(tenths / 10)" : "\(tenths / 10).\(tenths % 10)"
    }
}
