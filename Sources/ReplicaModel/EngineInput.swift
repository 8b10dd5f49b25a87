import FastJSON
import RoutingCore
import XXHash

/// A request as an engine reads it: the rendered prompt, how many tokens to generate, the salt.
///
/// Chat requests are rendered with a fixed ChatML template; text is tokenized at 4 bytes per
/// token; the prompt's KV blocks are chain-hashed with the salt in the first seed, as vLLM does.
/// The emulator and the simulator both go through this, so they cache exactly alike.
public struct EngineInput: Sendable {
    public var api: RequestAPI
    public var model: String?
    /// The prompt as the engine sees it (rendered chat, or the raw prompt).
    public var prompt: [UInt8]
    /// Token ids given directly (completions/generate with ids): each id is one token.
    public var tokenIDs: [UInt32]?
    public var maxTokens: Int
    public var salt: String?
    public var stream: Bool
    public var includeUsage: Bool
    /// The request's own id for SGLang (`rid`), echoed back.
    public var requestID: String?
    /// Responses and Messages: the conversation as chat messages (vLLM converts both to chat),
    /// rendered into `prompt` by the handler once any stored history is put in front.
    public var chatMessages: [ChatMessage]?
    /// Responses and Messages: the tools as canonical JSON.
    public var tools: [UInt8]?
    /// Responses: the stored response this continues, whether to store this one, and the id the
    /// caller chose (`request_id`: vLLM names the response after it).
    public var previousResponseID: String?
    public var store = false
    public var bodyRequestID: String?
    public var instructions: String?

    /// One chat message as the engine renders it.
    public struct ChatMessage: Sendable, Equatable {
        public var role: String
        public var content: [UInt8]

        public init(role: String, content: [UInt8]) {
            self.role = role
            self.content = content
        }
    }

    public static let bytesPerToken = 4

    /// Prompt length in tokens.
    public var promptTokens: Int {
        if let ids = self.tokenIDs { return ids.count }
        return (self.prompt.count + Self.bytesPerToken - 1) / Self.bytesPerToken
    }

    /// Chain hashes of the prompt's full KV blocks.
    public func chain(blockTokens: Int) -> [UInt64] {
        let seed = XXH3.hash("kv|" + (self.salt ?? ""))
        if let ids = self.tokenIDs {
            var bytes: [UInt8] = []
            bytes.reserveCapacity(ids.count * 4)
            for id in ids { withUnsafeBytes(of: id.littleEndian) { bytes.append(contentsOf: $0) } }
            return BlockChain.hashes(bytes, blockBytes: blockTokens * 4, seed: seed)
        }
        return BlockChain.hashes(self.prompt, blockBytes: blockTokens * Self.bytesPerToken, seed: seed)
    }

    /// The blocks that follow `promptChain` (this prompt's chain) when `output` is appended:
    /// only the prompt's last partial block and the output are hashed.
    public func chain(continuing promptChain: [UInt64], with output: [UInt8], blockTokens: Int) -> [UInt64] {
        let blockBytes = blockTokens * Self.bytesPerToken
        let start = promptChain.count * blockBytes
        guard self.tokenIDs == nil, start <= self.prompt.count else { return [] }
        let tail = self.prompt[start...] + output
        let seed = promptChain.last ?? XXH3.hash("kv|" + (self.salt ?? ""))
        return BlockChain.hashes(Array(tail), blockBytes: blockBytes, seed: seed)
    }

    public init(
        api: RequestAPI,
        model: String?,
        prompt: [UInt8],
        tokenIDs: [UInt32]? = nil,
        maxTokens: Int,
        salt: String? = nil,
        stream: Bool = false,
        includeUsage: Bool = false,
        requestID: String? = nil
    ) {
        self.api = api
        self.model = model
        self.prompt = prompt
        self.tokenIDs = tokenIDs
        self.maxTokens = maxTokens
        self.salt = salt
        self.stream = stream
        self.includeUsage = includeUsage
        self.requestID = requestID
    }
}

/// Why a request body is refused (the engine answers 400 with this message).
public struct EngineInputError: Error, Sendable, CustomStringConvertible {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}

extension EngineInput {
    /// Parses a request body. `defaultMaxTokens` applies when the body names no limit.
    public static func parse(api: RequestAPI, body: [UInt8], defaultMaxTokens: Int = 16) throws(EngineInputError) -> EngineInput {
        let result: Result<EngineInput, EngineInputError> = body.withUnsafeBytes { raw in
            Self.parse(api: api, raw: raw, defaultMaxTokens: defaultMaxTokens)
        }
        return try result.get()
    }

    /// Parses a request body held in memory the caller owns.
    public static func parse(api: RequestAPI, raw: UnsafeRawBufferPointer, defaultMaxTokens: Int = 16) -> Result<EngineInput, EngineInputError> {
        guard raw.count > 0 else { return .failure(EngineInputError("empty request body")) }
        if api == .responses || api == .messages {
            do {
                return .success(try AgentRequest.parse(api: api, value: try JSONValue.parse(raw), defaultMaxTokens: defaultMaxTokens))
            } catch let error as EngineInputError {
                return .failure(error)
            } catch {
                return .failure(EngineInputError("invalid JSON: \(error)"))
            }
        }
        var parser = EngineBodyParser(reader: JSONReader(raw), api: api, defaultMaxTokens: defaultMaxTokens)
        do {
            return .success(try parser.parse())
        } catch let error as EngineInputError {
            return .failure(error)
        } catch {
            return .failure(EngineInputError("invalid JSON: \(error)"))
        }
    }
}

/// The fixed chat template (ChatML, as Qwen and many others use).
public enum ChatTemplate {
    /// Renders messages (role, text) and optional tools JSON into the prompt text.
    public static func render(tools: [UInt8]?, messages: [(role: String, content: [UInt8])], addGenerationPrompt: Bool = true) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(messages.reduce(64 + (tools?.count ?? 0)) { $0 + $1.content.count + 32 })
        if let tools {
            Self.append("<|im_start|>system\n# Tools\n", to: &out)
            out.append(contentsOf: tools)
            out.append(contentsOf: Self.endOfTurn)
        }
        for m in messages {
            Self.append("<|im_start|>", to: &out)
            out.append(contentsOf: m.role.utf8)
            out.append(0x0A)
            out.append(contentsOf: m.content)
            out.append(contentsOf: Self.endOfTurn)
        }
        if addGenerationPrompt { Self.append("<|im_start|>assistant\n", to: &out) }
        return out
    }

    /// What follows a generated answer in the next turn's rendering (so output blocks can be cached).
    public static let endOfTurn = Array("<|im_end|>\n".utf8)

    @inline(__always)
    static func append(_ text: StaticString, to out: inout [UInt8]) {
        out.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }
}

struct EngineBodyParser {
    var reader: JSONReader
    let api: RequestAPI
    let defaultMaxTokens: Int

    mutating func parse() throws -> EngineInput {
        guard try self.reader.peekKind() == .object else { throw EngineInputError("request body must be a JSON object") }
        try self.reader.beginObject()
        var model: String?
        var rendered: [UInt8] = []
        var sawMessages = false
        var messageCount = 0
        var tools: [UInt8]?
        var prompt: [UInt8]?
        var ids: [UInt32]?
        var maxTokens: Int?
        var salt: String?
        var stream = false
        var includeUsage = false
        var rid: String?
        var addGenerationPrompt = true
        var first = true
        while let key = try self.reader.nextKey(first: &first) {
            if try self.reader.readNullIfPresent() { continue }
            let r = self.reader
            if r.key(key, equals: "model") {
                model = try self.string("model")
            } else if r.key(key, equals: "messages"), self.api == .chat {
                rendered.reserveCapacity(self.reader.buffer.count)
                messageCount = try self.messages(into: &rendered)
                sawMessages = true
            } else if r.key(key, equals: "tools"), self.api == .chat {
                var canonical: [UInt8] = []
                try CanonicalJSON.appendValue(&self.reader, to: &canonical)
                tools = canonical
            } else if (r.key(key, equals: "prompt") && self.api == .completions)
                || (r.key(key, equals: "text") && self.api == .generate)
            {
                (prompt, ids) = try self.promptValue()
            } else if r.key(key, equals: "input_ids"), self.api == .generate {
                (prompt, ids) = try self.promptValue()
            } else if r.key(key, equals: "max_tokens") || r.key(key, equals: "max_completion_tokens") {
                maxTokens = try self.count("max_tokens")
            } else if r.key(key, equals: "sampling_params"), self.api == .generate {
                try self.reader.beginObject()
                var f = true
                while let k = try self.reader.nextKey(first: &f) {
                    if self.reader.key(k, equals: "max_new_tokens"), !(try self.reader.readNullIfPresent()) {
                        maxTokens = try self.count("sampling_params.max_new_tokens")
                    } else {
                        try self.reader.skipValue()
                    }
                }
            } else if r.key(key, equals: "cache_salt") {
                salt = try self.string("cache_salt")
            } else if r.key(key, equals: "stream") {
                guard try self.reader.peekKind() == .bool else { throw EngineInputError("'stream' must be a boolean") }
                stream = try self.reader.readBool()
            } else if r.key(key, equals: "stream_options") {
                try self.reader.beginObject()
                var f = true
                while let k = try self.reader.nextKey(first: &f) {
                    if self.reader.key(k, equals: "include_usage"), try self.reader.peekKind() == .bool {
                        includeUsage = try self.reader.readBool()
                    } else {
                        try self.reader.skipValue()
                    }
                }
            } else if r.key(key, equals: "add_generation_prompt"), try self.reader.peekKind() == .bool {
                addGenerationPrompt = try self.reader.readBool()
            } else if r.key(key, equals: "rid") {
                rid = try self.string("rid")
            } else {
                try self.reader.skipValue()
            }
        }
        try self.reader.expectEnd()
        switch self.api {
        case .chat:
            guard sawMessages else { throw EngineInputError("'messages' is required") }
            guard messageCount > 0 else { throw EngineInputError("'messages' must not be empty") }
            if let tools { rendered.insert(contentsOf: ChatTemplate.render(tools: tools, messages: [], addGenerationPrompt: false), at: 0) }
            if addGenerationPrompt { ChatTemplate.append("<|im_start|>assistant\n", to: &rendered) }
        case .responses, .messages:
            throw EngineInputError("not a chat body")
        case .completions, .generate:
            guard prompt != nil || ids != nil else {
                throw EngineInputError(self.api == .completions ? "'prompt' is required" : "'text' or 'input_ids' is required")
            }
            rendered = prompt ?? []
        }
        if let maxTokens, maxTokens < 1 { throw EngineInputError("max_tokens must be at least 1") }
        return EngineInput(
            api: self.api,
            model: model,
            prompt: rendered,
            tokenIDs: ids,
            maxTokens: maxTokens ?? self.defaultMaxTokens,
            salt: salt,
            stream: stream,
            includeUsage: includeUsage,
            requestID: rid
        )
    }

    mutating func string(_ name: String) throws -> String {
        guard try self.reader.peekKind() == .string else { throw EngineInputError("'\(name)' must be a string") }
        return try self.reader.decodeString(try self.reader.readStringSpan())
    }

    mutating func count(_ name: String) throws -> Int {
        guard try self.reader.peekKind() == .number else { throw EngineInputError("'\(name)' must be an integer") }
        let value = try self.reader.readInteger()
        guard value >= 0, value <= 10_000_000 else { throw EngineInputError("'\(name)' out of range") }
        return Int(value)
    }

    mutating func text() throws -> [UInt8] {
        var out: [UInt8] = []
        try self.reader.appendCanonicalString(to: &out, decodeEscapes: true)
        return out
    }

    /// Renders the messages with the template straight into `out`; returns how many there were.
    mutating func messages(into out: inout [UInt8]) throws -> Int {
        guard try self.reader.peekKind() == .array else { throw EngineInputError("'messages' must be an array") }
        try self.reader.beginArray()
        var count = 0
        var first = true
        while try self.reader.nextElement(first: &first) {
            guard try self.reader.peekKind() == .object else { throw EngineInputError("each message must be an object") }
            try self.reader.beginObject()
            var role: String?
            var content: [UInt8] = []
            var contentStart: Int?
            var headerWritten = false
            ChatTemplate.append("<|im_start|>", to: &out)
            var f = true
            while let key = try self.reader.nextKey(first: &f) {
                if self.reader.key(key, equals: "role") {
                    role = try self.string("role")
                    if contentStart == nil, let role {
                        out.append(contentsOf: role.utf8)
                        out.append(0x0A)
                        headerWritten = true
                    }
                } else if self.reader.key(key, equals: "content") {
                    switch try self.reader.peekKind() {
                    case .string:
                        // The usual case: text straight into the prompt (the role goes in front after).
                        contentStart = out.count
                        try self.reader.appendCanonicalString(to: &out, decodeEscapes: true)
                    case .null: _ = try self.reader.readNullIfPresent()
                    case .array:
                        // Text parts joined by newlines; other parts become a placeholder.
                        try self.reader.beginArray()
                        var pf = true
                        var parts: [[UInt8]] = []
                        while try self.reader.nextElement(first: &pf) {
                            let start = self.reader.position
                            var text: [UInt8]?
                            try self.reader.beginObject()
                            var of = true
                            while let k = try self.reader.nextKey(first: &of) {
                                if self.reader.key(k, equals: "text"), try self.reader.peekKind() == .string {
                                    text = try self.text()
                                } else {
                                    try self.reader.skipValue()
                                }
                            }
                            if let text {
                                parts.append(text)
                            } else {
                                var canonical: [UInt8] = []
                                var sub = JSONReader(self.reader.buffer, position: start)
                                try CanonicalJSON.appendValue(&sub, to: &canonical)
                                parts.append(Array("<media:\(XXH3.hash(canonical).hex16)>".utf8))
                            }
                        }
                        content = Array(parts.joined(separator: [0x0A]))
                    default:
                        throw EngineInputError("message content must be a string, an array of parts or null")
                    }
                } else {
                    try self.reader.skipValue()
                }
            }
            guard let role else { throw EngineInputError("each message needs a 'role'") }
            if !headerWritten {
                // Rare: content came before role.
                let header = Array(role.utf8) + [0x0A]
                if let start = contentStart {
                    out.insert(contentsOf: header, at: start)
                } else {
                    out.append(contentsOf: header)
                }
            }
            out.append(contentsOf: content)
            out.append(contentsOf: ChatTemplate.endOfTurn)
            count += 1
        }
        return count
    }

    /// A prompt: text, a list of texts (joined), token ids, or lists of token ids (first list).
    mutating func promptValue() throws -> ([UInt8]?, [UInt32]?) {
        switch try self.reader.peekKind() {
        case .string:
            return (try self.text(), nil)
        case .array:
            try self.reader.beginArray()
            var first = true
            var texts: [[UInt8]] = []
            var ids: [UInt32] = []
            while try self.reader.nextElement(first: &first) {
                switch try self.reader.peekKind() {
                case .string: texts.append(try self.text())
                case .number: ids.append(UInt32(truncatingIfNeeded: try self.reader.readInteger()))
                case .array:
                    try self.reader.beginArray()
                    var f = true
                    while try self.reader.nextElement(first: &f) {
                        ids.append(UInt32(truncatingIfNeeded: try self.reader.readInteger()))
                    }
                default: throw EngineInputError("prompt must hold strings or token ids")
                }
            }
            if !texts.isEmpty { return (Array(texts.joined(separator: [0x0A])), nil) }
            guard !ids.isEmpty else { throw EngineInputError("prompt must not be empty") }
            return (nil, ids)
        default:
            throw EngineInputError("prompt must be a string, a list of strings or token ids")
        }
    }
}
