import FastJSON
import XXHash

/// The OpenAI Responses and Anthropic Messages bodies, read into the same canonical prompt as a
/// chat body with the same content: instructions (`instructions`, `system`) become a system
/// message, `input` items and `messages` become messages with their text parts, other parts and
/// items the hash or canonical JSON of what they are. The same conversation sent through chat,
/// Responses or Messages then has the same block chain and goes to the same replica, whose engine
/// renders all three through the same chat template.
extension BodyParser {
    static let cacheControl = Array("cache_control".utf8)
    static let assistant = Array("assistant".utf8)
    /// Claude Code's attribution block, with a hash that changes every request: vLLM drops it
    /// from the prompt (so it never defeats the cache), and so do the keys.
    static let billingHeader = Array("x-anthropic-billing-header".utf8)

    // MARK: - Shared

    /// Writes a system-message record of `text` pieces into the preamble (joined as vLLM joins
    /// Anthropic system blocks: with nothing between them).
    mutating func preambleSystemStart() {
        self.preamble.append(Tag.message)
        self.preamble.append(contentsOf: Self.system)
        self.preamble.append(Tag.content)
    }

    /// `prompt_cache_key`: requests that share it share a group.
    mutating func readPromptCacheKey() throws {
        if try self.reader.readNullIfPresent() { return }
        guard try self.reader.peekKind() == .string else { throw self.invalid("'prompt_cache_key' must be a string") }
        var key: [UInt8] = []
        try self.reader.appendCanonicalString(to: &key)
        if !key.isEmpty { self.promptCacheKey = key }
    }

    /// A string field kept as text (ids).
    mutating func stringField(_ name: String) throws -> String? {
        if try self.reader.readNullIfPresent() { return nil }
        guard try self.reader.peekKind() == .string else { throw self.invalid("'\(name)' must be a string") }
        return try self.reader.decodeString(try self.reader.readStringSpan())
    }

    // MARK: - Responses

    /// `instructions`: the system message vLLM renders first.
    mutating func responsesInstructions() throws {
        if try self.reader.readNullIfPresent() { return }
        guard try self.reader.peekKind() == .string else { throw self.invalid("'instructions' must be a string") }
        self.preambleSystemStart()
        let start = self.preamble.count
        try self.reader.appendCanonicalString(to: &self.preamble)
        if self.leadingText.isEmpty { self.leadingText = Array(self.preamble[start..<min(self.preamble.count, start + 256)]) }
    }

    /// `input`: a string (one user message) or a list of items.
    mutating func responsesInput() throws {
        if self.sawPrompt { throw self.invalid("'input' given twice") }
        self.sawPrompt = true
        switch try self.reader.peekKind() {
        case .string:
            self.main.append(Tag.message)
            let role = self.main.count
            self.main.append(contentsOf: Self.user)
            self.main.append(Tag.content)
            let start = self.main.count
            try self.reader.appendCanonicalString(to: &self.main)
            guard self.main.count > start else { throw KeyError(.emptyPrompt, "'input' is an empty string") }
            self.noteLeadingText(from: start)
            self.endMessage(role: role..<(role + Self.user.count))
        case .array:
            try self.reader.beginArray()
            var first = true
            var index = 0
            while try self.reader.nextElement(first: &first) {
                try self.responsesItem(index)
                index += 1
            }
            // An empty list is allowed when the conversation continues a stored response.
            if index == 0, self.previousResponseID == nil, self.conversationID == nil {
                throw KeyError(.emptyPrompt, "'input' is empty")
            }
        default:
            throw self.invalid("'input' must be a string or a list of items")
        }
    }

    /// `conversation`: an id, or an object with one; the session of the request.
    mutating func responsesConversation() throws {
        switch try self.reader.peekKind() {
        case .string:
            var id: [UInt8] = []
            try self.reader.appendCanonicalString(to: &id)
            if !id.isEmpty { self.conversationID = id }
        case .object:
            try self.reader.beginObject()
            var first = true
            while let key = try self.reader.nextKey(first: &first) {
                if self.reader.key(key, equals: "id"), try self.reader.peekKind() == .string {
                    var id: [UInt8] = []
                    try self.reader.appendCanonicalString(to: &id)
                    if !id.isEmpty { self.conversationID = id }
                } else {
                    try self.reader.skipValue()
                }
            }
        default:
            try self.reader.skipValue()
        }
    }

    /// One input item: a message (`role` and `content`, with or without `type: message`), or
    /// another item (function calls and their outputs, reasoning...) as its type and canonical
    /// JSON. Read in one pass as a message; an item without a role is rewritten as the other kind.
    mutating func responsesItem(_ index: Int) throws {
        guard try self.reader.peekKind() == .object else { throw self.invalid("input[\(index)] must be an object") }
        try self.message(index, dropping: ["type", "id", "status"], label: "input", item: true)
    }

    // MARK: - Messages (Anthropic)

    /// `system`: a string or a list of text blocks, one system message (vLLM joins the blocks);
    /// the last block with `cache_control` marks where the client's stable prefix ends.
    mutating func anthropicSystem() throws {
        if try self.reader.readNullIfPresent() { return }
        switch try self.reader.peekKind() {
        case .string:
            self.preambleSystemStart()
            let start = self.preamble.count
            try self.reader.appendCanonicalString(to: &self.preamble)
            if self.leadingText.isEmpty { self.leadingText = Array(self.preamble[start..<min(self.preamble.count, start + 256)]) }
        case .array:
            self.preambleSystemStart()
            try self.reader.beginArray()
            var first = true
            var index = 0
            while try self.reader.nextElement(first: &first) {
                guard try self.reader.peekKind() == .object else { throw self.invalid("system[\(index)] must be a text block") }
                try self.reader.beginObject()
                var f = true
                var text: JSONStringSpan?
                var marked = false
                while let key = try self.reader.nextKey(first: &f) {
                    if self.reader.key(key, equals: "text"), try self.reader.peekKind() == .string {
                        text = try self.reader.readStringSpan()
                    } else {
                        if self.reader.key(key, equals: "cache_control"), !(try self.reader.peekKind() == .null) { marked = true }
                        try self.reader.skipValue()
                    }
                }
                if let text, !self.reader.span(text, hasPrefix: Self.billingHeader) {
                    let start = self.preamble.count
                    try CanonicalString.append(text, of: self.reader.buffer, to: &self.preamble)
                    if self.leadingText.isEmpty { self.leadingText = Array(self.preamble[start..<min(self.preamble.count, start + 256)]) }
                }
                if marked { self.breakpointInPreamble = self.preamble.count }
                index += 1
            }
        default:
            throw self.invalid("'system' must be a string or a list of text blocks")
        }
    }

    /// `tools`: canonical JSON of each tool without its `cache_control`; a marked tool is a
    /// breakpoint at the end of the tools.
    mutating func anthropicTools() throws {
        if try self.reader.readNullIfPresent() { return }
        guard try self.reader.peekKind() == .array else { throw self.invalid("'tools' must be a list") }
        self.head.append(Tag.tools)
        self.head.append(UInt8(ascii: "["))
        try self.reader.beginArray()
        var first = true
        var wrote = false
        var marked = false
        while try self.reader.nextElement(first: &first) {
            if wrote { self.head.append(UInt8(ascii: ",")) }
            wrote = true
            if try CanonicalJSON.appendValue(&self.reader, to: &self.head, dropping: Self.cacheControl) { marked = true }
        }
        self.head.append(UInt8(ascii: "]"))
        if marked { self.breakpointInHead = self.head.count }
    }

    /// `messages` of a Messages body: the chat records, content blocks as chat parts.
    mutating func anthropicMessages() throws {
        try self.messages()
    }
}
