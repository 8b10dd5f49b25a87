import FastJSON
import XXHash

/// The API a request body belongs to, which decides how its prompt is read.
public enum RequestAPI: String, Sendable, CaseIterable {
    /// OpenAI `POST /v1/chat/completions`.
    case chat
    /// OpenAI `POST /v1/completions`.
    case completions
    /// SGLang native `POST /generate`.
    case generate
    /// OpenAI Responses `POST /v1/responses`.
    case responses
    /// Anthropic Messages `POST /v1/messages` (and `/v1/messages/count_tokens`).
    case messages
}

/// A hash of a prompt prefix and how many canonical bytes it covers.
public struct PrefixKey: Sendable, Hashable {
    public var key: UInt64
    public var bytes: Int

    public init(key: UInt64, bytes: Int) {
        self.key = key
        self.bytes = bytes
    }
}

/// The tier 2 key: which conversation (or caller-declared session) a request belongs to.
public struct SessionKey: Sendable, Hashable {
    public enum Source: Sendable, Hashable, CustomStringConvertible {
        /// An explicit id from this request header.
        case header(String)
        /// An explicit id from this body field (dotted path).
        case body(String)
        /// Implicit: the chain hash through the first user message (chat) or a prefix depth (raw prompts).
        case conversation(bytes: Int)

        public var description: String {
            switch self {
            case .header(let name): "header \(name)"
            case .body(let path): "body field \(path)"
            case .conversation(let bytes): "conversation prefix (\(bytes) bytes)"
            }
        }
    }

    public var key: UInt64
    public var source: Source

    public init(key: UInt64, source: Source) {
        self.key = key
        self.source = source
    }
}

/// Everything the router derives from one request body, without a tokenizer.
///
/// Hashes only: prompt text never leaves key extraction (it is not stored here, logged or labelled),
/// except `leadingText`, the first bytes of the first text, kept for pinned-group prefix rules.
public struct RequestKeys: Sendable {
    public var api: RequestAPI
    /// The requested model, if the body names one (`/generate` bodies usually do not).
    public var model: String?
    /// XXH3 of model + `cache_salt` (+ template options): requests in different scopes never share a key.
    public var scope: UInt64
    /// Chain hashes of the full `blockBytes` blocks of the canonical prompt: `chain[i]` covers blocks 0...i.
    public var chain: [UInt64]
    /// Length of the canonical prompt in bytes.
    public var promptBytes: Int
    /// Tier 1 key: the chain hash at the end of the shared-instruction segment, when long enough.
    public var instruction: PrefixKey?
    /// Length of the shared-instruction segment even when too short to key (for explain).
    public var instructionBytes: Int
    /// Tier 2 key.
    public var session: SessionKey?
    /// Whether the client asked for a streamed answer.
    public var stream: Bool
    /// The first canonical bytes of the first text in the prompt (at most 256), for pinned prefix rules.
    public var leadingText: [UInt8]
    /// XXH3 of the request's `cache_salt`, when it has one (a tenant identity for the queue).
    public var saltHash: UInt64?
    /// Responses: the stored response this request needs (its `previous_response_id`, or the id
    /// in a `GET`/`DELETE`/`cancel` path): only the replica holding it can serve the request.
    public var storedResponse: String?
    /// Responses: the client named its own `request_id` (the router then leaves it alone).
    public var namesRequestID: Bool
    /// The body carries a `cache_salt` of its own (whether or not the router's replaced it).
    public var clientSalt = false
    /// The client named its prefix group (`prompt_cache_key`).
    public var namesCacheKey = false
    /// The canonical instruction bytes (tools and system; raw prompts: up to the configured depth,
    /// else 8 KiB), only when `KeyingRules.captureInstruction` asked for them: the prefix
    /// diagnostics read them once and drop them.
    public var instructionText: [UInt8]?

    public init(
        api: RequestAPI,
        model: String?,
        scope: UInt64,
        chain: [UInt64],
        promptBytes: Int,
        instruction: PrefixKey?,
        instructionBytes: Int,
        session: SessionKey?,
        stream: Bool,
        leadingText: [UInt8],
        saltHash: UInt64? = nil,
        storedResponse: String? = nil,
        namesRequestID: Bool = false
    ) {
        self.saltHash = saltHash
        self.storedResponse = storedResponse
        self.namesRequestID = namesRequestID
        self.api = api
        self.model = model
        self.scope = scope
        self.chain = chain
        self.promptBytes = promptBytes
        self.instruction = instruction
        self.instructionBytes = instructionBytes
        self.session = session
        self.stream = stream
        self.leadingText = leadingText
    }

    /// The keys of a request about a stored response alone (`GET`, `DELETE`, `cancel` of
    /// `/v1/responses/{id}`): no prompt, only the response it needs.
    public static func storedResponse(_ id: String) -> RequestKeys {
        RequestKeys(
            api: .responses, model: nil, scope: 0, chain: [], promptBytes: 0, instruction: nil, instructionBytes: 0, session: nil, stream: false,
            leadingText: [], storedResponse: id)
    }

    /// Estimated prompt tokens (canonical bytes / bytes per token, rounded up).
    public func promptTokens(bytesPerToken: Int) -> Int {
        (self.promptBytes + bytesPerToken - 1) / max(1, bytesPerToken)
    }
}

/// Why a body could not be keyed. The request is still forwarded (fallback routing), so the
/// replica answers with its own error.
public struct KeyError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case malformedJSON = "malformed_json"
        case invalidField = "invalid_field"
        case emptyPrompt = "empty_prompt"
        case tooLarge = "too_large"
        case invalidText = "invalid_text"
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { self.message }
}

extension RequestAPI {
    /// The API a request path belongs to (`/v1/chat/completions`, `/v1/completions`, `/generate`).
    public init?(path: String) {
        var path = String(path.prefix { $0 != "?" })
        guard let api = path.withUTF8({ RequestAPI(pathBytes: UnsafeRawBufferPointer($0)) }) else { return nil }
        self = api
    }

    /// Guesses the API from a body's top-level fields (`messages`, `prompt`, `text`/`input_ids`).
    public static func detect(body: [UInt8]) -> RequestAPI? {
        body.withUnsafeBytes { raw in
            guard raw.count > 0 else { return nil }
            var reader = FastJSON.JSONReader(raw)
            do {
                guard try reader.peekKind() == .object else { return nil }
                try reader.beginObject()
                var first = true
                var sawMessages = false
                while let key = try reader.nextKey(first: &first) {
                    if reader.key(key, equals: "messages") { sawMessages = true }
                    // Anthropic bodies have messages and a required max_tokens, often a system field.
                    if reader.key(key, equals: "system") || reader.key(key, equals: "anthropic_version") { return .messages }
                    if reader.key(key, equals: "input") || reader.key(key, equals: "instructions") { return .responses }
                    if reader.key(key, equals: "prompt") { return .completions }
                    if reader.key(key, equals: "text") || reader.key(key, equals: "input_ids") { return .generate }
                    try reader.skipValue()
                }
                if sawMessages { return .chat }
            } catch {
                return nil
            }
            return nil
        }
    }

    /// The request path of this API.
    public var path: String {
        switch self {
        case .chat: "/v1/chat/completions"
        case .completions: "/v1/completions"
        case .generate: "/generate"
        case .responses: "/v1/responses"
        case .messages: "/v1/messages"
        }
    }
}
