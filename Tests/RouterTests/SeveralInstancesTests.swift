import CacheRouteTestSupport
import Foundation
import HTTPTransport
import NIOHTTP1
import ReplicaEmulator
import ReplicaModel
import RouterConfig
import Admin
import CacheRouteRuntime
import DataPlane
import Discovery
import FleetState
import ReplicaProbes
import Telemetry
import RoutingCore
import Testing

/// Two cacheroute instances with one config in front of one fleet (two pods of the Kubernetes
/// Deployment, two hosts behind DNS round robin).
@Suite(.serialized)
struct SeveralInstancesTests {
    /// Starts two routers over the same emulated fleet and config.
    func withTwoRouters(_ body: (RouterRuntime, RouterRuntime) async throws -> Void) async throws {
        try await TestSupport.withEmulators(4) { servers in
            let c = testConfiguration(servers.map { ReplicaSpec(name: $0.replica.settings.name, url: "http://127.0.0.1:\($0.port)") })
            let a = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
            let b = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
            do {
                try await body(a, b)
            } catch {
                await a.stop()
                await b.stop()
                throw error
            }
            await a.stop()
            await b.stop()
        }
    }

    func route(_ runtime: RouterRuntime, _ path: String, _ body: String) async throws -> String {
        let r = try await TestSupport.post(runtime.proxy.port, path, body)
        #expect(r.status == .ok)
        return "\(r.headers["x-cacheroute-replica"].first ?? "-")/\(r.headers["x-cacheroute-tier"].first ?? "-")"
    }

    /// Chat conversations on a shared system prompt, on their own prompts, and completions.
    func mixedRequests() -> [(path: String, body: String)] {
        var requests: [(String, String)] = []
        for turn in 1...3 {
            for session in 0..<10 { requests.append(("/v1/chat/completions", chatBody(session: 9000 + session, turns: turn))) }
        }
        for i in 0..<10 {
            let own = String(repeating: "Tenant \(i) instructions: answer in the tenant's house style. ", count: 40)
            requests.append(("/v1/chat/completions", #"{"model":"cacheroute-demo","max_tokens":2,"messages":[{"role":"system","content":"\#(own)"},{"role":"user","content":"q\#(i)"}]}"#))
            requests.append(("/v1/completions", #"{"model":"cacheroute-demo","max_tokens":2,"prompt":"\#(own) Document \#(i)."}"#))
        }
        return requests
    }

    @Test func sameRequestsSameDecisions() async throws {
        try await withTwoRouters { a, b in
            // Each request through both instances in turn: with the same history they agree on
            // the replica and the tier of every request.
            var disagreements: [String] = []
            var replicas = Set<String>()
            for (path, body) in self.mixedRequests() {
                let first = try await self.route(a, path, body)
                let second = try await self.route(b, path, body)
                if first != second { disagreements.append("\(path): \(first) vs \(second)") }
                replicas.insert(String(first.split(separator: "/")[0]))
            }
            #expect(disagreements.isEmpty, "\(disagreements)")
            #expect(replicas.count >= 3, "the workload should spread over the fleet: \(replicas)")
        }
    }

    @Test func conversationsStayPutWhenTurnsAlternateBetweenInstances() async throws {
        try await withTwoRouters { a, b in
            // A client behind a round-robin balancer: turn t goes to instance t % 2, so the
            // instance routing turn 2 never saw turn 1. Placement comes from the keys, not from
            // the instance's history: every turn lands on the conversation's replica.
            // Tenants with their own system prompts, so the conversations spread over the fleet.
            func conversation(_ session: Int, turns: Int) -> String {
                let tenant = String(repeating: "Tenant \(session % 6) support desk: be concise and exact. ", count: 40)
                var messages = [#"{"role":"system","content":"\#(tenant)"}"#]
                for t in 0..<turns {
                    messages.append(#"{"role":"user","content":"Customer \#(session) question \#(t)."}"#)
                    if t < turns - 1 { messages.append(#"{"role":"assistant","content":"Answer \#(t)."}"#) }
                }
                return #"{"model":"cacheroute-demo","max_tokens":2,"messages":[\#(messages.joined(separator: ","))]}"#
            }
            var placements: [Int: Set<String>] = [:]
            for turn in 1...4 {
                for session in 0..<18 {
                    let router = turn % 2 == 0 ? a : b
                    let decision = try await self.route(router, "/v1/chat/completions", conversation(session, turns: turn))
                    placements[session, default: []].insert(String(decision.split(separator: "/")[0]))
                }
            }
            let moved = placements.filter { $0.value.count != 1 }
            #expect(moved.isEmpty, "conversations that changed replica: \(moved)")
            #expect(Set(placements.values.compactMap(\.first)).count >= 2)
        }
    }
}
