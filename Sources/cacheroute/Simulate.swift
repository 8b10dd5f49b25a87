import ArgumentParser
import FastJSON
import Foundation
import ReplicaModel
import RouterConfig
import RoutingCore
import TraceReplay

struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay a trace in virtual time through the routing core onto simulated replicas.",
        discussion: """
            Compares policies on the same trace: fleet hit ratio (and its ratio to the ideal and \
            global-LRU bounds), load imbalance, modeled TTFT, spills, per-replica hit ratios.

            Traces: Mooncake-style JSONL (timestamp, input_length, output_length, hash_ids) or \
            JSONL of OpenAI request bodies (timestamp, body, path, headers).
            """
    )

    @Option(help: "The trace file (JSONL).")
    var trace: String

    @Option(help: "Number of simulated replicas.")
    var replicas = 8

    @Option(name: .customLong("capacity-tokens"), help: "KV-cache capacity per replica, in tokens.")
    var capacityTokens = 500_000

    @Option(name: .customLong("block-tokens"), help: "KV block size of the simulated engines, in tokens.")
    var blockTokens = 16

    @Option(help: "Policies to compare, comma-separated: cacheroute, cacheroute-static (fixed speeds, load and probe ceilings as policy, no queue: the placement before 2026-12), round-robin, random, least-loaded, session-hash.")
    var policies = "cacheroute,round-robin,random,least-loaded,session-hash"

    @Option(help: "A cacheroute config file whose routing section cacheroute uses (default: built-in defaults).")
    var config: String?

    @Option(name: .customLong("time-scale"), help: "Divide trace timestamps by this (2 = twice as fast).")
    var timeScale = 1.0

    @Option(help: "Speed factor of the simulated engines (2 = twice as fast).")
    var speed = 1.0

    @Option(name: .customLong("replica-speeds"), help: "A speed factor per replica, comma-separated (0.5,0.5,1,1,1,1,2,2); cycled when shorter than --replicas.")
    var replicaSpeeds: String?

    @Option(name: .customLong("imbalance-window"), help: "Seconds over which in-flight counts are averaged for the load imbalance.")
    var imbalanceWindow = 60.0

    @Option(help: "Write a plot of hit ratio and load imbalance over time (SVG).")
    var plot: String?

    @Flag(help: "Print one JSON object with a 'policies' array instead of a table.")
    var json = false

    func run() async throws {
        var settings = FleetSettings()
        if let config = self.config {
            do {
                settings = try RouterConfiguration.load(path: config).fleetSettings
            } catch {
                printError(error.description)
                throw ExitCode(1)
            }
        }
        guard self.replicas >= 1, self.replicas <= 4096 else { throw ValidationError("--replicas must be 1...4096") }
        guard self.capacityTokens >= self.blockTokens else { throw ValidationError("--capacity-tokens must hold at least one block") }
        var chosen: [SimulatedPolicy] = []
        for name in self.policies.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !name.isEmpty {
            guard let p = SimulatedPolicy.named(name, settings: settings) else {
                throw ValidationError("unknown policy '\(name)' (cacheroute, cacheroute-static, round-robin, random, least-loaded, session-hash)")
            }
            chosen.append(p)
        }
        let trace = try loadTrace(self.trace)
        var options = SimulationOptions()
        options.replicas = self.replicas
        options.capacityTokens = self.capacityTokens
        options.blockTokens = self.blockTokens
        options.timeScale = self.timeScale
        options.timing.speed = self.speed
        if let text = self.replicaSpeeds {
            let speeds = text.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard !speeds.isEmpty, speeds.allSatisfy({ $0 != nil && $0! > 0 }) else {
                throw ValidationError("--replica-speeds: expected positive numbers separated by commas, got '\(text)'")
            }
            options.replicaSpeeds = speeds.map { $0! }
        }
        options.imbalanceWindow = self.imbalanceWindow

        let bar = ProgressBar(enabled: !self.json || isatty(2) != 0, total: chosen.count + 1)
        let prepared = PreparedTrace.prepare(trace, options: options, keying: settings.routing.keying) { bar.update(stage: 0, fraction: $0, label: "rendering") }
        let simulator = Simulator(trace: prepared, options: options)
        let started = Date()
        let results = await withTaskGroup(of: (Int, PolicyResult?, CacheBounds?).self) { group in
            group.addTask { (-1, nil, simulator.bounds()) }
            for (i, policy) in chosen.enumerated() {
                group.addTask { (i, simulator.run(policy) { bar.update(stage: i + 1, fraction: $0, label: policy.name) }, nil) }
            }
            var results = [PolicyResult?](repeating: nil, count: chosen.count)
            var bounds: CacheBounds?
            for await (i, result, b) in group {
                if let b { bounds = b }
                if let result { results[i] = result }
            }
            return (results.compactMap { $0 }, bounds!)
        }
        bar.finish()
        let report = SimulationReport(
            trace: trace.name,
            requests: prepared.count,
            skipped: prepared.skipped.count,
            options: options,
            bounds: results.1,
            policies: results.0,
            seconds: Date().timeIntervalSince(started)
        )
        if let plot = self.plot {
            try report.svg().write(toFile: plot, atomically: true, encoding: .utf8)
        }
        print(self.json ? report.json().pretty : report.table())
    }
}
