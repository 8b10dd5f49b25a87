import Foundation
import Testing

/// Golden files under `Tests/RoutingCoreTests/Fixtures`. A mismatch fails the test; running with
/// `CACHEROUTE_UPDATE_GOLDEN=1` rewrites the file in the source tree so the change shows in review.
enum Golden {
    static func check(_ name: String, _ actual: String, filePath: String = #filePath) throws {
        let url = URL(fileURLWithPath: filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures").appendingPathComponent(name)
        if ProcessInfo.processInfo.environment["CACHEROUTE_UPDATE_GOLDEN"] == "1" {
            try actual.write(to: url, atomically: true, encoding: .utf8)
            return
        }
        let expected = try String(contentsOf: url, encoding: .utf8)
        #expect(actual == expected, "golden \(name) differs; rerun with CACHEROUTE_UPDATE_GOLDEN=1 and review the diff")
    }
}
