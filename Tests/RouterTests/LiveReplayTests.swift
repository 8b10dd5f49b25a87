import CacheRouteTestSupport
import HTTPTransport
import LiveLoad
import NIOPosix
import ReplicaEmulator
import ReplicaModel
import RouterConfig
import RoutingCore
import Admin
import CacheRouteRuntime
import DataPlane
import Discovery
import FleetState
import ReplicaProbes
import Telemetry
import Testing
import TraceReplay

@Suite(.serialized)
struct LiveReplayTests {
    /// Ten conversations of three turns each (each turn extends the previous prompt), over 3 s of trace time.
    static func conversationTrace() -> Trace {
        var lines: [String] = []
        for turn in 0..<3 {
            for c in 0..<10 {
                let ids = (0...turn).map { c * 100 + $0 }
                let ts = turn * 1000 + c * 50
                lines.append(#"{"timestamp": \#(ts), "input_length": \#(400 * (turn + 1)), "output_length": 4, "hash_ids": \#(ids)}"#)
            }
        }
        return Trace.parse(Array(lines.joined(separator: "\n").utf8), name: "tiny")
    }

    @Test func theReplayerDrivesARouterAndReadsTheReplicasCounters() async throws {
        try await withRouter(2, emulator: { s, _ in
            s.instant = false
            s.timing.speed = 20
        }) { router, servers in
            let trace = Self.conversationTrace()
            #expect(trace.requests.count == 30 && trace.warnings.isEmpty)
            let http = HTTPClient(group: MultiThreadedEventLoopGroup.singleton)
            let endpoints = servers.map { (host: "127.0.0.1", port: $0.port) }
            let before = await FleetCounters.read(endpoints, client: http)
            var settings = ReplaySettings()
            settings.timeScale = 2
            settings.jitterSeconds = 0.5
            settings.concurrency = 8
            let clock = ContinuousClock()
            let started = clock.now
            let result = await LiveReplay.run(
                trace: trace,
                renderer: TraceRenderer(trace: trace),
                target: ReplicaURL(host: "127.0.0.1", port: router.proxy.port),
                settings: settings,
                client: StreamingClient(client: http)
            )
            let took = clock.now - started
            #expect(result.samples.count == 30)
            #expect(result.samples.allSatisfy { $0.answer.ok }, "\(result.samples.compactMap(\.answer.error))")
            #expect(result.samples.allSatisfy { $0.answer.ttft != nil && $0.answer.text.count == 16 })
            // Trace time 2.05 s (+ jitter), halved: the schedule is kept, not rushed.
            #expect(took > .milliseconds(900), "\(took)")
            #expect(result.samples.map(\.sentAt).max() ?? 0 > 0.9)
            let after = await FleetCounters.read(endpoints, client: http)
            let fleet = try #require(FleetCounters.hitRatio(before: before, after: after))
            // Turns 2 and 3 find their earlier turns cached (the router keeps conversations together).
            #expect(fleet.ratio > 0.3, "\(fleet)")
            let served = Set(result.samples.compactMap(\.answer.replica))
            #expect(served == ["r1", "r2"])
        }
    }

    @Test func theDurationBoundStopsSending() async throws {
        try await TestSupport.withEmulators(1) { servers in
            let trace = Self.conversationTrace()
            var settings = ReplaySettings()
            settings.timeScale = 1
            settings.jitterSeconds = 0
            settings.durationSeconds = 0.5
            let result = await LiveReplay.run(
                trace: trace,
                renderer: TraceRenderer(trace: trace),
                target: ReplicaURL(host: "127.0.0.1", port: servers[0].port),
                settings: settings,
                client: StreamingClient(client: HTTPClient(group: MultiThreadedEventLoopGroup.singleton))
            )
            #expect(result.samples.count == 10)
            #expect(result.notSent == 20)
        }
    }
}
