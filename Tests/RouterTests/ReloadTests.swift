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
            let checkedSoFar = NIOLockedValueBox(0)
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
                                if within { checkedSoFar.withLockedValue { $0 += 1 } }
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
                    // within one membership to check (a loaded machine serves fewer per round).
                    let deadline = ContinuousClock.now + .seconds(30)
                    var round = 0
                    while round < 24 || (checkedSoFar.withLockedValue { $0 } < 24 && ContinuousClock.now < deadline) {
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
