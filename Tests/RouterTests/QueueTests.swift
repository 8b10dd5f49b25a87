import CacheRouteRuntime
import CacheRouteTestSupport
import DataPlane
import FastJSON
import FleetState
import Foundation
import HTTPTransport
import NIOHTTP1
import ReplicaEmulator
import ReplicaModel
import RouterConfig
import RoutingCore
import Testing

/// The router's queue and learned speeds, live: emulated replicas with real timing.
@Suite(.serialized)
struct QueueTests {
    /// A prompt of about `tokens` tokens (4 bytes each), unique per `n`.
    static func body(_ n: Int, tokens: Int, stream: Bool = false) -> String {
        let text = "request \(n) " + String(repeating: "abcd", count: tokens)
        return #"{"model":"cacheroute-demo","max_tokens":2,"stream":\#(stream),"messages":[{"role":"user","content":"\#(text)"}]}"#
    }

    /// Twice what two slow replicas serve, at once: every request is answered (served, or 503
    /// with Retry-After by the queue's deadline), nothing else; the queue empties.
    @Test func anOverloadIsServedOrRefusedCleanly() async throws {
        try await withRouter(
            2,
            emulator: { s, _ in
                s.instant = false
                s.timing.speed = 0.1  // 2000 prefill tokens per second
            },
            config: { c, _ in
                c.queue.timeoutSeconds = 2
                c.queue.maxReplicaWaitSeconds = 1
                c.routing.placement.prefillTokensPerSecond = 2000  // the replicas' speed, as an operator would seed it
            }
        ) { router, servers in
            let port = router.proxy.port
            let started = Date()
            let results = try await withThrowingTaskGroup(of: (Int, String?, Double).self) { group in
                for n in 0..<24 {
                    group.addTask {
                        let t0 = Date()
                        let r = try await TestSupport.post(port, "/v1/chat/completions", Self.body(n, tokens: 1200), timeout: 30)
                        return (Int(r.status.code), r.headers["retry-after"].first, Date().timeIntervalSince(t0))
                    }
                }
                var all: [(Int, String?, Double)] = []
                for try await r in group { all.append(r) }
                return all
            }
            let served = results.filter { $0.0 == 200 }
            let refused = results.filter { $0.0 == 503 }
            #expect(served.count + refused.count == 24, "\(results.map(\.0))")
            #expect(served.count >= 4, "\(results.map(\.0))")
            #expect(refused.count >= 4, "the overload should have been refused in part: \(results.map(\.0))")
            #expect(refused.allSatisfy { $0.1.flatMap(Int.init).map { $0 >= 1 } == true })
            // A refusal comes by the queue's deadline (2 s), not after the whole overload.
            #expect(refused.allSatisfy { $0.2 < 4 }, "\(refused.map(\.2))")
            #expect(Date().timeIntervalSince(started) < 25)
            let queue = router.state.queueReport(drain: false)
            #expect(queue.depth == 0 && queue.bytes == 0)
            #expect(queue.queued >= refused.count && (queue.refused[.timeout] ?? 0) == refused.count)
            // Nothing refused reached a replica.
            let completed = servers.reduce(0) { $0 + $1.replica.stats.completed }
            #expect(completed == served.count)
        }
    }

    /// A client that leaves while its request waits in the queue takes it out: the replica
    /// never sees it, and the queue holds nothing afterwards.
    @Test func aClientLeavingTheQueueTakesItsRequestOut() async throws {
        try await withRouter(
            1,
            emulator: { s, _ in
                s.instant = false
                s.timing.speed = 0.05
            },
            config: { c, _ in
                c.queue.maxReplicaWaitSeconds = 0.5
                c.routing.placement.prefillTokensPerSecond = 1000
            }
        ) { router, servers in
            let port = router.proxy.port
            // Fill the replica's room, then send one more that waits, and leave.
            let first = Task { try await TestSupport.post(port, "/v1/chat/completions", Self.body(1, tokens: 1500), timeout: 60) }
            try await Task.sleep(for: .milliseconds(300))
            let waiting = Task {
                try await TestSupport.client.stream(
                    .post(host: "127.0.0.1", port: port, path: "/v1/chat/completions", json: Array(Self.body(2, tokens: 1500, stream: true).utf8)),
                    connectTimeout: 2, responseTimeout: 60)
            }
            #expect(try await eventually(10) { router.state.queueReport(drain: false).depth == 1 })
            // The client goes away: its connection closes while the request waits.
            waiting.cancel()
            _ = await eventually(10) { router.state.queueReport(drain: false).depth == 0 }
            #expect(router.state.queueReport(drain: false).depth == 0)
            #expect(try await first.value.status == .ok)
            try await Task.sleep(for: .milliseconds(300))
            #expect(servers[0].replica.stats.completed == 1)
        }
    }

    /// Two replicas, one twice as fast: the router learns it, and sends it more.
    @Test func theFasterReplicaIsLearnedAndGetsMore() async throws {
        try await withRouter(
            2,
            emulator: { s, i in
                s.instant = false
                s.timing.speed = i == 0 ? 0.2 : 0.4
            }
        ) { router, servers in
            let port = router.proxy.port
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<4 {
                    group.addTask {
                        for n in 0..<12 {
                            let r = try await TestSupport.post(port, "/v1/chat/completions", Self.body(worker * 100 + n, tokens: 1500), timeout: 30)
                            #expect(r.status == .ok)
                        }
                    }
                }
                try await group.waitForAll()
            }
            let report = router.state.replicaReport()
            let slow = try #require(report.first { $0.spec.name == "r1" }?.learned?.prefillTokensPerSecond)
            let fast = try #require(report.first { $0.spec.name == "r2" }?.learned?.prefillTokensPerSecond)
            #expect(fast > slow * 1.4, "learned \(slow) and \(fast) tokens/s")
            let served = servers.map(\.replica.stats.completed)
            #expect(served[1] > served[0], "\(served)")
        }
    }
}
