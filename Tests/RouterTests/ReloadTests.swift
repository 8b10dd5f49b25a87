import CacheRouteRuntime
import CacheRouteTestSupport
import DataPlane
import FastJSON
import FleetState
import NIOConcurrencyHelpers
import Foundation
import HTTPTransport
import NIOHTTP1
import ReplicaEmulator
import RouterConfig
import RoutingCore
import Telemetry
import Testing

/// Membership changes while traffic runs: a request uses the snapshot it was routed with, and a
/// replica that left gets nothing routed after it left.
@Suite(.serialized)
struct ReloadTests {
    /// The fleet shrinks from four replicas to two and grows back, over and over, while
    /// `GET /v1/models` and chat requests run in loops: nothing crashes, every answer is a success,
    /// and no request routed while a replica was out of the fleet went to it.
    @Test func shrinkingTheFleetUnderModelsAndRoutedTraffic() async throws {
        try await withRouter(4) { router, servers in
            let port = router.proxy.port
            let base = router.state.config
            let names = servers.map(\.replica.settings.name)
            // The membership in force: a generation number and its replica names.
            let current = NIOLockedValueBox((generation: 0, members: Set(names)))
            let stop = NIOLockedValueBox(false)
            let checkedSoFar = NIOLockedValueBox((count: 0, replicas: Set<String>()))
            struct Routed: Sendable {
                var replica: String
                var allowed: Set<String>?
            }
            let outcome = try await withThrowingTaskGroup(of: (routed: [Routed], statuses: [Int]).self) { group in
                for worker in 0..<3 {
                    group.addTask {
                        var routed: [Routed] = []
                        var statuses: [Int] = []
                        var i = 0
                        while !stop.withLockedValue({ $0 }) {
                            let before = current.withLockedValue { $0 }
                            // No shared instructions: sessions spread over the ring.
                            let body = #"{"model":"cacheroute-demo","max_tokens":2,"messages":[{"role":"user","content":"question \#(worker * 1000 + i % 29)"}]}"#
                            let r = try await TestSupport.post(port, "/v1/chat/completions", body)
                            let after = current.withLockedValue { $0 }
                            statuses.append(Int(r.status.code))
                            if let replica = r.headers["x-cacheroute-replica"].first {
                                // Routed within one membership: it must have been a member.
                                let within = before.generation == after.generation
                                routed.append(Routed(replica: replica, allowed: within ? before.members : nil))
                                if within { checkedSoFar.withLockedValue { $0.count += 1; $0.replicas.insert(replica) } }
                            }
                            i += 1
                        }
                        return (routed, statuses)
                    }
                }
                for _ in 0..<2 {
                    group.addTask {
                        var statuses: [Int] = []
                        while !stop.withLockedValue({ $0 }) {
                            let r = try await TestSupport.get(port, "/v1/models")
                            statuses.append(Int(r.status.code))
                            if r.status == .ok {
                                let ids = try JSONValue.parse(r.bodyBytes)["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue }
                                #expect(ids == ["cacheroute-demo"])
                            }
                        }
                        return ([], statuses)
                    }
                }
                group.addTask {
                    // At least 24 membership changes, and on until enough requests were routed
                    // within one membership to check, to at least three replicas (a loaded machine
                    // serves fewer per round).
                    let deadline = ContinuousClock.now + .seconds(40)
                    var round = 0
                    func enough() -> Bool { checkedSoFar.withLockedValue { $0.count >= 24 && $0.replicas.count >= 3 } }
                    while round < 24 || (!enough() && ContinuousClock.now < deadline) {
                        defer { round += 1 }
                        let members = round % 2 == 0 ? Array(servers.prefix(2)) : servers
                        var config = base
                        config.replicas = members.map { ReplicaSpec(name: $0.replica.settings.name, url: "http://127.0.0.1:\($0.port)") }
                        // Mark the change as in progress (generation -1 matches no request), apply, publish.
                        current.withLockedValue { $0 = (-1, Set(names)) }
                        router.state.apply(config)
                        current.withLockedValue { $0 = (round + 1, Set(config.replicas.map(\.name))) }
                        try await Task.sleep(for: .milliseconds(100))
                    }
                    stop.withLockedValue { $0 = true }
                    return ([], [])
                }
                var routed: [Routed] = []
                var statuses: [Int] = []
                for try await part in group {
                    routed += part.routed
                    statuses += part.statuses
                }
                return (routed: routed, statuses: statuses)
            }
            #expect(outcome.statuses.count > 50)
            #expect(outcome.statuses.allSatisfy { $0 == 200 }, "\(outcome.statuses.filter { $0 != 200 })")
            let checked = outcome.routed.filter { $0.allowed != nil }
            #expect(checked.count >= 12, "too few requests routed within one membership to check")
            let strays = checked.filter { !$0.allowed!.contains($0.replica) }
            #expect(strays.isEmpty, "routed to a replica out of the fleet: \(strays.map(\.replica))")
            // Requests went to the two replicas that come and go, too (the check means something).
            #expect(Set(checked.map(\.replica)).count >= 3)
        }
    }
}

@Suite(.serialized)
struct ReloadOnceTests {
    /// A change applied by SIGHUP is not applied (and counted) again when the file watcher sees it.
    @Test func aChangeIsAppliedOnceBySignalAndWatcherTogether() async throws {
        try await TestSupport.withEmulators(2) { servers in
            let path = NSTemporaryDirectory() + "cacheroute-reload-\(UUID().uuidString).yaml"
            defer { try? FileManager.default.removeItem(atPath: path) }
            func write(_ count: Int) throws {
                let replicas = servers.prefix(count).map { "  - {name: \($0.replica.settings.name), url: 'http://127.0.0.1:\($0.port)'}" }
                try (["listen: 127.0.0.1:0", "admin_listen: 127.0.0.1:0", "reload: {watch_file: true, poll_interval: 100ms}", "replicas:"] + replicas)
                    .joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
            }
            try write(1)
            let router = try await RouterRuntime.start(config: try RouterConfiguration.load(path: path), configPath: path, logger: TestSupport.logger)
            let watcher = Task { try? await router.reload?.run() }
            try await Task.sleep(for: .milliseconds(300))
            try write(2)
            // What SIGHUP does, at once; the watcher polls right after.
            #expect(router.reload?.reload(reason: "SIGHUP") == true)
            try await Task.sleep(for: .milliseconds(600))
            #expect(router.state.fleet.replicas.count == 2)
            let metrics = String(decoding: router.metrics.render(), as: UTF8.self)
            #expect(metrics.contains(#"cacheroute_config_reloads_total{result="success"} 1"#), "\(metrics.split(separator: "\n").filter { $0.contains("reloads") })")
            // A later change is still seen by the watcher alone.
            try write(1)
            try await Task.sleep(for: .milliseconds(600))
            #expect(router.state.fleet.replicas.count == 1)
            watcher.cancel()
            await router.stop()
        }
    }
}
