/// One sample of a Prometheus text exposition.
public struct PrometheusSample: Sendable, Equatable {
    public var name: String
    public var labels: [(String, String)]
    public var value: Double

    public init(name: String, labels: [(String, String)] = [], value: Double) {
        self.name = name
        self.labels = labels
        self.value = value
    }

    public func label(_ name: String) -> String? {
        self.labels.first { $0.0 == name }?.1
    }

    public static func == (a: PrometheusSample, b: PrometheusSample) -> Bool {
        a.name == b.name && a.labels.elementsEqual(b.labels, by: { $0 == $1 })
            && (a.value == b.value || (a.value.isNaN && b.value.isNaN))
    }
}

/// A parsed exposition: samples in order, declared types and help by family name.
public struct PrometheusExposition: Sendable {
    public var samples: [PrometheusSample]
    public var types: [String: String]
    public var help: [String: String]
    /// Lines that could not be read (line number and why); parsing carries on past them.
    public var skipped: [(line: Int, reason: String)]

    /// Samples of one metric name.
    public func samples(named name: String) -> [PrometheusSample] {
        self.samples.filter { $0.name == name }
    }

    /// The sum of a metric's samples (over all label sets), nil if none.
    public func sum(_ name: String) -> Double? {
        let s = self.samples(named: name)
        return s.isEmpty ? nil : s.reduce(0) { $0 + $1.value }
    }

    /// The first of several names that has samples, summed: for metrics renamed between releases.
    public func sum(anyOf names: [String]) -> Double? {
        for name in names { if let v = self.sum(name) { return v } }
        return nil
    }
}

/// A Prometheus text-format (0.0.4, and the OpenMetrics subset exporters use) parser.
///
/// Reads `# HELP` and `# TYPE`, label values with escapes (`\\`, `\"`, `\n`), `NaN`, `+Inf`,
/// `-Inf`, optional timestamps; ignores exemplars (`# {...} v`) and other comments. A line it
/// cannot read is recorded in `skipped` and never stops the rest: a replica's broken exporter
/// must not break the router.
public enum PrometheusParser {
    public static func parse(_ text: String) -> PrometheusExposition {
        var result = PrometheusExposition(samples: [], types: [:], help: [:], skipped: [])
        var number = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            number += 1
            let line = rawLine.hasSuffix("\r") ? rawLine.dropLast() : rawLine
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            if trimmed.isEmpty { continue }
            if trimmed.hasPrefix("#") {
                let parts = trimmed.dropFirst().drop { $0 == " " }.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
                if parts.count >= 3, parts[0] == "TYPE" {
                    result.types[String(parts[1])] = String(parts[2]).lowercased()
                } else if parts.count >= 2, parts[0] == "HELP" {
                    result.help[String(parts[1])] = parts.count > 2 ? Self.unescapeHelp(parts[2]) : ""
                }
                continue
            }
            switch Self.sample(trimmed) {
            case .success(let sample): result.samples.append(sample)
            case .failure(let error): result.skipped.append((number, error.reason))
            }
        }
        return result
    }

    struct LineError: Error {
        var reason: String
    }

    static func sample(_ line: Substring) -> Result<PrometheusSample, LineError> {
        var chars = Array(line.unicodeScalars)
        var i = 0
        // Name.
        let nameStart = i
        while i < chars.count, Self.isNameChar(chars[i], first: i == nameStart) { i += 1 }
        guard i > nameStart else { return .failure(LineError(reason: "expected a metric name")) }
        let name = String(String.UnicodeScalarView(chars[nameStart..<i]))
        var labels: [(String, String)] = []
        // Labels (whitespace before the brace is tolerated, as Prometheus does).
        var j = i
        while j < chars.count, chars[j] == " " || chars[j] == "\t" { j += 1 }
        if j < chars.count, chars[j] == "{" { i = j }
        if i < chars.count, chars[i] == "{" {
            i += 1
            while true {
                while i < chars.count, chars[i] == " " || chars[i] == "," { i += 1 }
                guard i < chars.count else { return .failure(LineError(reason: "unterminated label set")) }
                if chars[i] == "}" {
                    i += 1
                    break
                }
                let keyStart = i
                while i < chars.count, Self.isNameChar(chars[i], first: i == keyStart) { i += 1 }
                guard i > keyStart else { return .failure(LineError(reason: "expected a label name")) }
                let key = String(String.UnicodeScalarView(chars[keyStart..<i]))
                while i < chars.count, chars[i] == " " { i += 1 }
                guard i < chars.count, chars[i] == "=" else { return .failure(LineError(reason: "expected '=' after label \(key)")) }
                i += 1
                while i < chars.count, chars[i] == " " { i += 1 }
                guard i < chars.count, chars[i] == "\"" else { return .failure(LineError(reason: "expected a quoted label value")) }
                i += 1
                var value = String.UnicodeScalarView()
                var closed = false
                while i < chars.count {
                    let c = chars[i]
                    if c == "\\", i + 1 < chars.count {
                        let e = chars[i + 1]
                        value.append(e == "n" ? "\n" : e)
                        i += 2
                        continue
                    }
                    if c == "\"" {
                        closed = true
                        i += 1
                        break
                    }
                    value.append(c)
                    i += 1
                }
                guard closed else { return .failure(LineError(reason: "unterminated label value")) }
                labels.append((key, String(value)))
            }
        }
        // Value (then an optional timestamp, then an optional exemplar).
        while i < chars.count, chars[i] == " " || chars[i] == "\t" { i += 1 }
        let valueStart = i
        while i < chars.count, chars[i] != " ", chars[i] != "\t" { i += 1 }
        guard i > valueStart else { return .failure(LineError(reason: "missing value")) }
        let text = String(String.UnicodeScalarView(chars[valueStart..<i]))
        guard let value = Self.number(text) else { return .failure(LineError(reason: "invalid value '\(text)'")) }
        chars.removeAll()
        return .success(PrometheusSample(name: name, labels: labels, value: value))
    }

    static func number(_ text: String) -> Double? {
        switch text {
        case "NaN", "nan": return .nan
        case "+Inf", "Inf", "inf", "+inf": return .infinity
        case "-Inf", "-inf": return -.infinity
        default: return Double(text)
        }
    }

    static func isNameChar(_ c: Unicode.Scalar, first: Bool) -> Bool {
        if c == "_" || c == ":" { return true }
        if ("a"..."z").contains(c) || ("A"..."Z").contains(c) { return true }
        return !first && ("0"..."9").contains(c)
    }

    static func unescapeHelp(_ text: Substring) -> String {
        var out = ""
        var escaped = false
        for c in text {
            if escaped {
                out.append(c == "n" ? "\n" : c)
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else {
                out.append(c)
            }
        }
        return out
    }
}
