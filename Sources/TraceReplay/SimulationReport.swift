import FastJSON

/// The results of a simulation: a table for people, JSON for scripts, an SVG plot.
public struct SimulationReport: Sendable {
    public var trace: String
    public var requests: Int
    public var skipped: Int
    public var options: SimulationOptions
    public var bounds: CacheBounds
    public var policies: [PolicyResult]
    public var seconds: Double

    public init(
        trace: String,
        requests: Int,
        skipped: Int,
        options: SimulationOptions,
        bounds: CacheBounds,
        policies: [PolicyResult],
        seconds: Double
    ) {
        self.trace = trace
        self.requests = requests
        self.skipped = skipped
        self.options = options
        self.bounds = bounds
        self.policies = policies
        self.seconds = seconds
    }

    /// The goals cacheroute's defaults are tuned against.
    public static let goalRatioToGlobalLRU = 0.95
    public static let goalImbalanceP99 = 1.5

    func ratio(_ a: Double, _ b: Double) -> Double { b > 0 ? a / b : 0 }

    public func table() -> String {
        var lines: [String] = []
        lines.append(
            "\(self.trace): \(self.requests) requests, \(self.options.replicas) replicas x \(self.options.capacityTokens) tokens, "
                + "engine blocks of \(self.options.blockTokens) tokens"
                + (self.skipped > 0 ? ", \(self.skipped) lines skipped" : "")
        )
        lines.append(
            "bounds: ideal (one infinite cache) \(pct(self.bounds.ideal)), global LRU (one cache of the fleet's capacity) \(pct(self.bounds.globalLRU))"
        )
        lines.append("")
        let header = [
            "policy", "hit ratio", "x global-LRU", "x ideal", "imbalance p50", "p99", "(instant p99)", "TTFT mean", "p50", "p99", "spills",
            "queued", "wait p99", "refused", "goodput/s", "makespan",
        ]
        var rows = [header]
        for p in self.policies {
            rows.append([
                p.name, pct(p.hitRatio), fixed(self.ratio(p.hitRatio, self.bounds.globalLRU), 2),
                fixed(self.ratio(p.hitRatio, self.bounds.ideal), 2), fixed(p.loadImbalanceP50, 2), fixed(p.loadImbalanceP99, 2),
                "(\(fixed(p.instantImbalanceP99, 2)))",
                ms(p.ttftMean), ms(p.ttftP50), ms(p.ttftP99), String(p.spills), String(p.queued), ms(p.queueWaitP99), String(p.rejected),
                fixed(p.goodput, 2), fixed(p.makespan, 0) + " s",
            ])
        }
        lines += Self.align(rows)
        if let speeds = self.options.replicaSpeeds {
            lines.append("")
            lines.append("replica speeds: " + (0..<self.options.replicas).map { fixed(speeds[$0 % speeds.count], 2) }.joined(separator: " "))
            for p in self.policies where p.name.hasPrefix("cacheroute") {
                lines.append("  \(p.name) learned prefill k tokens/s: " + p.learnedPrefillTokensPerSecond.map { fixed($0 / 1000, 1) }.joined(separator: " "))
            }
        }
        lines.append("")
        lines.append("per-replica hit ratio:")
        for p in self.policies {
            lines.append("  \(p.name): " + p.perReplicaHitRatio.map { pct($0) }.joined(separator: " "))
        }
        if let c = self.policies.first(where: { $0.name == "cacheroute" }) {
            lines.append("")
            let ratio = self.ratio(c.hitRatio, self.bounds.globalLRU)
            let ok1 = ratio >= Self.goalRatioToGlobalLRU
            let ok2 = c.loadImbalanceP99 <= Self.goalImbalanceP99
            lines.append(
                "goals: hit ratio >= \(fixed(Self.goalRatioToGlobalLRU, 2))x global LRU: \(fixed(ratio, 2))x \(ok1 ? "met" : "NOT met"); "
                    + "p99 load imbalance <= \(fixed(Self.goalImbalanceP99, 1)): \(fixed(c.loadImbalanceP99, 2)) \(ok2 ? "met" : "NOT met")"
            )
            lines.append("cacheroute tiers: " + c.tiers.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        lines.append(
            "load imbalance: max/mean of each replica's time-averaged requests in flight per \(Int(self.options.imbalanceWindow)) s window "
                + "(idle windows skipped); instant: the same ratio sampled at each arrival"
        )
        lines.append("(simulated in \(fixed(self.seconds, 1)) s)")
        return lines.joined(separator: "\n")
    }

    public func json() -> JSONValue {
        .object([
            "trace": .string(self.trace),
            "requests": .int(Int64(self.requests)),
            "skipped_lines": .int(Int64(self.skipped)),
            "replicas": .int(Int64(self.options.replicas)),
            "capacity_tokens": .int(Int64(self.options.capacityTokens)),
            "block_tokens": .int(Int64(self.options.blockTokens)),
            "time_scale": .double(self.options.timeScale),
            "replica_speeds": self.options.replicaSpeeds.map { .array($0.map { .double($0) }) } ?? .null,
            "ideal_hit_ratio": .double(self.bounds.ideal),
            "global_lru_hit_ratio": .double(self.bounds.globalLRU),
            "goals": .object([
                "ratio_to_global_lru": .double(Self.goalRatioToGlobalLRU),
                "load_imbalance_p99": .double(Self.goalImbalanceP99),
            ]),
            "policies": .array(
                self.policies.map { p in
                    .object([
                        "name": .string(p.name),
                        "hit_ratio": .double(p.hitRatio),
                        "ideal_hit_ratio": .double(self.bounds.ideal),
                        "global_lru_hit_ratio": .double(self.bounds.globalLRU),
                        "ratio_to_ideal": .double(self.ratio(p.hitRatio, self.bounds.ideal)),
                        "ratio_to_global_lru": .double(self.ratio(p.hitRatio, self.bounds.globalLRU)),
                        "load_imbalance_p50": .double(p.loadImbalanceP50),
                        "load_imbalance_p99": .double(p.loadImbalanceP99),
                        "instant_load_imbalance_p50": .double(p.instantImbalanceP50),
                        "instant_load_imbalance_p99": .double(p.instantImbalanceP99),
                        "load_imbalance_windows": .array(p.imbalanceWindows.map { .double(($0 * 1000).rounded() / 1000) }),
                        "ttft_p50_seconds": .double(p.ttftP50),
                        "ttft_p99_seconds": .double(p.ttftP99),
                        "ttft_mean_seconds": .double(p.ttftMean),
                        "spills": .int(Int64(p.spills)),
                        "tiers": .object(p.tiers.sorted { $0.key < $1.key }.map { .init($0.key, .int(Int64($0.value))) }),
                        "per_replica_hit_ratio": .array(p.perReplicaHitRatio.map { .double($0) }),
                        "per_replica_requests": .array(p.perReplicaRequests.map { .int(Int64($0)) }),
                        "requests": .int(Int64(p.requests)),
                        "rejected": .int(Int64(p.rejected)),
                        "queue_rejected": .int(Int64(p.queueRejected)),
                        "queued": .int(Int64(p.queued)),
                        "queue_wait_mean_seconds": .double(p.queueWaitMean),
                        "queue_wait_p99_seconds": .double(p.queueWaitP99),
                        "completed": .int(Int64(p.completed)),
                        "makespan_seconds": .double(p.makespan),
                        "goodput_per_second": .double(p.goodput),
                        "per_replica_prefill_tokens_per_second": .array(p.learnedPrefillTokensPerSecond.map { .double($0.rounded()) }),
                    ])
                }
            ),
            "seconds": .double(self.seconds),
        ])
    }

    /// Hit ratio and mean load imbalance over time, one line per policy.
    public func svg() -> String {
        let width = 900.0
        let height = 260.0
        let left = 60.0
        let colors = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"]
        let maxTime = self.policies.flatMap { $0.timeline.map(\.time) }.max() ?? 1
        let maxImbalance = max(2, (self.policies.flatMap { $0.timeline.map(\.imbalance) }.max() ?? 2).rounded(.up))
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width + 180))\" height=\"\(Int(2 * height + 80))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        for (panel, (title, maxY, value)) in [
            ("fleet hit ratio (per \(Int(self.options.timelineBucket)) s)", 1.0, { (t: (time: Double, hitRatio: Double, imbalance: Double)) in t.hitRatio }),
            ("load imbalance, max/mean in flight (mean per bucket)", maxImbalance, { (t: (time: Double, hitRatio: Double, imbalance: Double)) in t.imbalance }),
        ].enumerated() {
            let top = 30 + Double(panel) * (height + 30)
            out += "<text x=\"\(left)\" y=\"\(top - 8)\">\(title) - \(self.trace)</text>\n"
            out += "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(width)\" height=\"\(height)\" fill=\"none\" stroke=\"#999\"/>\n"
            for k in 0...4 {
                let y = top + height - Double(k) / 4 * height
                out += "<text x=\"\(left - 8)\" y=\"\(y + 4)\" text-anchor=\"end\">\(fixed(maxY * Double(k) / 4, 2))</text>\n"
            }
            for (i, p) in self.policies.enumerated() where !p.timeline.isEmpty {
                let points = p.timeline.map { t in
                    "\(fixed(left + t.time / maxTime * width, 1)),\(fixed(top + height - min(1, value(t) / maxY) * height, 1))"
                }
                out += "<polyline fill=\"none\" stroke=\"\(colors[i % colors.count])\" stroke-width=\"1.5\" points=\"\(points.joined(separator: " "))\"/>\n"
                if panel == 0 {
                    out += "<text x=\"\(left + width + 10)\" y=\"\(top + 14 + Double(i) * 16)\" fill=\"\(colors[i % colors.count])\">\(p.name)</text>\n"
                }
            }
        }
        out += "<text x=\"\(left + width / 2)\" y=\"\(2 * height + 75)\" text-anchor=\"middle\">virtual time (s)</text>\n</svg>\n"
        return out
    }

    static func align(_ rows: [[String]]) -> [String] {
        guard let first = rows.first else { return [] }
        let widths = first.indices.map { c in rows.map { $0[c].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { c, cell in
                c == 0 ? cell + String(repeating: " ", count: widths[c] - cell.count)
                    : String(repeating: " ", count: widths[c] - cell.count) + cell
            }.joined(separator: "  ")
        }
    }
}

func pct(_ x: Double) -> String { fixed(x * 100, 1) + "%" }

func ms(_ seconds: Double) -> String { fixed(seconds * 1000, 0) + " ms" }

/// `x` with `digits` decimals, without Foundation.
public func fixed(_ x: Double, _ digits: Int) -> String {
    guard x.isFinite else { return "-" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let n = Int64((abs(x) * scale).rounded())
    let whole = n / Int64(scale)
    let frac = n % Int64(scale)
    var s = (x < 0 && n != 0 ? "-" : "") + String(whole)
    if digits > 0 {
        let f = String(frac)
        s += "." + String(repeating: "0", count: digits - f.count) + f
    }
    return s
}
