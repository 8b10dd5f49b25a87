import FastJSON
import XXHash

/// What breaks prefix caching, found from the requests themselves: instruction segments (tools
/// and system) grouped into templates, and within a template the byte ranges that change from
/// request to request while the content after them stays the same (a timestamp, a request id, a
/// user name early in the system prompt), or tools sent in different orders.
///
/// Only hashes, offsets, counts and character classes are kept: a request's bytes are read while
/// it is observed and then dropped. Bounded: `maxTemplates` templates with counts that decay
/// (half-life `halfLifeSeconds`), `maxSpans` spans each, `maxDistinct` value hashes per span.
/// Pure: the caller passes the time. The proxy (sampled requests) and `cacheroute analyze` (a
/// trace file) feed the same struct.
public struct PrefixInsight: Sendable {
    public struct Settings: Sendable, Equatable {
        public var maxTemplates = 64
        public var maxSpans = 16
        public var halfLifeSeconds: Double = 3600
        /// Requests whose instruction segment is shorter are not analysed.
        public var minBytes = 256

        public init() {}
    }

    /// A content-defined chunk of the instruction bytes.
    struct Chunk: Sendable, Equatable {
        var hash: UInt64
        var start: Int32
        var length: Int32
    }

    struct Span: Sendable {
        var start: Int
        var end: Int
        var weight: Double = 0
        var count = 0
        var classes: [CharClass: Int] = [:]
        var values: Set<UInt64> = []
        var windowStart: Double
        var reorder = false
    }

    struct Template: Sendable {
        var id: UInt64
        var sketch: [UInt64]
        var reference: [Chunk]
        var bytes: Int
        var weight: Double = 0
        var count = 0
        var lastUpdate: Double
        var spans: [Int: Span] = [:]
        /// Prompt and cached tokens the replicas reported for its requests (decayed with the weight).
        var promptTokens: Double = 0
        var cachedTokens: Double = 0
    }

    /// What varying bytes look like.
    public enum CharClass: String, Sendable, CaseIterable {
        case digits, hex, dateLike = "date-like", words, mixed
    }

    public var settings: Settings
    var templates: [UInt64: Template] = [:]
    /// Requests observed (decayed) and how they name their sessions and prefix groups.
    var total: Double = 0
    var lastDecay: Double = 0
    public private(set) var sessions: [String: Int] = [:]
    public private(set) var observed = 0

    static let sketchSize = 16
    static let maxDistinct = 4096

    public init(settings: Settings = Settings()) {
        self.settings = settings
    }

    // MARK: - Chunking

    /// Gear-hash content-defined chunks (average ~16 bytes, 4 to 64): a boundary depends only on
    /// the last 16 bytes (bits 12-15 of the gear hash), so a change moves only the boundaries
    /// around it and the chunks after it are the same as before.
    static func chunks(_ bytes: [UInt8]) -> [Chunk] {
        var out: [Chunk] = []
        out.reserveCapacity(bytes.count / 12 + 1)
        bytes.withUnsafeBytes { raw in
            Self.gear.withUnsafeBufferPointer { gear in
                let n = raw.count
                var start = 0
                var h: UInt64 = 0
                var i = 0
                while i < n {
                    h = (h &<< 1) &+ gear[Int(raw[i])]
                    let length = i + 1 - start
                    if (length >= 4 && h & 0xF000 == 0) || length >= 64 || i == n - 1 {
                        let hash = XXH3.hash(UnsafeRawBufferPointer(rebasing: raw[start..<(i + 1)]))
                        out.append(Chunk(hash: hash, start: Int32(start), length: Int32(length)))
                        start = i + 1
                    }
                    i += 1
                }
            }
        }
        return out
    }

    static let gear: [UInt64] = (0..<256).map { XXH3.hash(UInt64($0), seed: 0x6765_6172) }

    /// The `sketchSize` smallest distinct chunk hashes (a bottom-k sketch: two texts that share
    /// most chunks share most of it), kept sorted in one pass.
    static func sketch(_ chunks: [Chunk]) -> [UInt64] {
        var bottom: [UInt64] = []
        bottom.reserveCapacity(Self.sketchSize + 1)
        for c in chunks {
            let h = c.hash
            if bottom.count == Self.sketchSize, h >= bottom[Self.sketchSize - 1] { continue }
            var i = bottom.count
            while i > 0, bottom[i - 1] > h { i -= 1 }
            if i > 0, bottom[i - 1] == h { continue }
            bottom.insert(h, at: i)
            if bottom.count > Self.sketchSize { bottom.removeLast() }
        }
        return bottom
    }

    // MARK: - Observing

    /// One request's instruction bytes, and how it names its session (for the share of traffic
    /// with explicit keys).
    /// `promptTokens` and `cachedTokens`: what the replica reported for the request's answer (the
    /// template's hit rate).
    public mutating func observe(_ bytes: [UInt8], session: String, now: Double, promptTokens: Int? = nil, cachedTokens: Int? = nil) {
        self.observed += 1
        self.sessions[session, default: 0] += 1
        guard bytes.count >= self.settings.minBytes else { return }
        self.decay(now: now)
        self.total += 1
        let chunks = Self.chunks(bytes)
        let sketch = Self.sketch(chunks)
        // The template whose reference shares most of this sketch (half at least).
        var best: (id: UInt64, overlap: Int)?
        for (id, t) in self.templates {
            // Both sorted: count the common hashes in one merge.
            var overlap = 0
            var a = 0
            var b = 0
            while a < sketch.count, b < t.sketch.count {
                if sketch[a] == t.sketch[b] {
                    overlap += 1
                    a += 1
                    b += 1
                } else if sketch[a] < t.sketch[b] {
                    a += 1
                } else {
                    b += 1
                }
            }
            if overlap * 2 >= Self.sketchSize, overlap > (best?.overlap ?? 0) { best = (id, overlap) }
        }
        guard let id = best?.id, var t = self.templates[id] else {
            var t = Template(id: XXH3.hash(sketch.withUnsafeBytes { Array($0) }), sketch: sketch, reference: chunks, bytes: bytes.count, lastUpdate: now)
            if let p = promptTokens {
                t.promptTokens = Double(p)
                t.cachedTokens = Double(cachedTokens ?? 0)
            }
            self.add(t, now: now)
            return
        }
        if let p = promptTokens {
            t.promptTokens += Double(p)
            t.cachedTokens += Double(cachedTokens ?? 0)
        }
        t.weight += 1
        t.count += 1
        t.lastUpdate = now
        self.compare(&t, chunks, bytes, now: now)
        self.templates[id] = t
    }

    mutating func add(_ template: Template, now: Double) {
        var t = template
        t.weight = 1
        t.count = 1
        if self.templates.count >= self.settings.maxTemplates, let weakest = self.templates.min(by: { $0.value.weight < $1.value.weight })?.key {
            self.templates[weakest] = nil
        }
        self.templates[t.id] = t
    }

    /// Where a request parts from its template's reference, and whether what follows comes back.
    mutating func compare(_ t: inout Template, _ chunks: [Chunk], _ bytes: [UInt8], now: Double) {
        let ref = t.reference
        var i = 0
        while i < ref.count, i < chunks.count, ref[i].hash == chunks[i].hash { i += 1 }
        // The same, or one a prefix of the other: nothing of the reference's prefix is cut.
        if i == ref.count || i == chunks.count { return }
        var s = 0
        while s < ref.count - i, s < chunks.count - i, ref[ref.count - 1 - s].hash == chunks[chunks.count - 1 - s].hash { s += 1 }
        let refStart = Int(ref[min(i, ref.count - 1)].start)
        let refEnd = s > 0 ? Int(ref[ref.count - s].start) : t.bytes
        let myStart = i < chunks.count ? Int(chunks[i].start) : bytes.count
        let myEnd = s > 0 ? Int(chunks[chunks.count - s].start) : bytes.count
        // The same chunks in another order: a reordering (tools), not new values.
        let refMiddle = Set(ref[i..<(ref.count - s)].map(\.hash))
        let myMiddle = chunks[i..<(chunks.count - s)].map(\.hash)
        let shared = myMiddle.reduce(0) { $0 + (refMiddle.contains($1) ? 1 : 0) }
        let reorder = myMiddle.count >= 8 && shared * 10 >= myMiddle.count * 7
        var span = t.spans[i] ?? Span(start: refStart, end: refEnd, windowStart: now, reorder: reorder)
        span.weight += 1
        span.count += 1
        span.start = refStart
        span.end = max(span.end, refEnd)
        span.reorder = span.reorder || reorder
        if now - span.windowStart >= 3600 {
            span.values.removeAll(keepingCapacity: true)
            span.windowStart = now
        }
        if myStart < myEnd {
            let value = Array(bytes[myStart..<myEnd])
            if span.values.count < Self.maxDistinct { span.values.insert(XXH3.hash(value)) }
            span.classes[Self.charClass(value), default: 0] += 1
        }
        if t.spans[i] == nil, t.spans.count >= self.settings.maxSpans, let weakest = t.spans.min(by: { $0.value.weight < $1.value.weight })?.key {
            t.spans[weakest] = nil
        }
        t.spans[i] = span
    }

    /// The class of a varying region: its longest word with a digit in it (the region is whole
    /// chunks, so the value comes with some words around it), else the whole region.
    static func charClass(_ region: [UInt8]) -> CharClass {
        let separators: Set<UInt8> = [0x20, 0x0A, 0x09, UInt8(ascii: "\""), UInt8(ascii: ","), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "["), UInt8(ascii: "]")]
        let words = region.split(whereSeparator: { separators.contains($0) })
        if let value = words.filter({ $0.contains { (0x30...0x39).contains($0) } }).max(by: { $0.count < $1.count }) {
            return Self.valueClass(Array(value))
        }
        return Self.valueClass(region)
    }

    /// The class of a value: digits, hex (with at least one a-f), date-like (digits with date and
    /// time separators), words, mixed.
    static func valueClass(_ value: [UInt8]) -> CharClass {
        var digits = 0
        var hexLetters = 0
        var letters = 0
        var dateSeparators = 0
        var other = 0
        for b in value {
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digits += 1
            case UInt8(ascii: "a")...UInt8(ascii: "f"), UInt8(ascii: "A")...UInt8(ascii: "F"):
                hexLetters += 1
                letters += 1
            case UInt8(ascii: "g")...UInt8(ascii: "z"), UInt8(ascii: "G")...UInt8(ascii: "Z"): letters += 1
            case UInt8(ascii: "-"), UInt8(ascii: ":"), UInt8(ascii: "/"), UInt8(ascii: "."), UInt8(ascii: "T"), UInt8(ascii: "Z"), UInt8(ascii: " "):
                dateSeparators += 1
            default: other += 1
            }
        }
        let n = max(1, value.count)
        if hexLetters > 0, (digits + hexLetters) * 10 >= n * 7, letters == hexLetters { return .hex }
        if digits * 10 >= n * 9 { return .digits }
        if digits * 2 >= n, dateSeparators > 0, letters <= 2 { return .dateLike }
        if letters * 10 >= n * 6 { return .words }
        return .mixed
    }

    mutating func decay(now: Double) {
        guard now > self.lastDecay else { return }
        let factor = self.lastDecay == 0 ? 1 : Self.halving(now - self.lastDecay, self.settings.halfLifeSeconds)
        self.lastDecay = now
        guard factor < 1 else { return }
        self.total *= factor
        for (id, var t) in self.templates {
            t.weight *= factor
            t.promptTokens *= factor
            t.cachedTokens *= factor
            for (k, var s) in t.spans {
                s.weight *= factor
                t.spans[k] = s
            }
            self.templates[id] = t
        }
    }

    static func halving(_ seconds: Double, _ halfLife: Double) -> Double {
        var f = 1.0
        var left = seconds / halfLife
        while left >= 1 {
            f *= 0.5
            left -= 1
        }
        return f * (1 - left * 0.5)  // (close enough between halvings)
    }

    // MARK: - Report

    public struct SpanReport: Sendable, Equatable {
        public var offset: Int
        public var length: Int
        /// Distinct values in the current hour's window (up to 4096).
        public var distinctValues: Int
        public var charClass: String
        /// The share of the template's requests whose shared prefix it cuts.
        public var cutShare: Double
        /// Instruction bytes that would become shareable if it moved after the static part.
        public var shareableGainBytes: Int
        /// The template's instruction prefix share now and with the span moved (an estimate of its hit ratio).
        public var hitRatioNow: Double
        public var hitRatioMoved: Double
        /// The same chunks in another order (tools, documents), not new values.
        public var reordered: Bool
    }

    public struct TemplateReport: Sendable, Equatable {
        public var id: String
        public var requestShare: Double
        public var requests: Int
        public var instructionBytes: Int
        public var spans: [SpanReport]
        /// The cached share of its requests' prompt tokens, as the replicas reported (nil: none reported).
        public var cachedShare: Double?
    }

    public struct Report: Sendable, Equatable {
        public var templates: [TemplateReport]
        /// Requests observed, and the share in templates with a volatile span or reordering.
        public var requests: Int
        public var volatileShare: Double
        /// Instruction bytes per request that a fixed layout would make shareable (weighted).
        public var shareableBytesLost: Double
        /// How requests name their session: explicit (header, body field, prompt_cache_key) or implicit.
        public var sessions: [String: Int]
    }

    /// Templates by request share; spans seen in at least `minShare` of a template's requests.
    public func report(minShare: Double = 0.05) -> Report {
        var out: [TemplateReport] = []
        var volatileWeight = 0.0
        var lost = 0.0
        for t in self.templates.values.sorted(by: { $0.weight > $1.weight }) {
            var spans: [SpanReport] = []
            for s in t.spans.values.sorted(by: { $0.start < $1.start }) where t.count > 1 && s.weight >= minShare * t.weight {
                let length = max(0, s.end - s.start)
                let cls = s.classes.max { $0.value < $1.value || ($0.value == $1.value && $0.key.rawValue > $1.key.rawValue) }?.key ?? .mixed
                let gain = s.reorder ? max(0, t.bytes - s.start) : max(0, t.bytes - s.end)
                let now = Double(s.start) / Double(max(1, t.bytes))
                let moved = s.reorder ? 1 : Double(t.bytes - length) / Double(max(1, t.bytes))
                spans.append(
                    SpanReport(
                        offset: s.start, length: length, distinctValues: s.values.count, charClass: s.reorder ? "reordered" : cls.rawValue,
                        cutShare: min(1, s.weight / max(t.weight, 1e-9)), shareableGainBytes: gain, hitRatioNow: now, hitRatioMoved: moved,
                        reordered: s.reorder))
            }
            // Reorderings of one template are one finding: where the reordered part starts varies
            // with which item happened to come first.
            let reordered = spans.filter(\.reordered)
            if reordered.count > 1, var merged = reordered.min(by: { $0.offset < $1.offset }) {
                let end = reordered.map { $0.offset + $0.length }.max()!
                merged.length = end - merged.offset
                merged.cutShare = min(1, reordered.reduce(0) { $0 + $1.cutShare })
                merged.shareableGainBytes = reordered.map(\.shareableGainBytes).max()!
                spans = spans.filter { !$0.reordered } + [merged]
                spans.sort { $0.offset < $1.offset }
            }
            if let worst = spans.min(by: { $0.offset < $1.offset }) {
                volatileWeight += t.weight
                lost += t.weight * worst.cutShare * Double(worst.shareableGainBytes)
            }
            out.append(
                TemplateReport(
                    id: t.id.hex16, requestShare: t.weight / max(self.total, 1e-9), requests: t.count, instructionBytes: t.bytes, spans: spans,
                    cachedShare: t.promptTokens > 0 ? min(1, t.cachedTokens / t.promptTokens) : nil))
        }
        return Report(
            templates: out, requests: self.observed, volatileShare: volatileWeight / max(self.total, 1e-9), shareableBytesLost: lost / max(self.total, 1e-9),
            sessions: self.sessions)
    }

    /// How a request's keys name its session, for the report.
    public static func sessionKind(_ keys: RequestKeys) -> String {
        if keys.namesCacheKey { return "prompt_cache_key" }
        switch keys.session?.source {
        case .header?: return "header"
        case .body?: return "body_field"
        case .conversation?: return "implicit_conversation"
        case nil: return "none"
        }
    }
}

extension PrefixInsight.Report {
    /// The report as JSON (`/admin/prefixes`, `cacheroute analyze --json`).
    public var json: JSONValue {
        func r(_ v: Double, _ digits: Double = 1000) -> JSONValue { .double((v * digits).rounded() / digits) }
        let total = max(1, self.sessions.values.reduce(0, +))
        return .object([
            "requests_analysed": .int(Int64(self.requests)),
            "volatile_request_share": r(self.volatileShare),
            "shareable_bytes_lost_per_request": r(self.shareableBytesLost, 1),
            "session_keys": .object(
                self.sessions.sorted { $0.key < $1.key }.map { .init($0.key, .object(["requests": .int(Int64($0.value)), "share": r(Double($0.value) / Double(total))])) }),
            "templates": .array(
                self.templates.map { t in
                    .object([
                        "template": .string(t.id), "request_share": r(t.requestShare), "requests": .int(Int64(t.requests)),
                        "instruction_bytes": .int(Int64(t.instructionBytes)),
                        "cached_token_share": t.cachedShare.map { r($0) } ?? .null,
                        "volatile_spans": .array(
                            t.spans.map { s in
                                .object([
                                    "offset": .int(Int64(s.offset)), "length": .int(Int64(s.length)), "kind": .string(s.reordered ? "reordered" : "volatile"),
                                    "class": .string(s.charClass), "distinct_values_last_hour": .int(Int64(s.distinctValues)),
                                    "cut_share": r(s.cutShare), "shareable_bytes_if_moved": .int(Int64(s.shareableGainBytes)),
                                    "estimated_hit_ratio_now": r(s.hitRatioNow), "estimated_hit_ratio_moved": r(s.hitRatioMoved),
                                ])
                            }),
                    ])
                }),
        ])
    }

    /// One line per template with volatile spans, as `cacheroute analyze` prints them.
    public var text: String {
        var out = "\(self.requests) requests analysed; \(Int((self.volatileShare * 100).rounded())) % in templates whose prefix breaks early\n"
        for t in self.templates {
            let head = "template \(t.id.prefix(8))… (\(Int((t.requestShare * 100).rounded())) % of requests, \(String(format1: Double(t.instructionBytes) / 1024, " KB")) of instructions)"
            guard !t.spans.isEmpty else {
                out += head + ": stable\n"
                continue
            }
            for s in t.spans {
                if s.reordered {
                    out += head + ": bytes \(s.offset)-\(s.offset + s.length) come in a different order on \(Int((s.cutShare * 100).rounded())) % of requests (the same tools or documents, reordered); "
                    out += "a fixed order makes \(String(format1: Double(s.shareableGainBytes) / 1024, " KB")) shareable\n"
                    continue
                }
                let every = s.cutShare > 0.95 ? "differ on every request" : "differ on \(Int((s.cutShare * 100).rounded())) % of requests"
                out += head + ": bytes \(s.offset)-\(s.offset + s.length) \(every) (\(s.charClass), \(s.distinctValues) distinct values this hour); "
                out += "moving them after the instructions makes \(String(format1: Double(s.shareableGainBytes) / 1024, " KB")) shareable; "
                out += "estimated hit ratio for this template \(Int((s.hitRatioNow * 100).rounded())) % → \(Int((s.hitRatioMoved * 100).rounded())) %\n"
            }
        }
        let total = max(1, self.sessions.values.reduce(0, +))
        out += "sessions: " + self.sessions.sorted { $0.value > $1.value }.map { "\($0.key) \(Int((Double($0.value) * 100 / Double(total)).rounded())) %" }.joined(separator: ", ") + "\n"
        return out
    }
}
