/// How request keys are derived: block size, the instruction and session rules, limits.
public struct KeyingRules: Sendable, Equatable {
    /// Size of a block of the canonical prompt, in bytes (the unit of the block chain and the prefix index).
    public var blockBytes: Int
    /// Bytes per token, for turning canonical bytes into token estimates.
    public var bytesPerToken: Int
    /// A shared-instruction segment shorter than this gets no instruction key (session affinity suffices).
    public var instructionMinBytes: Int
    /// For raw prompts (completions, `/generate`): the prefix depth that acts as the instruction segment (0: none).
    public var rawInstructionBytes: Int
    /// For raw prompts without an explicit id: the prefix depth that identifies a conversation.
    public var rawSessionBytes: Int
    /// Request headers that carry an explicit session id, in priority order (lower-case).
    public var sessionHeaders: [String]
    /// Body fields that carry an explicit session id, in priority order; dotted paths reach into objects.
    public var sessionBodyFields: [String] {
        didSet { self.sessionPaths = Self.paths(self.sessionBodyFields) }
    }
    /// `sessionBodyFields` split into path components, as bytes (computed once, not per request).
    public private(set) var sessionPaths: [[[UInt8]]] = []

    static func paths(_ fields: [String]) -> [[[UInt8]]] {
        fields.map { $0.split(separator: ".").map { Array($0.utf8) } }
    }
    /// Bodies larger than this are not keyed (fallback routing), bounding the work per request.
    public var maxKeyBytes: Int
    /// The `cache_salt` the router sets for the request's tenant (`tenants.cache_salt`), which
    /// replaces the body's in the keys, as it does at the replica; nil: the body's own.
    public var salt: [UInt8]? = nil
    /// Keep the canonical instruction bytes in `RequestKeys.instructionText` (a request the
    /// prefix diagnostics sample; never by default: prompt text does not outlive key extraction).
    public var captureInstruction = false

    public init(
        blockBytes: Int = 1024,
        bytesPerToken: Int = 4,
        instructionMinBytes: Int = 2048,
        rawInstructionBytes: Int = 0,
        rawSessionBytes: Int = 4096,
        sessionHeaders: [String] = KeyingRules.defaultSessionHeaders,
        sessionBodyFields: [String] = KeyingRules.defaultSessionBodyFields,
        maxKeyBytes: Int = 8 << 20
    ) {
        self.blockBytes = blockBytes
        self.bytesPerToken = bytesPerToken
        self.instructionMinBytes = instructionMinBytes
        self.rawInstructionBytes = rawInstructionBytes
        self.rawSessionBytes = rawSessionBytes
        self.sessionHeaders = sessionHeaders.map { $0.lowercased() }
        self.sessionBodyFields = sessionBodyFields
        self.sessionPaths = Self.paths(sessionBodyFields)
        self.maxKeyBytes = maxKeyBytes
    }

    /// Session headers used across the ecosystem (vLLM router, llm-d, SGLang gateway, Dynamo).
    public static let defaultSessionHeaders = [
        "x-session-id", "x-session-token", "x-smg-routing-key", "x-dynamo-session-id",
    ]
    /// `session_id`, and SGLang's `session_params.id` (which must reach the engine holding the session).
    public static let defaultSessionBodyFields = ["session_id", "session_params.id"]

    /// The first configured session header present in a request, via a case-insensitive lookup.
    public func sessionHeader(in lookup: (String) -> String?) -> (name: String, value: String)? {
        for name in self.sessionHeaders {
            if let value = lookup(name), !value.isEmpty { return (name, value) }
        }
        return nil
    }
}
