import RoutingCore

/// The prefix diagnostics over a trace of request bodies (`cacheroute analyze`): the same
/// `PrefixInsight` the proxy feeds with its sampled requests, fed every request of the file.
public enum PrefixAnalysis {
    /// The report, and how many lines carried no generation request body.
    public static func analyze(_ trace: Trace, rules: KeyingRules, settings: PrefixInsight.Settings) -> (report: PrefixInsight.Report, skipped: Int) {
        var rules = rules
        rules.captureInstruction = true
        var insight = PrefixInsight(settings: settings)
        var skipped = 0
        for r in trace.requests {
            guard case .body(let path, let headers, let body) = r.content, let api = RequestAPI(path: path) else {
                skipped += 1
                continue
            }
            let lookup: (String) -> String? = { name in headers.first { $0.0.lowercased() == name }?.1 }
            guard case .success(let keys) = KeyExtractor.extract(api: api, body: body, header: lookup, rules: rules), let text = keys.instructionText else {
                skipped += 1
                continue
            }
            insight.observe(text, session: PrefixInsight.sessionKind(keys), now: r.timestampMs / 1000)
        }
        return (insight.report(), skipped)
    }
}
