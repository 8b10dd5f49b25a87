import CacheRouteTestSupport
import Foundation
import HTTPTransport
import NIOHTTP1
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

/// The files under Deploy/ agree with the code: the metrics the alerts and the dashboard query
/// exist, the Kubernetes ConfigMap holds a valid config, and the pod and unit timings leave room
/// for the drain. (Deploy/check validates the files against their own tools' schemas.)
@Suite struct DeployTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func read(_ path: String) throws -> String {
        try String(contentsOf: Self.root.appendingPathComponent(path), encoding: .utf8)
    }

    /// Every `cacheroute_*` name in a text, histogram suffixes folded onto their metric.
    static func metricNames(in text: String) -> Set<String> {
        let regex = try! NSRegularExpression(pattern: "cacheroute_[a-z_]+")
        let ns = text as NSString
        var names = Set<String>()
        for m in regex.matches(in: text, range: NSRange(location: 0, length: ns.length)) {
            var name = ns.substring(with: m.range)
            for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) && MetricName.help[name] == nil {
                name = String(name.dropLast(suffix.count))
            }
            names.insert(name)
        }
        return names
    }

    static func labelValues(_ label: String, in text: String) -> Set<String> {
        let regex = try! NSRegularExpression(pattern: label + #"\s*=\s*\\?"([a-z_]+)\\?""#)
        let ns = text as NSString
        return Set(regex.matches(in: text, range: NSRange(location: 0, length: ns.length)).map { ns.substring(with: $0.range(at: 1)) })
    }

    @Test(arguments: ["Deploy/prometheus/cacheroute-rules.yml", "Deploy/grafana/cacheroute-dashboard.json"])
    func queriesNameMetricsTheRouterExports(path: String) throws {
        let text = try Self.read(path)
        let names = Self.metricNames(in: text)
        #expect(names.count >= 5)
        let unknown = names.filter { MetricName.help[$0] == nil }
        #expect(unknown.isEmpty, "\(path) queries metrics cacheroute does not export: \(unknown.sorted())")
        let tiers = Self.labelValues("tier", in: text)
        #expect(tiers.allSatisfy { Tier(rawValue: $0) != nil }, "unknown tiers \(tiers)")
        #expect(Self.labelValues("state", in: text).isSubset(of: ["routable", "unroutable"]))
        #expect(Self.labelValues("result", in: text).isSubset(of: ["success", "failure"]))
    }

    @Test func theDashboardShowsHitsLoadTTFTTiersAndSpills() throws {
        let names = Self.metricNames(in: try Self.read("Deploy/grafana/cacheroute-dashboard.json"))
        for needed in [
            MetricName.hitRatio, MetricName.observedCachedTokens, MetricName.inFlight, MetricName.queueDepth, MetricName.ttft,
            MetricName.decisions, MetricName.hotPrefixes, MetricName.widenings, MetricName.replicaUp,
        ] {
            #expect(names.contains(needed), "the dashboard lacks \(needed)")
        }
    }

    @Test func alertedMetricsAppearOnAScrape() async throws {
        try await withRouter(2) { router, _ in
            _ = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", chatBody(session: 1))
            let scrape = try await TestSupport.get(router.admin!.port, "/metrics").bodyText
            let exported = Self.metricNames(in: scrape)
            // Counters of rare events (retries, errors, ejections, failed reloads) appear once they happen.
            let always = [MetricName.replicaUp, MetricName.replicas, MetricName.requests, MetricName.decisions, MetricName.observedPromptTokens, MetricName.observedCachedTokens]
            for name in always { #expect(exported.contains(name), "\(name) missing from /metrics") }
        }
    }

    /// The config inside the ConfigMap (the block under `cacheroute.yaml: |`).
    static func configMapConfig() throws -> String {
        let lines = try Self.read("Deploy/kubernetes/cacheroute.yaml").split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.firstIndex(where: { $0.trimmingCharacters(in: .whitespaces) == "cacheroute.yaml: |" }) else { return "" }
        let block = lines[(start + 1)...].prefix { $0.isEmpty || $0.hasPrefix("    ") }
        return block.map { $0.dropFirst(min(4, $0.count)) }.joined(separator: "\n")
    }

    static func number(after key: String, in text: String) -> Double? {
        guard let range = text.range(of: key) else { return nil }
        let digits = text[range.upperBound...].drop { $0 == " " || $0 == "\"" || $0 == "[" }.prefix { $0.isNumber }
        return Double(digits)
    }

    @Test func theKubernetesDeploymentFitsItsConfig() throws {
        let config = try RouterConfiguration.parse(yaml: try Self.configMapConfig(), file: "Deploy/kubernetes/cacheroute.yaml")
        #expect(config.listen.host == "0.0.0.0" && config.adminListen.host == "0.0.0.0", "a pod must listen beyond loopback")
        #expect(config.discovery.count == 1 && config.discovery[0].name.hasSuffix(".svc.cluster.local"))
        let manifest = try Self.read("Deploy/kubernetes/cacheroute.yaml")
        #expect(Self.number(after: "containerPort:", in: manifest) == Double(config.listen.port))
        #expect(manifest.contains("containerPort: \(config.adminListen.port)"))
        #expect(manifest.contains("path: /readyz") && manifest.contains("path: /healthz"))
        let grace = try #require(Self.number(after: "terminationGracePeriodSeconds:", in: manifest))
        let preStop = try #require(Self.number(after: #"command: ["sleep", ""#, in: manifest))
        #expect(grace > preStop + config.shutdown.drainSeconds, "grace \(grace) s must cover preStop \(preStop) s + drain \(config.shutdown.drainSeconds) s")
        // The admin port is reachable only by the scraper (a NetworkPolicy that names it).
        let policy = try #require(manifest.components(separatedBy: "\n---\n").first { $0.contains("kind: NetworkPolicy") })
        #expect(policy.contains("port: admin") && policy.contains("port: http") && policy.contains("namespaceSelector"))
        let headless = try Self.read("Deploy/kubernetes/vllm-headless.yaml")
        #expect(headless.contains("clusterIP: None"))
        #expect(headless.contains("port: \(config.discovery[0].port)"))
    }

    @Test func theSystemdUnitOutwaitsTheDefaultDrain() throws {
        let unit = try Self.read("Deploy/systemd/cacheroute.service")
        let stop = try #require(Self.number(after: "TimeoutStopSec=", in: unit))
        #expect(stop > RouterConfiguration().shutdown.drainSeconds)
        #expect(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"))
        #expect(unit.contains("KillSignal=SIGTERM"))
    }

    /// `socketOption(.tcp_nodelay)` sets SO_DEBUG (the socket level), which needs CAP_NET_ADMIN:
    /// as the container's non-root user every connection failed. TCP options go through tcpOption.
    @Test func tcpOptionsAreSetAtTheTCPLevel() throws {
        let sources = Self.root.appendingPathComponent("Sources")
        let files = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)?.compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" } ?? []
        #expect(files.count > 20)
        for file in files {
            let text = try String(contentsOf: file, encoding: .utf8)
            #expect(!text.contains(".socketOption(.tcp_"), "\(file.lastPathComponent) sets a TCP option at the socket level")
        }
    }
}
