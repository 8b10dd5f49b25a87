import CacheRouteTestSupport
import Foundation
import HTTPTransport
import ReplicaEmulator
import Testing

/// The emulator's /metrics against real vLLM 0.32 captures (Fixtures/vllm-0.32-metrics*.txt, idle
/// and under load): the same `vllm:` families with the same types, and no family the real server
/// lacks. (The captures' process_*, python_* and http_request_* families come from vLLM's Python
/// runtime and web framework; the router reads none of them and the emulator leaves them out.)
@Suite struct EmulatorFidelityTests {
    static func families(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("# TYPE ") {
            let parts = line.split(separator: " ")
            if parts.count >= 4 { result[String(parts[2])] = String(parts[3]) }
        }
        return result
    }

    @Test func metricFamiliesAndTypesMatchARealVLLM() async throws {
        let captured = Self.families(try fixture("vllm-0.32-metrics.txt")).merging(Self.families(try fixture("vllm-0.32-metrics-under-load.txt"))) { a, _ in a }
        let real = captured.filter { $0.key.hasPrefix("vllm:") }
        #expect(real.count >= 20)
        try await TestSupport.withEmulators(1) { servers in
            _ = try await TestSupport.post(servers[0].port, "/v1/chat/completions", chatBody(session: 1))
            let emulated = Self.families(try await TestSupport.get(servers[0].port, "/metrics").bodyText)
            let missing = real.filter { emulated[$0.key] == nil }.keys.sorted()
            let differing = real.filter { emulated[$0.key] != nil && emulated[$0.key] != $0.value }.map { "\($0.key): \(emulated[$0.key]!) vs \($0.value)" }
            let extra = emulated.filter { captured[$0.key] != $0.value }.keys.sorted()
            #expect(missing.isEmpty, "families a real vLLM has and the emulator lacks: \(missing)")
            #expect(differing.isEmpty, "types differ: \(differing)")
            #expect(extra.isEmpty, "families the emulator invents: \(extra)")
        }
    }
}
