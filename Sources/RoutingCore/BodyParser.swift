import FastJSON
import XXHash

/// One pass over a request body, building the canonical prompt in pieces.
struct BodyParser {
    var reader: JSONReader
    let api: RequestAPI
    let rules: KeyingRules

    /// Tools, functions, documents (they precede the messages in every template).
    var head: [UInt8] = []
    /// Instructions given apart from the messages (Responses `instructions`, Messages `system`):
    /// a system-message record that follows the head and precedes the messages.
    var preamble: [UInt8] = []
    /// Where the client's last cache breakpoint (Anthropic `cache_control`) inside the tools or
    /// the system ends: in the head, or in the preamble.
    var breakpointInHead: Int?
    var breakpointInPreamble: Int?
    /// `prompt_cache_key`.
    var promptCacheKey: [UInt8]?
    /// Responses: the response this one continues, the conversation it belongs to, and whether
    /// the client named its own `request_id`.
    var previousResponseID: String?
    var conversationID: [UInt8]?
    var hasRequestID = false
    /// Messages or prompts.
    var main: [UInt8] = []
    /// Generation options that change only the end of the rendered prompt.
    var tail: [UInt8] = []

    var model: String?
    /// XXH3 of the canonical `cache_salt`, when the body has one.
    var saltHash: UInt64?
    /// The body has a `cache_salt` of its own.
    var clientSalt = false
    var scopeParts: [(tag: UInt8, bytes: [UInt8])] = []
    var stream = false
    var sawPrompt = false
    /// End of the leading system/developer messages inside `main`.
    var instructionEndInMain = 0
    var leadingInstructions = true
    /// End of the first user message inside `main`.
    var firstUserEndInMain: Int?
    var leadingText: [UInt8] = []
    /// Explicit session ids found in the body, by index into `rules.sessionBodyFields`.
    var bodySession: (index: Int, value: [UInt8])?
    /// The configured body fields split into path components, as bytes.
    let sessionPaths: [[[UInt8]]]

    init(reader: JSONReader, api: RequestAPI, rules: KeyingRules) {
        self.reader = reader
        self.api = api
        self.rules = rules
        self.sessionPaths = rules.sessionPaths
        self.main.reserveCapacity(reader.buffer.count + 64)
        if let salt = rules.salt {
            self.saltHash = XXH3.hash(salt)
            self.scopeParts.append((UInt8(ascii: "s"), salt))
        }
    }

    func invalid(_ message: String) -> KeyError {
        KeyError(.invalidField, message)
    }

    mutating func parse() throws {
        guard try self.reader.peekKind() == .object else { throw self.invalid("request body must be a JSON object") }
        try self.reader.beginObject()
        var first = true
        while let key = try self.reader.nextKey(first: &first) {
            try self.member(key)
        }
        try self.reader.expectEnd()
        guard self.sawPrompt || (self.api == .responses && self.previousResponseID != nil) else {
            switch self.api {
            case .chat, .messages: throw self.invalid("missing field 'messages'")
            case .completions: throw self.invalid("missing field 'prompt'")
            case .generate: throw self.invalid("missing field 'text' or 'input_ids'")
            case .responses: throw self.invalid("missing field 'input'")
            }
        }
        if !self.preamble.isEmpty {
            // Instructions given apart come after the tools and before the messages.
            if let b = self.breakpointInPreamble { self.breakpointInHead = self.head.count + b }
            self.head.append(contentsOf: self.preamble)
        }
    }

    mutating func member(_ key: JSONStringSpan) throws {
        let r = self.reader
        if r.key(key, equals: "model") {
            guard try self.reader.peekKind() == .string else { throw self.invalid("'model' must be a string") }
            self.model = try self.reader.decodeString(try self.reader.readStringSpan())
        } else if r.key(key, equals: "stream") {
            if try self.reader.readNullIfPresent() { return }
            guard try self.reader.peekKind() == .bool else { throw self.invalid("'stream' must be a boolean") }
            self.stream = try self.reader.readBool()
        } else if r.key(key, equals: "cache_salt") {
            if try self.reader.readNullIfPresent() { return }
            guard try self.reader.peekKind() == .string else { throw self.invalid("'cache_salt' must be a string") }
            var salt: [UInt8] = []
            try self.reader.appendCanonicalString(to: &salt)
            self.clientSalt = true
            guard self.rules.salt == nil else { return }
            // A repeated key: the last one counts, as in the replicas' JSON parsers.
            self.saltHash = XXH3.hash(salt)
            self.scopeParts.removeAll { $0.tag == UInt8(ascii: "s") }
            self.scopeParts.append((UInt8(ascii: "s"), salt))
        } else if self.api == .chat, r.key(key, equals: "messages") {
            try self.messages()
        } else if self.api == .chat, r.key(key, equals: "tools") {
            try self.headJSON(Tag.tools)
        } else if self.api == .chat, r.key(key, equals: "functions") {
            try self.headJSON(Tag.functions)
        } else if self.api == .chat, r.key(key, equals: "documents") {
            try self.headJSON(Tag.documents)
        } else if self.api == .chat, r.key(key, equals: "chat_template") {
            try self.scopeJSON(UInt8(ascii: "t"))
        } else if self.api == .chat, r.key(key, equals: "chat_template_kwargs") {
            try self.scopeJSON(UInt8(ascii: "k"))
        } else if self.api == .chat, r.key(key, equals: "add_generation_prompt") {
            try self.optionFlag("add_generation_prompt", nonDefault: false)
        } else if self.api == .chat, r.key(key, equals: "continue_final_message") {
            try self.optionFlag("continue_final_message", nonDefault: true)
        } else if self.api == .messages, r.key(key, equals: "messages") {
            try self.anthropicMessages()
        } else if self.api == .messages, r.key(key, equals: "system") {
            try self.anthropicSystem()
        } else if self.api == .messages, r.key(key, equals: "tools") {
            try self.anthropicTools()
        } else if self.api == .responses, r.key(key, equals: "input") {
            try self.responsesInput()
        } else if self.api == .responses, r.key(key, equals: "instructions") {
            try self.responsesInstructions()
        } else if self.api == .responses, r.key(key, equals: "tools") {
            try self.headJSON(Tag.tools)
        } else if self.api == .responses, r.key(key, equals: "previous_response_id") {
            self.previousResponseID = try self.stringField("previous_response_id")
        } else if self.api == .responses, r.key(key, equals: "request_id") {
            self.hasRequestID = try self.stringField("request_id") != nil
        } else if self.api == .responses, r.key(key, equals: "conversation") {
            try self.responsesConversation()
        } else if self.api != .generate, self.api != .messages, r.key(key, equals: "prompt_cache_key") {
            try self.readPromptCacheKey()
        } else if self.api == .completions, r.key(key, equals: "prompt") {
            try self.prompts("prompt")
        } else if self.api == .completions, r.key(key, equals: "suffix") {
            if try self.reader.readNullIfPresent() { return }
            guard try self.reader.peekKind() == .string else { throw self.invalid("'suffix' must be a string") }
            self.tail.append(KeyExtractor.Tag.suffix)
            try self.reader.appendCanonicalString(to: &self.tail)
        } else if self.api == .generate, r.key(key, equals: "text") {
            try self.prompts("text")
        } else if self.api == .generate, r.key(key, equals: "input_ids") {
            try self.prompts("input_ids")
        } else if self.api == .generate, r.key(key, equals: "lora_path") {
            try self.scopeJSON(UInt8(ascii: "l"))
        } else if let index = self.sessionPathIndex(first: key) {
            try self.sessionField(pathIndex: index, depth: 1)
        } else {
            try self.reader.skipValue()
        }
    }

    typealias Tag = KeyExtractor.Tag
    static let textType = Array("text".utf8)
    static let inputText = Array("input_text".utf8)
    static let outputText = Array("output_text".utf8)
    static let system = Array("system".utf8)
    static let developer = Array("developer".utf8)
    static let user = Array("user".utf8)

    // MARK: - Scope, head, options

    mutating func scopeJSON(_ tag: UInt8) throws {
        if try self.reader.readNullIfPresent() { return }
        var bytes: [UInt8] = []
        try CanonicalJSON.appendValue(&self.reader, to: &bytes)
        self.scopeParts.append((tag, bytes))
    }

    mutating func headJSON(_ tag: UInt8) throws {
        if try self.reader.readNullIfPresent() { return }
        self.head.append(tag)
        try CanonicalJSON.appendValue(&self.reader, to: &self.head)
    }

    mutating func optionFlag(_ name: String, nonDefault: Bool) throws {
        if try self.reader.readNullIfPresent() { return }
        guard try self.reader.peekKind() == .bool else { throw self.invalid("'\(name)' must be a boolean") }
        if try self.reader.readBool() == nonDefault {
            self.tail.append(Tag.options)
            self.tail.append(contentsOf: name.utf8)
        }
    }

    // MARK: - Explicit session ids in the body

    func sessionPathIndex(first key: JSONStringSpan) -> Int? {
        for (index, path) in self.sessionPaths.enumerated() where self.reader.span(key, equals: path[0]) {
            if let found = self.bodySession, found.index <= index { return nil }
            return index
        }
        return nil
    }

    /// Reads the value at `sessionPaths[pathIndex][depth...]`; skips anything that does not match.
    mutating func sessionField(pathIndex: Int, depth: Int) throws {
        let path = self.sessionPaths[pathIndex]
        if depth == path.count {
            switch try self.reader.peekKind() {
            case .string:
                var value: [UInt8] = []
                try self.reader.appendCanonicalString(to: &value)
                if !value.isEmpty { self.bodySession = (pathIndex, value) }
            case .number:
                let range = try self.reader.readNumberSpan()
                self.bodySession = (pathIndex, Array(UnsafeRawBufferPointer(rebasing: self.reader.buffer[range])))
            default:
                try self.reader.skipValue()
            }
            return
        }
        guard try self.reader.peekKind() == .object else {
            try self.reader.skipValue()
            return
        }
        try self.reader.beginObject()
        var first = true
        while let key = try self.reader.nextKey(first: &first) {
            if self.reader.span(key, equals: path[depth]) {
                try self.sessionField(pathIndex: pathIndex, depth: depth + 1)
            } else {
                try self.reader.skipValue()
            }
        }
    }

    // MARK: - Chat messages

    mutating func messages() throws {
        guard try self.reader.peekKind() == .array else { throw self.invalid("'messages' must be an array") }
        if self.sawPrompt { throw self.invalid("'messages' given twice") }
        self.sawPrompt = true
        try self.reader.beginArray()
        var first = true
        var index = 0
        while try self.reader.nextElement(first: &first) {
            try self.message(index)
            index += 1
        }
        guard index > 0 else { throw KeyError(.emptyPrompt, "'messages' is empty") }
    }

    /// One message: `dropping` names fields that are not content (a Responses item's type, id
    /// and status), `label` the list it is in (for errors). `item`: a Responses input item, which
    /// need not be a message: without a role it is written as its type and canonical JSON.
    mutating func message(_ index: Int, dropping: [StaticString] = [], label: String = "messages", item: Bool = false) throws {
        guard try self.reader.peekKind() == .object else { throw self.invalid("\(label)[\(index)] must be an object") }
        let recordStart = self.main.count
        let itemStart = self.reader.position
        let leadingText = self.leadingText
        var type: JSONStringSpan?
        self.main.append(Tag.message)
        // Where the role's canonical bytes are in `main` (written in place: no array per message).
        var role: Range<Int>?
        var sawContent = false
        var extras: [(key: [UInt8], order: Int, valueAt: Int)] = []
        try self.reader.beginObject()
        var first = true
        while let key = try self.reader.nextKey(first: &first) {
            if self.reader.key(key, equals: "role") {
                guard try self.reader.peekKind() == .string else {
                    throw self.invalid("\(label)[\(index)].role must be a string")
                }
                if sawContent {
                    // Rare: content came first. Keep the record order role, content.
                    var bytes: [UInt8] = []
                    try self.reader.appendCanonicalString(to: &bytes)
                    self.main.insert(contentsOf: bytes, at: recordStart + 1)
                    role = (recordStart + 1)..<(recordStart + 1 + bytes.count)
                } else {
                    let start = self.main.count
                    try self.reader.appendCanonicalString(to: &self.main)
                    role = start..<self.main.count
                }
            } else if self.reader.key(key, equals: "content") {
                guard !sawContent else { throw self.invalid("\(label)[\(index)].content given twice") }
                sawContent = true
                try self.content(index)
            } else if !dropping.isEmpty, dropping.contains(where: { self.reader.key(key, equals: $0) }) {
                if item, self.reader.key(key, equals: "type"), try self.reader.peekKind() == .string {
                    type = try self.reader.readStringSpan()
                } else {
                    try self.reader.skipValue()
                }
            } else {
                var name: [UInt8] = []
                try CanonicalString.append(key, of: self.reader.buffer, to: &name)
                self.reader.skipWhitespace()
                extras.append((name, extras.count, self.reader.position))
                try self.reader.skipValue()
            }
        }
        guard let role else {
            guard item else { throw self.invalid("\(label)[\(index)].role is missing") }
            // Not a message (a function call or its output, reasoning...): its type, then its
            // canonical JSON, in place of what was written.
            self.main.removeSubrange(recordStart...)
            self.leadingText = leadingText
            self.main.append(Tag.message)
            if let type { try CanonicalString.append(type, of: self.reader.buffer, to: &self.main) }
            self.main.append(Tag.extras)
            var whole = JSONReader(self.reader.buffer, position: itemStart)
            try CanonicalJSON.appendValue(&whole, to: &self.main)
            self.leadingInstructions = false
            return
        }
        if !sawContent { self.main.append(Tag.nullContent) }
        if !extras.isEmpty {
            self.main.append(Tag.extras)
            extras.sort { $0.key == $1.key ? $0.order < $1.order : $0.key.lexicographicallyPrecedes($1.key) }
            for (n, member) in extras.enumerated() {
                if n + 1 < extras.count, extras[n + 1].key == member.key { continue }
                self.main.append(UInt8(ascii: "\""))
                self.main.append(contentsOf: member.key)
                self.main.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
                var sub = JSONReader(self.reader.buffer, position: member.valueAt)
                try CanonicalJSON.appendValue(&sub, to: &self.main)
                self.main.append(UInt8(ascii: ","))
            }
        }
        self.endMessage(role: role)
    }

    /// A message record ended at the end of `main`; `role` is where its role is in `main`:
    /// leading system and developer messages are the instructions, the first user message ends
    /// the conversation's identity.
    mutating func endMessage(role: Range<Int>) {
        let roleBytes = self.main[role]
        let isInstruction = roleBytes.elementsEqual(Self.system) || roleBytes.elementsEqual(Self.developer)
        if self.leadingInstructions {
            if isInstruction {
                self.instructionEndInMain = self.main.count
            } else {
                self.leadingInstructions = false
            }
        }
        if self.firstUserEndInMain == nil, roleBytes.elementsEqual(Self.user) {
            self.firstUserEndInMain = self.main.count
        }
    }

    mutating func content(_ index: Int) throws {
        switch try self.reader.peekKind() {
        case .null:
            _ = try self.reader.readNullIfPresent()
            self.main.append(Tag.nullContent)
        case .string:
            self.main.append(Tag.content)
            let start = self.main.count
            try self.reader.appendCanonicalString(to: &self.main)
            self.noteLeadingText(from: start)
        case .array:
            try self.reader.beginArray()
            var first = true
            var inText = false
            var part = 0
            while try self.reader.nextElement(first: &first) {
                try self.contentPart(index, part, inText: &inText)
                part += 1
            }
            if part == 0 { self.main.append(Tag.content) }
        default:
            throw self.invalid("messages[\(index)].content must be a string, an array of parts or null")
        }
    }

    /// One content part: text parts run together (joined by a newline, as vLLM renders them for
    /// string templates); any other part contributes the hash of its canonical JSON.
    mutating func contentPart(_ index: Int, _ part: Int, inText: inout Bool) throws {
        guard try self.reader.peekKind() == .object else {
            throw self.invalid("messages[\(index)].content[\(part)] must be an object")
        }
        let partStart = self.reader.position
        try self.reader.beginObject()
        var first = true
        var isText = false
        var text: JSONStringSpan?
        var written = false
        let rollback = self.main.count
        while let key = try self.reader.nextKey(first: &first) {
            if self.reader.key(key, equals: "type") {
                if try self.reader.peekKind() == .string {
                    let type = try self.reader.readStringSpan()
                    // Chat and Messages say "text", Responses "input_text" and "output_text".
                    isText = self.reader.span(type, equals: Self.textType) || self.reader.span(type, equals: Self.inputText)
                        || self.reader.span(type, equals: Self.outputText)
                } else {
                    try self.reader.skipValue()
                }
            } else if self.reader.key(key, equals: "text"), try self.reader.peekKind() == .string {
                if isText, !written {
                    // The usual order (type first): canonicalize straight into the prompt.
                    self.openText(&inText)
                    let start = self.main.count
                    try self.reader.appendCanonicalString(to: &self.main)
                    self.noteLeadingText(from: start)
                    written = true
                } else {
                    text = try self.reader.readStringSpan()
                }
            } else {
                try self.reader.skipValue()
            }
        }
        if written, !isText {
            // "type" came twice and changed its mind: undo and treat the part as non-text.
            self.main.removeSubrange(rollback...)
            written = false
        }
        if written {
            inText = true
        } else if isText, let text {
            self.openText(&inText)
            let start = self.main.count
            try CanonicalString.append(text, of: self.reader.buffer, to: &self.main)
            self.noteLeadingText(from: start)
            inText = true
        } else {
            var canonical: [UInt8] = []
            var sub = JSONReader(self.reader.buffer, position: partStart)
            // An Anthropic block's cache_control is the client's breakpoint, not content.
            try CanonicalJSON.appendValue(&sub, to: &canonical, dropping: Self.cacheControl)
            self.main.append(Tag.part)
            self.main.append(contentsOf: XXH3.hash(canonical).hex16.utf8)
            inText = false
        }
    }

    /// Starts a text run, or continues the previous text part with a newline.
    mutating func openText(_ inText: inout Bool) {
        if inText {
            self.main.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
        } else {
            self.main.append(Tag.content)
        }
    }

    mutating func noteLeadingText(from start: Int) {
        guard self.leadingText.isEmpty else { return }
        self.leadingText = Array(self.main[start..<min(self.main.count, start + 256)])
    }

    // MARK: - Raw prompts

    /// A prompt field of completions or `/generate`: text, a list of texts, token ids, or lists of token ids.
    mutating func prompts(_ field: String) throws {
        if self.sawPrompt { throw self.invalid("more than one prompt field ('prompt', 'text', 'input_ids')") }
        self.sawPrompt = true
        switch try self.reader.peekKind() {
        case .string:
            try self.promptText(field)
        case .array:
            try self.reader.beginArray()
            var first = true
            var count = 0
            var tokensOpen = false
            while try self.reader.nextElement(first: &first) {
                switch try self.reader.peekKind() {
                case .string:
                    guard !tokensOpen else { throw self.invalid("'\(field)' mixes text and token ids") }
                    try self.promptText(field)
                case .number:
                    if !tokensOpen {
                        guard count == 0 else { throw self.invalid("'\(field)' mixes text and token ids") }
                        self.main.append(Tag.tokens)
                        tokensOpen = true
                    }
                    try self.token(field)
                case .array:
                    guard !tokensOpen else { throw self.invalid("'\(field)' mixes token ids and lists") }
                    try self.tokenList(field)
                default:
                    throw self.invalid("'\(field)' must hold strings or token ids")
                }
                count += 1
            }
            guard count > 0 else { throw KeyError(.emptyPrompt, "'\(field)' is empty") }
        default:
            throw self.invalid("'\(field)' must be a string, an array of strings or token ids")
        }
    }

    mutating func promptText(_ field: String) throws {
        self.main.append(Tag.prompt)
        let start = self.main.count
        try self.reader.appendCanonicalString(to: &self.main)
        guard self.main.count > start else { throw KeyError(.emptyPrompt, "'\(field)' is an empty string") }
        self.noteLeadingText(from: start)
    }

    mutating func tokenList(_ field: String) throws {
        try self.reader.beginArray()
        self.main.append(Tag.tokens)
        var first = true
        var count = 0
        while try self.reader.nextElement(first: &first) {
            guard try self.reader.peekKind() == .number else { throw self.invalid("'\(field)' token ids must be integers") }
            try self.token(field)
            count += 1
        }
        guard count > 0 else { throw KeyError(.emptyPrompt, "'\(field)' holds an empty list of token ids") }
    }

    /// A token id as decimal text with a terminating comma, so `[3]` and `[34]` never share a block.
    mutating func token(_ field: String) throws {
        let value = try self.reader.readInteger()
        guard value >= 0, value <= UInt32.max else { throw self.invalid("'\(field)' token id \(value) out of range") }
        self.main.append(contentsOf: String(value).utf8)
        self.main.append(UInt8(ascii: ","))
    }

    // MARK: - Keys

    func finish(sessionHeader: (name: String, value: String)?) -> RequestKeys {
        let scope = self.scopeHash()
        let pieces = PromptPieces(head: self.head, main: self.main, tail: self.tail)
        let chain = pieces.chain(blockBytes: self.rules.blockBytes, seed: scope)
        let total = pieces.count

        var instructionBytes = 0
        switch self.api {
        case .chat, .responses:
            instructionBytes = self.head.count + self.instructionEndInMain
        case .messages:
            // The client's last breakpoint inside the tools and system, else all of them.
            instructionBytes = self.breakpointInHead ?? (self.head.count + self.instructionEndInMain)
        case .completions, .generate:
            if self.rules.rawInstructionBytes > 0 { instructionBytes = min(self.rules.rawInstructionBytes, total) }
        }
        var instruction: PrefixKey?
        if let key = self.promptCacheKey {
            // The client names the prefix group itself.
            instruction = PrefixKey(key: XXH3.hash(key, seed: scope ^ Self.promptCacheKeySeed), bytes: min(instructionBytes, total))
        } else if instructionBytes > 0, instructionBytes >= self.rules.instructionMinBytes {
            instruction = PrefixKey(
                key: pieces.prefixHash(at: instructionBytes, chain: chain, blockBytes: self.rules.blockBytes, seed: scope),
                bytes: instructionBytes
            )
        }

        let session: SessionKey
        if let header = sessionHeader {
            session = SessionKey(
                key: XXH3.hash(header.value, seed: KeyExtractor.sessionSeed(scope: scope)),
                source: .header(header.name)
            )
        } else if let found = self.bodySession {
            session = SessionKey(
                key: XXH3.hash(found.value, seed: KeyExtractor.sessionSeed(scope: scope)),
                source: .body(self.rules.sessionBodyFields[found.index])
            )
        } else if let conversation = self.conversationID {
            session = SessionKey(key: XXH3.hash(conversation, seed: KeyExtractor.sessionSeed(scope: scope)), source: .body("conversation"))
        } else if let previous = self.previousResponseID {
            // (A response id the router made pins the request to its replica before sessions count.)
            session = SessionKey(key: XXH3.hash(previous, seed: KeyExtractor.sessionSeed(scope: scope)), source: .body("previous_response_id"))
        } else {
            let depth: Int
            switch self.api {
            case .chat, .responses, .messages: depth = self.firstUserEndInMain.map { self.head.count + $0 } ?? total
            case .completions, .generate: depth = min(max(1, self.rules.rawSessionBytes), total)
            }
            session = SessionKey(
                key: pieces.prefixHash(at: depth, chain: chain, blockBytes: self.rules.blockBytes, seed: scope),
                source: .conversation(bytes: depth)
            )
        }

        var keys = RequestKeys(
            api: self.api,
            model: self.model,
            scope: scope,
            chain: chain,
            promptBytes: total,
            instruction: instruction,
            instructionBytes: instructionBytes,
            session: session,
            stream: self.stream,
            leadingText: self.leadingText,
            saltHash: self.saltHash,
            storedResponse: self.previousResponseID,
            namesRequestID: self.hasRequestID
        )
        keys.clientSalt = self.clientSalt
        keys.namesCacheKey = self.promptCacheKey != nil
        defer {
            // The canonical prompt was hashed: it goes, zeroed.
            self.head.scrub()
            self.main.scrub()
            self.tail.scrub()
        }
        if self.rules.captureInstruction {
            let depth = instructionBytes > 0 ? instructionBytes : (self.api == .completions || self.api == .generate ? min(total, 8192) : 0)
            var text: [UInt8] = []
            text.reserveCapacity(depth)
            for piece in [self.head, self.main, self.tail] where text.count < depth { text += piece.prefix(depth - text.count) }
            keys.instructionText = text
        }
        return keys
    }

    /// Seeds the hash of a `prompt_cache_key` apart from the chain's.
    static let promptCacheKeySeed: UInt64 = 0x7072_6F6D_7074_636B

    /// Model, salt and template options, each tagged and terminated, in a fixed order.
    func scopeHash() -> UInt64 {
        let parts = self.scopeParts.count > 1 ? self.scopeParts.sorted(by: { $0.tag < $1.tag }) : self.scopeParts
        let size = Self.scopeTag.count + 2 + (self.model?.utf8.count ?? 0) + 1 + parts.reduce(0) { $0 + $1.bytes.count + 2 }
        // Staged in a temporary buffer (on the stack when small): one hash, no array per request.
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: size) { out in
            var n = 0
            func put(_ byte: UInt8) {
                out[n] = byte
                n += 1
            }
            for byte in Self.scopeTag { put(byte) }
            put(0)
            put(UInt8(ascii: "m"))
            if let model { for byte in model.utf8 { put(byte) } }
            put(0)
            for part in parts {
                put(part.tag)
                for byte in part.bytes { put(byte) }
                put(0)
            }
            return XXH3.hash(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: out[0..<n])))
        }
    }

    static let scopeTag: [UInt8] = Array("cacheroute.scope.v1".utf8)
}
