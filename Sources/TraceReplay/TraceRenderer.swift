import FastJSON
import RoutingCore

/// An HTTP request made from a trace record.
public struct RenderedRequest: Sendable {
    public var api: RequestAPI
    public var path: String
    public var headers: [(String, String)]
    public var body: [UInt8]
    public var outputTokens: Int?
}

/// Turns trace records into HTTP requests that go through the same key extraction as real traffic.
///
/// Each hash id becomes a fixed, deterministic text block of 512 tokens (2048 bytes at 4 bytes per
/// token): lower-case words chosen by a generator seeded with the id, so equal ids give equal text
/// and different ids diverge from their first bytes. A request's prompt is its blocks in order,
/// the last one cut to the trace's `input_length`.
///
/// - Records without a group are completions requests (a raw prompt: the traces carry no message structure).
/// - Records with a group are chat requests: the blocks every request of the group shares become
///   the system message, the rest the user message, and the session goes in `x-session-id`.
public struct TraceRenderer: Sendable {
    public var model: String
    public var bytesPerToken = 4
    public var stream = true
    /// Leading hash ids shared by every request of a group.
    var groupPrefix: [Int: Int] = [:]

    public init(trace: Trace, model: String = "cacheroute-demo") {
        self.model = model
        var prefixes: [Int: [Int]] = [:]
        for request in trace.requests {
            guard case .hashed(let r) = request.content, let group = r.group else { continue }
            if let current = prefixes[group] {
                prefixes[group] = Array(zip(current, r.hashIDs).prefix { $0.0 == $0.1 }.map(\.0))
            } else {
                prefixes[group] = r.hashIDs
            }
        }
        self.groupPrefix = prefixes.mapValues(\.count)
    }

    /// Bytes of text for one hash id.
    public var blockBytes: Int { Trace.hashBlockTokens * self.bytesPerToken }

    static let words: [String] = [
        "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
        "this", "are", "or", "from", "at", "which", "an", "have", "but", "all", "were", "they", "one", "their",
        "there", "been", "has", "more", "would", "can", "if", "will", "about", "system", "model", "cache",
        "replica", "prompt", "token", "request", "answer", "question", "document", "section", "value", "time",
        "data", "user", "result", "number", "order", "service", "table", "report", "figure", "method", "state",
    ]

    /// The deterministic text of hash id `id`, `length` bytes long.
    public static func blockText(_ id: Int, length: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(length + 16)
        var state = UInt64(truncatingIfNeeded: id) &* 0x9E37_79B9_7F4A_7C15 ^ 0xC0FF_EE00_D15E_A5E5
        // The id in digits first, so two ids never share a leading run.
        out += Array("[\(id)] ".utf8)
        while out.count < length {
            state = SplitMix64.mix(state)
            let word = Self.words[Int(state % UInt64(Self.words.count))]
            out += Array(word.utf8)
            out.append((state >> 40) % 17 == 0 ? UInt8(ascii: ".") : UInt8(ascii: " "))
        }
        return Array(out.prefix(length))
    }

    /// The prompt text of a hashed record: its blocks, the last cut to `input_length`.
    public func promptText(_ r: HashedRequest, blocks: ArraySlice<Int>? = nil, totalTokens: Int? = nil) -> [UInt8] {
        let ids = blocks ?? r.hashIDs[...]
        var out: [UInt8] = []
        let total = (totalTokens ?? r.inputTokens) * self.bytesPerToken
        out.reserveCapacity(total)
        var offset = (ids.startIndex - r.hashIDs.startIndex) * self.blockBytes
        for id in ids {
            let length = min(self.blockBytes, r.inputTokens * self.bytesPerToken - offset)
            guard length > 0 else { break }
            out += Self.blockText(id, length: length)
            offset += length
        }
        return out
    }

    /// The HTTP request for a trace record.
    public func render(_ request: TraceRequest) -> RenderedRequest {
        switch request.content {
        case .body(let path, let headers, let body):
            return RenderedRequest(api: RequestAPI(path: path) ?? .chat, path: path, headers: headers, body: body, outputTokens: nil)
        case .hashed(let r):
            var members: [JSONValue.Member] = [.init("model", .string(self.model))]
            var headers: [(String, String)] = []
            let api: RequestAPI
            if let group = r.group {
                api = .chat
                let shared = min(self.groupPrefix[group] ?? 0, r.hashIDs.count - 1)
                var messages: [JSONValue] = []
                if shared > 0 {
                    let system = self.promptText(r, blocks: r.hashIDs.prefix(shared))
                    messages.append(.object(["role": .string("system"), "content": .string(String(decoding: system, as: UTF8.self))]))
                }
                let user = self.promptText(r, blocks: r.hashIDs[shared...])
                messages.append(.object(["role": .string("user"), "content": .string(String(decoding: user, as: UTF8.self))]))
                members.append(.init("messages", .array(messages)))
                if let session = r.session { headers.append(("x-session-id", "trace-session-\(session)")) }
            } else {
                api = .completions
                members.append(.init("prompt", .string(String(decoding: self.promptText(r), as: UTF8.self))))
            }
            members.append(.init("max_tokens", .int(Int64(r.outputTokens))))
            members.append(.init("ignore_eos", .bool(true)))
            if self.stream {
                members.append(.init("stream", .bool(true)))
                members.append(.init("stream_options", .object(["include_usage": .bool(true)])))
            }
            var body: [UInt8] = []
            JSONValue.object(members).write(to: &body)
            return RenderedRequest(api: api, path: api.path, headers: headers, body: body, outputTokens: r.outputTokens)
        }
    }
}
