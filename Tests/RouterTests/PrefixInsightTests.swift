import CacheRouteTestSupport
import FastJSON
import HTTPTransport
import LiveLoad
import Admin
import CacheRouteRuntime
import DataPlane
import Telemetry
import TraceReplay
import NIOHTTP1
import RouterConfig
import FleetState
import RoutingCore
import Testing

@Suite struct PrefixInsightTests {
    /// The canonical instruction bytes of a body, as the proxy's sampled requests give them.
    static func instruction(_ body: [UInt8]) -> (text: [UInt8], keys: RequestKeys) {
        var rules = KeyingRules()
        rules.captureInstruction = true
        let keys = try! KeyExtractor.extract(api: .chat, body: body, rules: rules).get()
        return (keys.instructionText!, keys)
    }

    static func offset(of needle: String, in text: [UInt8]) -> Int? {
        let n = Array(needle.utf8)
        guard text.count >= n.count else { return nil }
        for i in 0...(text.count - n.count) where text[i] == n[0] && Array(text[i..<(i + n.count)]) == n { return i }
        return nil
    }

    @Test func namesExactlyThePlantedSpans() throws {
        var insight = PrefixInsight()
        var texts: [String: [UInt8]] = [:]
        for (n, r) in PlantedWorkload.requests(400).enumerated() {
            let (text, keys) = Self.instruction(r.body)
            texts[r.tenant] = text
            insight.observe(text, session: PrefixInsight.sessionKind(keys), now: Double(n))
        }
        let report = insight.report()
        #expect(report.templates.count == 8, "\(report.templates.map(\.id))")
        let volatile = report.templates.filter { !$0.spans.isEmpty }
        #expect(volatile.count == 3, "\(volatile)")
        // Which template is whose: by instruction size (each tenant's differs).
        func template(_ tenant: String) -> PrefixInsight.TemplateReport? {
            let size = texts[tenant]!.count
            return report.templates.min { abs($0.instructionBytes - size) < abs($1.instructionBytes - size) }
        }
        let a = try #require(template("A")?.spans.first)
        let expectedA = try #require(Self.offset(of: "2026-12-03T", in: texts["A"]!))
        #expect(abs(a.offset - expectedA) <= 16 && a.charClass == "date-like" && !a.reordered, "\(a) vs \(expectedA)")
        #expect(a.distinctValues >= 45 && a.cutShare > 0.9)
        let b = try #require(template("B")?.spans.first)
        let uuidAt = texts["B"]!.count > 1600 ? PlantedWorkload.uuidOffset : 0
        let systemStartB = try #require(Self.offset(of: PlantedWorkload.marker, in: texts["B"]!)) - 1
        #expect(abs(b.offset - (systemStartB + uuidAt)) <= 16 && b.charClass == "hex", "\(b) vs \(systemStartB + uuidAt)")
        #expect(b.shareableGainBytes > 1000 && b.hitRatioMoved > 0.95)
        let c = try #require(template("C")?.spans.first)
        #expect(c.reordered && c.offset < 64, "\(c)")
        for tenant in ["D", "E", "F", "G", "H"] { #expect(template(tenant)?.spans.isEmpty == true, "\(tenant)") }
        #expect(report.volatileShare > 0.3 && report.volatileShare < 0.45)
        #expect(report.sessions["implicit_conversation"] == 400)
    }

    @Test func memoryStaysBounded() {
        var settings = PrefixInsight.Settings()
        settings.maxTemplates = 8
        var insight = PrefixInsight(settings: settings)
        for n in 0..<200 {
            let text = Array(String(repeating: "distinct template \(n) ", count: 40).utf8)
            insight.observe(text, session: "none", now: Double(n))
        }
        #expect(insight.report().templates.count == 8)
    }

    /// Through the router (every request sampled): /admin/prefixes names the three planted
    /// templates and their spans; `analyze` over the same requests says the same; no admin output
    /// carries the marker planted in every prompt.
    @Test func theRouterAndAnalyzeAgree() async throws {
        let requests = PlantedWorkload.requests(240)
        try await withRouter(2, config: { c, _ in c.insight.sampleEvery = 1 }) { router, _ in
            for r in requests {
                let response = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", String(decoding: r.body, as: UTF8.self))
                #expect(response.status == .ok)
            }
            // The diagnostics run after each answer is flushed: wait for the last.
            #expect(await eventually(5) { router.state.prefixReport().requests == requests.count })
            let admin = try await TestSupport.get(router.admin!.port, "/admin/prefixes")
            let live = try JSONValue.parse(admin.bodyBytes)
            var lines: [UInt8] = []
            for (n, r) in requests.enumerated() {
                lines += Array(#"{"timestamp":\#(n * 1000),"body":"#.utf8) + r.body + Array("}\n".utf8)
            }
            let (offline, skipped) = PrefixAnalysis.analyze(Trace.parse(lines, name: "planted"), rules: KeyingRules(), settings: PrefixInsight.Settings())
            #expect(skipped == 0)
            func spans(_ doc: JSONValue) -> [String] {
                (doc["templates"]?.arrayValue ?? []).flatMap { t in
                    (t["volatile_spans"]?.arrayValue ?? []).map { s in
                        "\(t["instruction_bytes"]!.intValue!)@\(s["offset"]!.intValue! / 32):\(s["kind"]!.stringValue!):\(s["class"]!.stringValue!)"
                    }
                }.sorted()
            }
            #expect(spans(live).count == 3, "\(admin.bodyText)")
            #expect(spans(live) == spans(offline.json), "\(spans(live)) vs \(spans(offline.json))")
            #expect(Set(spans(live).map { $0.split(separator: ":").last! }) == ["date-like", "hex", "reordered"])
            let metrics = String(decoding: router.metrics.render(), as: UTF8.self)
            #expect(metrics.contains("cacheroute_prefix_volatile_request_share 0.37"), "\(metrics)")
            // Per-workload hit rates: the templates' cached shares (usage from the emulated fleet) and the tenants'.
            #expect(metrics.contains("cacheroute_template_cached_token_share{template="))
            #expect(metrics.contains("cacheroute_tenant_cached_tokens_total{tenant="))
            #expect(live["templates"]?[0]?["cached_token_share"]?.doubleValue != nil, "\(admin.bodyText)")
            for text in [admin.bodyText, metrics, try await TestSupport.get(router.admin!.port, "/admin/replicas").bodyText, offline.text] {
                #expect(!text.contains(PlantedWorkload.marker))
            }
            #expect(offline.text.contains("differ on every request (date-like"), "\(offline.text)")
        }
    }
}
