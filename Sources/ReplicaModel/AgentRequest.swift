import FastJSON
import RoutingCore
import XXHash

/// OpenAI Responses and Anthropic Messages bodies as vLLM reads them: converted to chat messages
/// (instructions or the system first, then the conversation), which the engine renders with its
/// chat template like any chat request, so the same conversation caches alike through all three.
enum AgentRequest {
    static func parse(api: RequestAPI, value: JSONValue, defaultMaxTokens: Int) throws -> EngineInput {
        guard case .object = value else { throw EngineInputError("request body must be a JSON object") }
        var messages: [EngineInput.ChatMessage] = []
        var tools: [UInt8]?
        var input = EngineInput(api: api, model: value["model"]?.stringValue, prompt: [], maxTokens: defaultMaxTokens)
        input.stream = value["stream"]?.boolValue ?? false
        input.salt = value["cache_salt"]?.stringValue
        if let t = value["tools"], t != .null, case .array(let list) = t, !list.isEmpty {
            var out: [UInt8] = []
            JSONValue.array(list.map(Self.withoutCacheControl)).write(to: &out)
            tools = out
        }
        switch api {
        case .responses:
            if let limit = value["max_output_tokens"]?.intValue { input.maxTokens = Int(limit) }
            input.previousResponseID = value["previous_response_id"]?.stringValue
            input.store = value["store"]?.boolValue ?? true
            input.bodyRequestID = value["request_id"]?.stringValue
            input.instructions = value["instructions"]?.stringValue
            switch value["input"] {
            case .string(let text)?:
                messages.append(.init(role: "user", content: Array(text.utf8)))
            case .array(let items)?:
                for item in items { messages.append(contentsOf: try Self.responsesItem(item)) }
            case nil, .null?:
                guard input.previousResponseID != nil else { throw EngineInputError("'input' is required") }
            default:
                throw EngineInputError("'input' must be a string or a list of items")
            }
        case .messages:
            guard let limit = value["max_tokens"]?.intValue else { throw EngineInputError("max_tokens: Field required") }
            input.maxTokens = Int(limit)
            var system: [UInt8] = []
            switch value["system"] {
            case .string(let text)?: system = Array(text.utf8)
            case .array(let blocks)?:
                // As vLLM: Claude Code's attribution block (a hash that changes every request) is dropped.
                for b in blocks {
                    if let t = b["text"]?.stringValue, !t.hasPrefix("x-anthropic-billing-header") { system += Array(t.utf8) }
                }
            default: break
            }
            if !system.isEmpty { messages.append(.init(role: "system", content: system)) }
            guard case .array(let list)? = value["messages"] else { throw EngineInputError("messages: Field required") }
            for m in list {
                guard let role = m["role"]?.stringValue else { throw EngineInputError("each message needs a 'role'") }
                messages.append(.init(role: role, content: Self.content(m["content"])))
            }
        default:
            throw EngineInputError("not an agent API")
        }
        guard !messages.isEmpty || input.previousResponseID != nil else { throw EngineInputError("the conversation is empty") }
        if input.maxTokens < 1 { throw EngineInputError("max_tokens must be at least 1") }
        input.chatMessages = messages
        input.tools = tools
        if api == .messages { input.render(previous: nil) }
        return input
    }

    /// Responses: the messages vLLM renders, as `construct_input_messages` builds them: the
    /// request's instructions, the stored conversation it continues without its system messages
    /// (instructions do not carry over), the previous answer, then the new input.
    static func compose(instructions: String?, previous: [EngineInput.ChatMessage]?, input: [EngineInput.ChatMessage]) -> [EngineInput.ChatMessage] {
        var messages: [EngineInput.ChatMessage] = []
        if let instructions, !instructions.isEmpty { messages.append(.init(role: "system", content: Array(instructions.utf8))) }
        if let previous { messages += previous.filter { $0.role != "system" } }
        return messages + input
    }

    /// A Responses input item as chat messages.
    static func responsesItem(_ item: JSONValue) throws -> [EngineInput.ChatMessage] {
        let type = item["type"]?.stringValue
        if let role = item["role"]?.stringValue, type == nil || type == "message" {
            return [.init(role: role, content: Self.content(item["content"]))]
        }
        switch type {
        case "function_call":
            var call: [UInt8] = []
            item.write(to: &call)
            return [.init(role: "assistant", content: Array("<tool_call>".utf8) + call + Array("</tool_call>".utf8))]
        case "function_call_output":
            return [.init(role: "tool", content: Array((item["output"]?.stringValue ?? "").utf8))]
        default:
            var out: [UInt8] = []
            item.write(to: &out)
            return [.init(role: "user", content: out)]
        }
    }

    /// Message content: a string, or parts and blocks (text joined by newlines, others a placeholder).
    static func content(_ value: JSONValue?) -> [UInt8] {
        switch value {
        case .string(let text)?:
            return Array(text.utf8)
        case .array(let parts)?:
            var texts: [[UInt8]] = []
            for part in parts {
                if let text = part["text"]?.stringValue {
                    texts.append(Array(text.utf8))
                } else {
                    var canonical: [UInt8] = []
                    Self.withoutCacheControl(part).write(to: &canonical)
                    texts.append(Array("<media:\(XXH3.hash(canonical).hex16)>".utf8))
                }
            }
            return Array(texts.joined(separator: [0x0A]))
        default:
            return []
        }
    }

    static func withoutCacheControl(_ value: JSONValue) -> JSONValue {
        guard case .object(let members) = value else { return value }
        return .object(members.filter { $0.key != "cache_control" })
    }
}

extension EngineInput {
    /// Renders an agent request's prompt. Responses: `previous` is the stored conversation it
    /// continues (its messages, then the previous answer as an assistant message); the final
    /// `chatMessages` are what a response stored now would keep.
    public mutating func render(previous: [ChatMessage]?) {
        guard let current = self.chatMessages else { return }
        if self.api == .responses {
            self.chatMessages = AgentRequest.compose(instructions: self.instructions, previous: previous, input: current)
        }
        self.prompt = ChatTemplate.render(tools: self.tools, messages: (self.chatMessages ?? []).map { ($0.role, $0.content) })
    }
}
