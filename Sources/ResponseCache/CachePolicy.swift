import FastJSON
import RoutingCore
import XXHash

/// The key of a stored answer: its scope (model and tenant: what `DELETE /admin/cache` can name)
/// and a 128-bit digest of everything that changes the answer.
public struct CacheKey: Sendable, Hashable, CustomStringConvertible {
    public var scope: UInt64
    public var high: UInt64
    public var low: UInt64

    public init(scope: UInt64, high: UInt64, low: UInt64) {
        self.scope = scope
        self.high = high
        self.low = low
    }

    /// `<scope, 16 hex>:<digest, 32 hex>`: the form in the `x-cacheroute-cache-key` header, the
    /// admin API and Redis keys.
    public var description: String { "\(self.scope.hex16):\(self.high.hex16)\(self.low.hex16)" }

    /// The storage key of the answer in one form (a stream and a JSON answer are kept apart).
    public func storageKey(_ form: AnswerForm) -> String { "\(self.description):\(form.rawValue)" }

    /// The scope of a model and tenant.
    public static func scope(model: String?, tenant: String) -> UInt64 {
        var bytes = Array((model ?? "").utf8)
        bytes.append(0)
        bytes += tenant.utf8
        return XXH3.hash(bytes, seed: 0x6361_6368_6573_636F)
    }
}

/// How an answer was sent: whole JSON, or an event stream.
public enum AnswerForm: String, Sendable {
    case json = "j"
    case stream = "s"
}

/// A request the cache serves: its key and what may be done with it.
public struct CacheRequest: Sendable {
    public var api: RequestAPI
    public var mode: CacheMode
    public var key: CacheKey
    /// Look up a stored answer (`Cache-Control: no-cache` skips it).
    public var lookup: Bool
    /// Store the answer (`Cache-Control: no-store`, or a sampled request, skip it).
    public var store: Bool
    /// Why it is not stored, when it is not.
    public var noStoreReason: String?
    public var ttlSeconds: Double
    public var threshold: Double
    /// The client asked for an event stream.
    public var stream: Bool
    /// Semantic mode: the content embedded and the hash of everything else.
    public var semantic: SemanticQuery?

    public init(
        api: RequestAPI, mode: CacheMode, key: CacheKey, lookup: Bool, store: Bool, noStoreReason: String? = nil, ttlSeconds: Double, threshold: Double,
        stream: Bool, semantic: SemanticQuery? = nil
    ) {
        self.api = api
        self.mode = mode
        self.key = key
        self.lookup = lookup
        self.store = store
        self.noStoreReason = noStoreReason
        self.ttlSeconds = ttlSeconds
        self.threshold = threshold
        self.stream = stream
        self.semantic = semantic
    }
}

/// The part of a request the semantic cache compares by meaning, and the gate on the rest.
public struct SemanticQuery: Sendable {
    /// The last user turn (or the prompt) as text.
    public var text: String
    /// A hash of the scope, the API, the header dimensions and the whole request but that text:
    /// only entries with the same gate key are compared.
    public var gate: UInt64
}

/// What the cache layer does with a request.
public enum CacheDecision: Sendable {
    /// The layer is off for it: no header, nothing done.
    case off
    /// Not served or stored from the cache, for this reason (the response says `bypass`).
    case bypass(String)
    case use(CacheRequest)
}

/// Decides, for one request, whether and how the response cache applies, and computes its key.
///
/// Pure: the body, the tenant, the headers and the settings in; a decision out. The key is a
/// 128-bit XXH3 over the API path, tenant, and the canonical JSON (`CanonicalJSON`, the form the
/// routing keys are built from) of every top-level member of the body except those that do not
/// change the answer (`ignoredMembers`).
public enum CachePolicy {
    /// Members that change how an answer is delivered or who asked, not the answer.
    public static let ignoredMembers: Set<String> = ["stream", "stream_options", "user", "request_id", "cache", "metadata"]

    /// The request header that opts in or out.
    public static let header = "x-cacheroute-cache"

    /// The result of reading a body: the decision, and the byte range of its `cache` member (to
    /// strip before the request goes to a replica).
    public struct Analysis: Sendable {
        public var decision: CacheDecision
        public var strip: Range<Int>?
    }

    public static func analyze(
        api: RequestAPI,
        path: String,
        body: UnsafeRawBufferPointer,
        tenant: String,
        header: (String) -> String?,
        settings: CacheSettings
    ) -> Analysis {
        guard settings.enabled, api != .generate else { return Analysis(decision: .off, strip: nil) }
        let read: Members
        do {
            read = try Members.read(body)
        } catch {
            return Analysis(decision: .bypass("body is not a JSON object"), strip: nil)
        }
        let route = settings.route(model: read.model, tenant: tenant, path: path, header: header)
        // What the request asks for: the header, else the body's `cache` member, else the route's default.
        var asked: CacheMode?
        if let h = header(Self.header)?.lowercased() {
            asked = CacheMode(rawValue: h)
            if asked == nil { return Analysis(decision: .bypass("x-cacheroute-cache must be exact, semantic or off, not '\(h)'"), strip: read.cacheMember) }
        } else if let m = read.askedMode {
            asked = m
        }
        let maxMode = route?.maxMode ?? settings.maxMode
        let mode = min(asked ?? route?.mode ?? settings.defaultMode, maxMode)
        guard mode != .off else {
            if asked.map({ $0 > maxMode }) == true { return Analysis(decision: .bypass("the cache is off for this route"), strip: read.cacheMember) }
            return Analysis(decision: asked == nil ? .off : .bypass("off"), strip: read.cacheMember)
        }
        let control = header("cache-control")?.lowercased() ?? ""
        let noStore = control.contains("no-store")
        let noCache = control.contains("no-cache")
        let allowSampled = route?.allowSampled ?? settings.allowSampled
        if read.sampled && !allowSampled {
            // A fresh sample was wanted: neither served a stored one nor stored.
            return Analysis(decision: .bypass("sampled without a seed (temperature > 0 or unset)"), strip: read.cacheMember)
        }
        if api == .responses && !read.storeFalse {
            // A stored response lives on the replica that made it: a replayed id names nothing.
            return Analysis(decision: .bypass("a stored Responses request (send store: false to cache)"), strip: read.cacheMember)
        }
        if noStore && noCache { return Analysis(decision: .bypass("Cache-Control: no-store, no-cache"), strip: read.cacheMember) }
        let reason: String? = noStore ? "Cache-Control: no-store" : nil

        var digestInput = Array(path.utf8)
        digestInput.append(0)
        digestInput += tenant.utf8
        digestInput.append(0)
        for member in read.kept {
            digestInput += member.key
            digestInput.append(0)
            digestInput += member.value
            digestInput.append(0)
        }
        let scope = CacheKey.scope(model: read.model, tenant: tenant)
        let digest = digestInput.withUnsafeBytes { XXH3.hash128($0, seed: scope) }
        var ttl = route?.ttlSeconds ?? settings.ttlSeconds
        if let askedTTL = read.askedTTL { ttl = min(ttl, askedTTL) }
        var request = CacheRequest(
            api: api, mode: mode, key: CacheKey(scope: scope, high: digest.high, low: digest.low), lookup: !noCache, store: reason == nil,
            noStoreReason: reason, ttlSeconds: ttl, threshold: route?.threshold ?? settings.semantic.threshold, stream: read.stream, semantic: nil)
        if mode == .semantic {
            request.semantic = Self.semanticQuery(api: api, read: read, path: path, tenant: tenant, header: header, settings: settings.semantic)
        }
        return Analysis(decision: .use(request), strip: read.cacheMember)
    }

    /// The text to embed and the gate key, or nil when the request has no single varying text
    /// (the last message is not the user's, has images, or is longer than the bound).
    static func semanticQuery(
        api: RequestAPI, read: Members, path: String, tenant: String, header: (String) -> String?, settings: SemanticSettings
    ) -> SemanticQuery? {
        let field: String
        switch api {
        case .chat, .messages: field = "messages"
        case .completions: field = "prompt"
        case .responses: field = "input"
        case .generate: return nil
        }
        guard let index = read.kept.firstIndex(where: { $0.key == Array(field.utf8) }),
            var value = try? JSONValue.parse(read.kept[index].value),
            let text = Self.takeVaryingText(&value, api: api),
            !text.isEmpty, text.utf8.count <= settings.maxInputBytes
        else { return nil }
        var rest: [UInt8] = []
        value.write(to: &rest)
        guard let canonicalRest = try? CanonicalJSON.canonicalize(rest) else { return nil }
        var gateInput = Array(path.utf8)
        gateInput.append(0)
        gateInput += tenant.utf8
        for name in settings.scopeHeaders {
            gateInput.append(0)
            gateInput += (header(name) ?? "").utf8
        }
        for (n, member) in read.kept.enumerated() {
            gateInput.append(0)
            gateInput += member.key
            gateInput.append(0)
            gateInput += n == index ? canonicalRest : member.value
        }
        return SemanticQuery(text: text, gate: XXH3.hash(gateInput, seed: 0x7365_6D61_6E74_6963))
    }

    /// Takes the varying text out of the prompt member (replacing it with a placeholder) and
    /// returns it.
    static func takeVaryingText(_ value: inout JSONValue, api: RequestAPI) -> String? {
        let placeholder = JSONValue.string("\u{0}")
        switch value {
        case .string(let s):
            // A completions prompt or a Responses input given as one string.
            guard api == .completions || api == .responses else { return nil }
            value = placeholder
            return s
        case .array(var items):
            if api == .completions {
                guard items.count == 1, case .string(let s) = items[0] else { return nil }
                value = .array([placeholder])
                return s
            }
            guard var last = items.last, case .object(var members) = last, last["role"]?.stringValue == "user",
                let contentIndex = members.lastIndex(where: { $0.key == "content" })
            else { return nil }
            guard let text = Self.text(of: members[contentIndex].value) else { return nil }
            members[contentIndex].value = placeholder
            last = .object(members)
            items[items.count - 1] = last
            value = .array(items)
            return text
        default:
            return nil
        }
    }

    /// A message content as plain text: a string, or text parts only (an image or a file: nil).
    static func text(of content: JSONValue) -> String? {
        switch content {
        case .string(let s):
            return s
        case .array(let parts):
            var texts: [String] = []
            for part in parts {
                guard let type = part["type"]?.stringValue, ["text", "input_text"].contains(type), let t = part["text"]?.stringValue else {
                    return nil
                }
                texts.append(t)
            }
            return texts.isEmpty ? nil : texts.joined(separator: "\n")
        default:
            return nil
        }
    }
}

/// The top-level members of a request body, canonical, and what the cache reads of them.
struct Members {
    /// Canonical key and value bytes of the members that change the answer, sorted by key (a
    /// repeated key: the last one).
    var kept: [(key: [UInt8], value: [UInt8])] = []
    var model: String?
    var stream = false
    /// Sampled without a seed: `temperature` unset or above 0, and no `seed`.
    var sampled = true
    /// Responses: `store: false`.
    var storeFalse = false
    /// The body's `cache` member: its mode, TTL, and its bytes with a separating comma.
    var askedMode: CacheMode?
    var askedTTL: Double?
    var cacheMember: Range<Int>?

    static func read(_ body: UnsafeRawBufferPointer) throws(JSONError) -> Members {
        var m = Members()
        var reader = JSONReader(body)
        reader.skipWhitespace()
        let open = reader.position
        try reader.beginObject()
        var first = true
        var byKey: [[UInt8]: [UInt8]] = [:]
        var temperature: Double?
        var seeded = false
        while true {
            let before = reader.position
            let wasFirst = first
            guard let keySpan = try reader.nextKey(first: &first) else { break }
            let key = Array(try reader.decodeString(keySpan).utf8)
            let keyString = String(decoding: key, as: UTF8.self)
            if keyString == "cache" {
                let value = try JSONValue.read(&reader)
                (m.askedMode, m.askedTTL) = Self.cacheField(value)
                m.cacheMember = Self.memberRange(body, open: open, before: before, first: wasFirst, end: reader.position)
                continue
            }
            var canonical: [UInt8] = []
            try CanonicalJSON.appendValue(&reader, to: &canonical)
            switch keyString {
            case "model":
                m.model = (try? JSONValue.parse(canonical))?.stringValue
            case "stream":
                m.stream = canonical == Array("true".utf8)
            case "temperature":
                temperature = (try? JSONValue.parse(canonical))?.doubleValue
            case "seed":
                seeded = canonical != Array("null".utf8)
            case "store":
                m.storeFalse = canonical == Array("false".utf8)
            default:
                break
            }
            if !CachePolicy.ignoredMembers.contains(keyString) { byKey[key] = canonical }
        }
        m.sampled = !seeded && (temperature ?? 1) > 0
        m.kept = byKey.sorted { $0.key.lexicographicallyPrecedes($1.key) }.map { ($0.key, $0.value) }
        return m
    }

    /// `"cache": "exact"` or `"cache": {"mode": "semantic", "ttl": 60}`.
    static func cacheField(_ value: JSONValue) -> (CacheMode?, Double?) {
        if let s = value.stringValue { return (CacheMode(rawValue: s.lowercased()), nil) }
        if case .bool(let b) = value { return (b ? .exact : .off, nil) }
        let mode = value["mode"]?.stringValue.flatMap { CacheMode(rawValue: $0.lowercased()) }
        let ttl = value["ttl"]?.doubleValue.flatMap { $0 > 0 ? $0 : nil }
        return (mode, ttl)
    }

    /// The bytes to cut to remove a member and keep the object valid: with the comma before it,
    /// or (the first member) with the comma after it.
    static func memberRange(_ body: UnsafeRawBufferPointer, open: Int, before: Int, first: Bool, end: Int) -> Range<Int> {
        func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 }
        if !first {
            var comma = before
            while comma < end, body[comma] != UInt8(ascii: ",") { comma += 1 }
            return comma..<end
        }
        var next = end
        while next < body.count, isSpace(body[next]) { next += 1 }
        if next < body.count, body[next] == UInt8(ascii: ",") { return (open + 1)..<(next + 1) }
        return (open + 1)..<end
    }
}
