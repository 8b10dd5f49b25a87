import FastJSON
import Foundation

/// A request trace: one JSON object per line.
///
/// Two formats, told apart per line:
/// - **Mooncake-style** (prefix hashes): `timestamp` (ms), `input_length` and `output_length`
///   (tokens), `hash_ids` (one id per 512-token block; equal ids at position i mean an equal
///   prefix through block i), optional `session`, `group`, `turn`.
/// - **OpenAI bodies**: `timestamp` (ms), `body` (the request object), optional `path` (default
///   `/v1/chat/completions`) and `headers` (an object of strings).
///
/// A bad line is reported with its number and skipped; it never stops the rest.
public struct Trace: Sendable {
    public var name: String
    public var requests: [TraceRequest]
    public var warnings: [TraceWarning]

    public init(name: String, requests: [TraceRequest], warnings: [TraceWarning] = []) {
        self.name = name
        self.requests = requests
        self.warnings = warnings
    }

    /// Tokens per hash id in Mooncake-style traces.
    public static let hashBlockTokens = 512

    /// Reads a trace file.
    public static func load(path: String) throws -> Trace {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TraceError("cannot read trace file '\(path)'")
        }
        return Self.parse(Array(data), name: (path as NSString).lastPathComponent)
    }

    /// Parses trace text.
    public static func parse(_ bytes: [UInt8], name: String) -> Trace {
        var requests: [TraceRequest] = []
        var warnings: [TraceWarning] = []
        var lineNumber = 0
        for line in bytes.split(separator: 0x0A, omittingEmptySubsequences: false) {
            lineNumber += 1
            let trimmed = line.drop { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }
            if trimmed.isEmpty || trimmed.first == UInt8(ascii: "#") { continue }
            switch Self.parseLine(Array(line), number: lineNumber) {
            case .success(let request): requests.append(request)
            case .failure(let message): warnings.append(TraceWarning(line: lineNumber, message: message.description))
            }
        }
        if zip(requests, requests.dropFirst()).contains(where: { $0.timestampMs > $1.timestampMs }) {
            warnings.append(TraceWarning(line: 0, message: "timestamps out of order; requests were sorted by timestamp"))
            requests.sort { $0.timestampMs < $1.timestampMs }
        }
        return Trace(name: name, requests: requests, warnings: warnings)
    }

    static func parseLine(_ line: [UInt8], number: Int) -> Result<TraceRequest, TraceError> {
        let value: JSONValue
        do {
            value = try JSONValue.parse(line)
        } catch {
            return .failure(TraceError("invalid JSON: \(error)"))
        }
        guard case .object = value else { return .failure(TraceError("expected a JSON object")) }
        guard let timestamp = value["timestamp"]?.doubleValue, timestamp >= 0, timestamp.isFinite else {
            return .failure(TraceError("'timestamp' must be a non-negative number of milliseconds"))
        }
        if let body = value["body"] {
            guard case .object = body else { return .failure(TraceError("'body' must be a JSON object")) }
            let path = value["path"]?.stringValue ?? "/v1/chat/completions"
            guard path.hasPrefix("/") else { return .failure(TraceError("'path' must start with '/'")) }
            var headers: [(String, String)] = []
            if let h = value["headers"] {
                guard let members = h.objectValue else { return .failure(TraceError("'headers' must be an object of strings")) }
                for m in members {
                    guard let v = m.value.stringValue else { return .failure(TraceError("header '\(m.key)' must be a string")) }
                    headers.append((m.key.lowercased(), v))
                }
            }
            var bytes: [UInt8] = []
            body.write(to: &bytes)
            return .success(TraceRequest(line: number, timestampMs: timestamp, content: .body(path: path, headers: headers, body: bytes)))
        }
        guard let input = value["input_length"]?.intValue, input > 0 else {
            return .failure(TraceError("'input_length' must be a positive integer (or give 'body')"))
        }
        guard let output = value["output_length"]?.intValue, output >= 0 else {
            return .failure(TraceError("'output_length' must be a non-negative integer"))
        }
        guard let ids = value["hash_ids"]?.arrayValue, !ids.isEmpty else {
            return .failure(TraceError("'hash_ids' must be a non-empty list"))
        }
        var hashIDs: [Int] = []
        hashIDs.reserveCapacity(ids.count)
        for id in ids {
            guard let n = id.intValue, n >= 0 else { return .failure(TraceError("'hash_ids' must hold non-negative integers")) }
            hashIDs.append(Int(n))
        }
        let maxTokens = hashIDs.count * Trace.hashBlockTokens
        let minTokens = (hashIDs.count - 1) * Trace.hashBlockTokens + 1
        guard Int(input) <= maxTokens, Int(input) >= minTokens else {
            return .failure(TraceError("'input_length' \(input) does not fit \(hashIDs.count) blocks of \(Trace.hashBlockTokens) tokens"))
        }
        let record = HashedRequest(
            inputTokens: Int(input),
            outputTokens: max(1, Int(output)),
            hashIDs: hashIDs,
            session: value["session"]?.intValue.map(Int.init),
            group: value["group"]?.intValue.map(Int.init),
            turn: value["turn"]?.intValue.map(Int.init)
        )
        return .success(TraceRequest(line: number, timestampMs: timestamp, content: .hashed(record)))
    }

    /// Span of the trace in seconds.
    public var durationSeconds: Double {
        guard let first = self.requests.first, let last = self.requests.last else { return 0 }
        return (last.timestampMs - first.timestampMs) / 1000
    }
}

public struct TraceRequest: Sendable {
    public enum Content: Sendable {
        case hashed(HashedRequest)
        case body(path: String, headers: [(String, String)], body: [UInt8])
    }

    /// Line in the file (for messages).
    public var line: Int
    public var timestampMs: Double
    public var content: Content

    public init(line: Int, timestampMs: Double, content: Content) {
        self.line = line
        self.timestampMs = timestampMs
        self.content = content
    }
}

/// A request described by prefix hashes (the Mooncake format).
public struct HashedRequest: Sendable, Equatable {
    public var inputTokens: Int
    public var outputTokens: Int
    public var hashIDs: [Int]
    public var session: Int?
    public var group: Int?
    public var turn: Int?

    public init(inputTokens: Int, outputTokens: Int, hashIDs: [Int], session: Int? = nil, group: Int? = nil, turn: Int? = nil) {
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.hashIDs = hashIDs
        self.session = session
        self.group = group
        self.turn = turn
    }
}

public struct TraceWarning: Sendable, Equatable, CustomStringConvertible {
    /// 1-based line; 0 for the whole file.
    public var line: Int
    public var message: String

    public var description: String { self.line > 0 ? "line \(self.line): \(self.message)" : self.message }
}

public struct TraceError: Error, Sendable, CustomStringConvertible {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}
