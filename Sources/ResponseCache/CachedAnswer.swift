import FastJSON
import RoutingCore
import XXHash

/// A stored answer: the bytes a replica sent (the JSON document, or the whole event stream) and
/// what a replay rewrites in them (the answer's id and creation time).
public struct CachedAnswer: Sendable, Equatable {
    public var form: AnswerForm
    public var contentType: String
    /// Unix seconds.
    public var storedAt: Double
    public var expiresAt: Double
    /// The answer's `id` as its JSON string's raw bytes.
    public var id: [UInt8]
    /// The `created` (or `created_at`) number's raw bytes; empty when the API has none.
    public var created: [UInt8]
    /// The semantic cache's vector of the request (empty for an exact-only entry).
    public var vector: [Float]
    public var body: [UInt8]

    public init(
        form: AnswerForm, contentType: String, storedAt: Double, expiresAt: Double, id: [UInt8], created: [UInt8], vector: [Float] = [],
        body: [UInt8]
    ) {
        self.form = form
        self.contentType = contentType
        self.storedAt = storedAt
        self.expiresAt = expiresAt
        self.id = id
        self.created = created
        self.vector = vector
        self.body = body
    }

    // MARK: - Encoding

    static let magic: [UInt8] = Array("CRA1".utf8)

    /// The bytes stored (memory or Redis): a magic, the fields, and an XXH3 checksum of them.
    public func encoded() -> [UInt8] {
        var out = Self.magic
        out.reserveCapacity(64 + self.contentType.utf8.count + self.id.count + self.created.count + self.vector.count * 4 + self.body.count)
        out.append(self.form == .json ? 0 : 1)
        Self.put(self.storedAt.bitPattern, &out)
        Self.put(self.expiresAt.bitPattern, &out)
        Self.putBytes(Array(self.contentType.utf8), &out)
        Self.putBytes(self.id, &out)
        Self.putBytes(self.created, &out)
        Self.put(UInt64(self.vector.count), &out)
        for v in self.vector { Self.put(UInt64(v.bitPattern), &out) }
        Self.putBytes(self.body, &out)
        Self.put(XXH3.hash(out), &out)
        return out
    }

    /// Decodes stored bytes; nil when they are not an entry (truncated, altered, another format):
    /// the caller deletes it and takes it as a miss.
    public static func decode(_ bytes: [UInt8]) -> CachedAnswer? {
        guard bytes.count >= Self.magic.count + 8, Array(bytes[0..<4]) == Self.magic else { return nil }
        let payload = bytes.count - 8
        var at = payload
        guard let sum = Self.take(bytes, &at, end: bytes.count), sum == bytes.withUnsafeBytes({ XXH3.hash(UnsafeRawBufferPointer(rebasing: $0[0..<payload])) })
        else { return nil }
        at = 4
        guard at < payload else { return nil }
        let form: AnswerForm = bytes[at] == 0 ? .json : .stream
        at += 1
        guard let stored = Self.take(bytes, &at, end: payload), let expires = Self.take(bytes, &at, end: payload),
            let type = Self.takeBytes(bytes, &at, end: payload), let id = Self.takeBytes(bytes, &at, end: payload),
            let created = Self.takeBytes(bytes, &at, end: payload), let count = Self.take(bytes, &at, end: payload), count <= 65536
        else { return nil }
        var vector: [Float] = []
        vector.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let v = Self.take(bytes, &at, end: payload) else { return nil }
            vector.append(Float(bitPattern: UInt32(truncatingIfNeeded: v)))
        }
        guard let body = Self.takeBytes(bytes, &at, end: payload), at == payload else { return nil }
        return CachedAnswer(
            form: form, contentType: String(decoding: type, as: UTF8.self), storedAt: Double(bitPattern: stored), expiresAt: Double(bitPattern: expires),
            id: id, created: created, vector: vector, body: body)
    }

    static func put(_ v: UInt64, _ out: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
    }

    static func putBytes(_ b: [UInt8], _ out: inout [UInt8]) {
        Self.put(UInt64(b.count), &out)
        out += b
    }

    static func take(_ bytes: [UInt8], _ at: inout Int, end: Int) -> UInt64? {
        guard at + 8 <= end else { return nil }
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(bytes[at + i]) << (8 * UInt64(i)) }
        at += 8
        return v
    }

    static func takeBytes(_ bytes: [UInt8], _ at: inout Int, end: Int) -> [UInt8]? {
        guard let n = Self.take(bytes, &at, end: end), n <= UInt64(end - at) else { return nil }
        let out = Array(bytes[at..<(at + Int(n))])
        at += Int(n)
        return out
    }
}

/// Whether an answer may be stored: a complete success, never an error or a cut stream.
public enum AnswerCheck {
    public struct Identity: Sendable, Equatable {
        public var id: [UInt8]
        public var created: [UInt8]
    }

    /// The answer's id and creation time when it is complete (every choice finished, the stream
    /// ended with its last event, no error event), else why it is not stored.
    public static func inspect(api: RequestAPI, form: AnswerForm, body: [UInt8]) -> Result<Identity, AnswerRefusal> {
        switch form {
        case .json:
            guard let doc = try? JSONValue.parse(body), case .object = doc else { return .failure(.notJSON) }
            guard doc["error"] == nil || doc["error"] == .null else { return .failure(.error) }
            guard Self.finished(api: api, doc) else { return .failure(.unfinished) }
            return Self.identity(api: api, doc).map(Result.success) ?? .failure(.noID)
        case .stream:
            return Self.inspectStream(api: api, body: body)
        }
    }

    /// A whole JSON answer finished: every choice has a `finish_reason`; a Responses answer is
    /// `completed`; a Message has its `stop_reason`.
    static func finished(api: RequestAPI, _ doc: JSONValue) -> Bool {
        switch api {
        case .chat, .completions, .generate:
            guard let choices = doc["choices"]?.arrayValue, !choices.isEmpty else { return false }
            return choices.allSatisfy { ($0["finish_reason"]?.stringValue).map { $0 != "error" } ?? false }
        case .responses:
            return doc["status"]?.stringValue == "completed"
        case .messages:
            return doc["stop_reason"]?.stringValue != nil && doc["type"]?.stringValue == "message"
        }
    }

    static func identity(api: RequestAPI, _ doc: JSONValue) -> Identity? {
        guard let id = doc["id"]?.stringValue, !id.isEmpty else { return nil }
        var created: [UInt8] = []
        if let c = (api == .responses ? doc["created_at"] : doc["created"])?.intValue { created = Array(String(c).utf8) }
        var raw: [UInt8] = []
        JSONWriter.appendString(id, to: &raw)
        return Identity(id: Array(raw.dropFirst().dropLast()), created: created)
    }

    static func inspectStream(api: RequestAPI, body: [UInt8]) -> Result<Identity, AnswerRefusal> {
        var identity: Identity?
        var done = false
        var finished = false
        for event in SSEEvents.split(body) {
            let (name, data) = SSEEvents.fields(event)
            guard let data else { continue }
            if name == "error" { return .failure(.error) }
            if data == Array("[DONE]".utf8) {
                done = true
                continue
            }
            guard let doc = try? JSONValue.parse(data) else { return .failure(.notJSON) }
            if let e = doc["error"], e != .null { return .failure(.error) }
            let type = doc["type"]?.stringValue
            switch api {
            case .chat, .completions, .generate:
                if identity == nil { identity = Self.identity(api: api, doc) }
                if let choices = doc["choices"]?.arrayValue, choices.contains(where: { $0["finish_reason"]?.stringValue != nil }) { finished = true }
            case .responses:
                if type == "response.failed" || type == "response.incomplete" || type == "error" { return .failure(.error) }
                if identity == nil, let r = doc["response"] { identity = Self.identity(api: api, r) }
                if type == "response.completed" {
                    finished = true
                    done = true
                }
            case .messages:
                if type == "error" { return .failure(.error) }
                if identity == nil, type == "message_start", let m = doc["message"] { identity = Self.identity(api: api, m) }
                if type == "message_delta", doc["delta"]?["stop_reason"]?.stringValue != nil { finished = true }
                if type == "message_stop" { done = true }
            }
        }
        guard done, finished else { return .failure(.unfinished) }
        return identity.map(Result.success) ?? .failure(.noID)
    }
}

/// Why an answer is not stored.
public enum AnswerRefusal: String, Error, Sendable {
    case notJSON = "not_json"
    case error
    case unfinished
    case noID = "no_id"
    case tooLarge = "too_large"
    case status
}

/// Server-sent events as bytes.
public enum SSEEvents {
    /// The events of a stream, each without its blank-line terminator (`\n\n` or `\r\n\r\n`).
    public static func split(_ body: [UInt8]) -> [ArraySlice<UInt8>] {
        Self.bounds(body).compactMap { b in
            b.content.isEmpty || !body[b.content].contains(where: { $0 != 0x0A && $0 != 0x0D }) ? nil : body[b.content]
        }
    }

    /// The events of a stream with their terminators: written one by one, they are the stream.
    public static func whole(_ body: [UInt8]) -> [ArraySlice<UInt8>] {
        Self.bounds(body).map { body[$0.whole] }
    }

    /// Where each event is: its content, and its content with the blank line that ends it (the
    /// last one may have none). The ranges cover the body without gaps.
    static func bounds(_ body: [UInt8]) -> [(content: Range<Int>, whole: Range<Int>)] {
        var out: [(Range<Int>, Range<Int>)] = []
        var start = 0
        var i = 0
        let n = body.count
        while i < n {
            var terminator = 0
            if body[i] == 0x0A, i + 1 < n, body[i + 1] == 0x0A {
                terminator = 2
            } else if body[i] == 0x0D, i + 3 < n, body[i + 1] == 0x0A, body[i + 2] == 0x0D, body[i + 3] == 0x0A {
                terminator = 4
            }
            if terminator > 0 {
                out.append((start..<i, start..<(i + terminator)))
                i += terminator
                start = i
            } else {
                i += 1
            }
        }
        if start < n { out.append((start..<n, start..<n)) }
        return out
    }

    /// An event's `event:` name and its `data:` (lines joined by `\n`).
    public static func fields(_ event: ArraySlice<UInt8>) -> (name: String?, data: [UInt8]?) {
        var name: String?
        var data: [UInt8]?
        for line in event.split(separator: 0x0A, omittingEmptySubsequences: true) {
            var line = line
            if line.last == 0x0D { line = line.dropLast() }
            if line.starts(with: "data:".utf8) {
                var value = line.dropFirst(5)
                if value.first == 0x20 { value = value.dropFirst() }
                if data == nil { data = Array(value) } else { data! += [0x0A] + value }
            } else if line.starts(with: "event:".utf8) {
                var value = line.dropFirst(6)
                if value.first == 0x20 { value = value.dropFirst() }
                name = String(decoding: value, as: UTF8.self)
            }
        }
        return (name, data)
    }
}
