import CacheRouteRuntime
import CacheRouteTestSupport
import FleetState
import Foundation
import HTTPTransport
import Admin
import DataPlane
import Telemetry
import ReplicaEmulator
import ReplicaProbes
import RouterConfig
import RoutingCore
import Testing

/// The router's predictions against what replicas report, and a replica whose cache is gone.
@Suite(.serialized)
struct CacheTruthLiveTests {
    static let system = String(repeating: "You answer questions about the Acme product catalogue, briefly and politely. ", count: 30)

    static func body(_ n: Int, template: Int = 0) -> String {
        #"{"model":"cacheroute-demo","max_tokens":1,"messages":[{"role":"system","content":"Template \#(template). \#(system)"},{"role":"user","content":"question \#(n)"}]}"#
    }

    func truth(_ router: RouterRuntime) -> ReplicaReport { router.state.replicaReport()[0] }

    /// Predictions on a steady workload match what the replica reports; a restart is noticed
    /// within two probe intervals and its entries forgotten, so the first answers after it are not
    /// taken as predicted hits.
    @Test func aRestartedReplicaIsForgotten() async throws {
        try await withRouter(1, config: { c, _ in
            c.health.interval = 0.2
            c.health.timeout = 0.3
            c.health.metricsTimeout = 0.5
            c.health.thresholds.failureThreshold = 100  // the restart is seen by its start time, not by failed probes
        }) { router, servers in
            let probes = Task { try? await router.probes.run() }
            defer { probes.cancel() }
            #expect(await eventually { router.probes.isReady })
            for n in 0..<20 { _ = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", Self.body(n)) }
            let before = truth(router)
            #expect(before.indexBlocks > 0 && before.truth.reportedTokens > 0)
            let ratio = Double(before.truth.predictedTokens) / Double(before.truth.reportedTokens)
            #expect(abs(ratio - 1) < 0.15, "predicted \(before.truth.predictedTokens) vs reported \(before.truth.reportedTokens)")
            // A restart on the same port (a new process start time).
            try await Task.sleep(for: .seconds(1))
            let victim = servers[0]
            var settings = victim.replica.settings
            settings.instant = true
            let port = victim.port
            await victim.stop()
            let revived = try await EmulatorServer.start(settings: settings, port: port, logger: TestSupport.logger)
            defer { Task { await revived.stop() } }
            let restarted = ContinuousClock.now
            #expect(await eventually(5) { truth(router).truth.resets[.restart] == 1 })
            #expect(ContinuousClock.now - restarted < .milliseconds(600), "noticed within two probe intervals (0.2 s)")
            #expect(truth(router).indexBlocks == 0)
            let predictedBefore = truth(router).truth.predictedTokens
            _ = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", Self.body(100))
            let after = truth(router)
            #expect(after.truth.predictedTokens == predictedBefore, "the first answer after the restart was predicted a hit")
            #expect(after.truth.recent.isEmpty)
        }
    }

    /// `/reset_prefix_cache` changes nothing a probe sees: three predicted hits that come back
    /// uncached make the router forget, and they are listed in /admin/replicas.
    @Test func aClearedCacheIsNoticedByItsMispredictions() async throws {
        try await withRouter(1) { router, servers in
            // Four instruction templates, each answered twice: the replica holds all four.
            for n in 0..<8 { _ = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", Self.body(n, template: n % 4)) }
            _ = try await TestSupport.post(servers[0].port, "/reset_prefix_cache", "")
            // Each template again: predicted held, reported cold, three times in a row.
            for n in 8..<11 { _ = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", Self.body(n, template: n % 4)) }
            let r = truth(router)
            #expect(r.truth.resets[.mispredictions] == 1, "\(r.truth)")
            #expect(r.truth.recent.count == 3)
            let admin = try await TestSupport.get(router.admin!.port, "/admin/replicas")
            #expect(admin.bodyText.contains("\"recent_mispredictions\":[{"), "\(admin.bodyText)")
            #expect(admin.bodyText.contains("\"mispredictions\":1"))
            let metrics = String(decoding: router.metrics.render(), as: UTF8.self)
            #expect(metrics.contains(#"cacheroute_replica_cache_resets_total{replica="r1",reason="mispredictions"} 1"#), "\(metrics)")
            // The next answer is not predicted a hit: the index forgot.
            let predicted = r.truth.predictedTokens
            _ = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", Self.body(11, template: 3))
            #expect(truth(router).truth.predictedTokens == predicted)
        }
    }
}
