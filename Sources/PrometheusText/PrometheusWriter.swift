/// Writes Prometheus text exposition (format 0.0.4) the way Python's `prometheus_client` does:
/// counters with `_total` and `_created`, histograms with cumulative buckets, `_count`, `_sum`
/// and `_created`. Used by the emulator to look like a vLLM or SGLang server.
public struct PrometheusWriter {
    public private(set) var text = ""

    public init() {
        self.text.reserveCapacity(16 << 10)
    }

    public mutating func family(_ name: String, type: String, help: String) {
        self.text += "# HELP \(name) \(Self.escapeHelp(help))\n# TYPE \(name) \(type)\n"
    }

    public mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
        self.text += name
        if !labels.isEmpty {
            self.text += "{"
            self.text += labels.map { "\($0.0)=\"\(Self.escapeLabel($0.1))\"" }.joined(separator: ",")
            self.text += "}"
        }
        self.text += " " + Self.format(value) + "\n"
    }

    /// A gauge family with one or more label sets.
    public mutating func gauge(_ name: String, help: String, _ samples: [([(String, String)], Double)]) {
        self.family(name, type: "gauge", help: help)
        for (labels, value) in samples { self.sample(name, labels, value) }
    }

    /// A counter: `<base>_total` plus its `<base>_created` gauge family.
    public mutating func counter(_ base: String, help: String, created: Double, _ samples: [([(String, String)], Double)]) {
        self.family(base + "_total", type: "counter", help: help)
        for (labels, value) in samples { self.sample(base + "_total", labels, value) }
        self.family(base + "_created", type: "gauge", help: help)
        for (labels, _) in samples { self.sample(base + "_created", labels, created) }
    }

    /// A histogram from per-bucket counts (not cumulative); `bounds` without +Inf.
    public mutating func histogram(
        _ name: String,
        help: String,
        labels: [(String, String)],
        bounds: [Double],
        counts: [Int],
        sum: Double,
        created: Double
    ) {
        self.family(name, type: "histogram", help: help)
        self.histogramSamples(name, labels: labels, bounds: bounds, counts: counts, sum: sum)
        self.family(name + "_created", type: "gauge", help: help)
        self.sample(name + "_created", labels, created)
    }

    /// One histogram series of a family already opened with `family`: cumulative buckets, `_count`
    /// and `_sum`, from per-bucket counts (not cumulative); `bounds` without +Inf.
    public mutating func histogramSamples(_ name: String, labels: [(String, String)], bounds: [Double], counts: [Int], sum: Double) {
        var cumulative = 0
        for (i, bound) in bounds.enumerated() {
            cumulative += i < counts.count ? counts[i] : 0
            self.sample(name + "_bucket", Self.insert(("le", Self.format(bound)), into: labels), Double(cumulative))
        }
        let total = counts.reduce(0, +)
        self.sample(name + "_bucket", Self.insert(("le", "+Inf"), into: labels), Double(total))
        self.sample(name + "_count", labels, Double(total))
        self.sample(name + "_sum", labels, sum)
    }

    /// `le` goes in alphabetical position among the labels, as prometheus_client writes it.
    static func insert(_ label: (String, String), into labels: [(String, String)]) -> [(String, String)] {
        var out = labels
        let at = out.firstIndex { $0.0 > label.0 } ?? out.count
        out.insert(label, at: at)
        return out
    }

    /// Floats as prometheus_client prints them: always with a decimal point or exponent.
    public static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value == .infinity { return "+Inf" }
        if value == -.infinity { return "-Inf" }
        let s = value.description
        return s.contains(".") || s.contains("e") ? s : s + ".0"
    }

    static func escapeLabel(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }

    static func escapeHelp(_ s: String) -> String {
        s.replacingBackslashesAndNewlines()
    }
}

/// A histogram's per-bucket counts, kept in the emulator and rendered by `PrometheusWriter`.
public struct HistogramCounts: Sendable {
    public let bounds: [Double]
    public private(set) var counts: [Int]
    public private(set) var sum = 0.0

    public init(bounds: [Double]) {
        self.bounds = bounds
        self.counts = [Int](repeating: 0, count: bounds.count + 1)
    }

    public mutating func observe(_ value: Double) {
        let i = self.bounds.firstIndex { value <= $0 } ?? self.bounds.count
        self.counts[i] += 1
        self.sum += value
    }

    public var count: Int { self.counts.reduce(0, +) }

    /// Adds another histogram's observations (same bounds).
    public mutating func add(_ other: HistogramCounts) {
        precondition(other.bounds == self.bounds, "histograms with different bounds")
        for i in self.counts.indices { self.counts[i] += other.counts[i] }
        self.sum += other.sum
    }
}

extension String {
    func replacingBackslashesAndNewlines() -> String {
        var out = ""
        for c in self {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }
}
