import FastJSON
import NIOCore
import ReplicaModel
import RoutingCore

/// The OpenAI Responses and Anthropic Messages answers in vLLM 0.32's shapes
/// (`vllm/entrypoints/openai/responses/`, `vllm/entrypoints/anthropic/`): whole answers, their
/// Server-Sent Events, usage, and errors.
enum AgentRenderer {
    // MARK: - Responses

    /// A Responses object: `in_progress` with no output and no usage (the first events), or
    /// finished with the answer and usage. The emulator always stops at the token limit, which
    /// vLLM reports as `incomplete` (reason `max_output_tokens`).
    static func response(_ g: EmulatorHandler.Generation, model: String, finished: Bool, details: Bool, into out: inout [UInt8]) {
        let input = g.input
        out += Array("{\"id\":".utf8)
        JSONWriter.appendString(g.requestID, to: &out)
        out += Array(",\"created_at\":\(g.created),\"incomplete_details\":".utf8)
        out += Array((finished ? "{\"reason\":\"max_output_tokens\"}" : "null").utf8)
        out += Array(",\"instructions\":".utf8)
        if let instructions = input.instructions { JSONWriter.appendString(instructions, to: &out) } else { out += Array("null".utf8) }
        out += Array(",\"metadata\":null,\"model\":".utf8)
        JSONWriter.appendString(model, to: &out)
        out += Array(",\"object\":\"response\",\"output\":[".utf8)
        if finished { Self.outputMessage(g, done: true, into: &out) }
        out += Array("],\"parallel_tool_calls\":true,\"temperature\":1.0,\"tool_choice\":\"auto\",\"tools\":".utf8)
        out += input.tools ?? Array("[]".utf8)
        out += Array(",\"top_p\":1.0,\"background\":false,\"max_output_tokens\":\(input.maxTokens),\"max_tool_calls\":null,\"previous_response_id\":".utf8)
        if let previous = input.previousResponseID { JSONWriter.appendString(previous, to: &out) } else { out += Array("null".utf8) }
        out += Array(",\"prompt\":null,\"reasoning\":null,\"service_tier\":\"auto\",\"status\":".utf8)
        out += Array((finished ? "\"incomplete\"" : "\"in_progress\"").utf8)
        out += Array(",\"text\":null,\"top_logprobs\":null,\"truncation\":\"disabled\",\"usage\":".utf8)
        if finished {
            let prompt = input.promptTokens
            out += Array("{\"input_tokens\":\(prompt),\"input_tokens_details\":{\"cached_tokens\":\(details ? g.cachedTokens : 0)},".utf8)
            out += Array("\"output_tokens\":\(input.maxTokens),\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":\(prompt + input.maxTokens)}".utf8)
        } else {
            out += Array("null".utf8)
        }
        out += Array(",\"user\":null}".utf8)
    }

    /// The answer's one output item: an assistant message with its text.
    static func outputMessage(_ g: EmulatorHandler.Generation, done: Bool, into out: inout [UInt8]) {
        out += Array("{\"id\":\"\(g.itemID)\",\"content\":[".utf8)
        if done {
            out += Array("{\"annotations\":[],\"text\":\"".utf8) + g.output + Array("\",\"type\":\"output_text\",\"logprobs\":null}".utf8)
        }
        out += Array("],\"role\":\"assistant\",\"status\":\"\(done ? "completed" : "in_progress")\",\"type\":\"message\"}".utf8)
    }

    static func event(_ type: String, into out: inout [UInt8], _ body: (inout [UInt8]) -> Void) {
        out += Array("event: \(type)\ndata: ".utf8)
        body(&out)
        out += Array("\n\n".utf8)
    }

    /// The events before the first token: created, in progress, the output item and its text part.
    static func responsesOpening(_ g: EmulatorHandler.Generation, model: String, into out: inout [UInt8]) {
        for (n, type) in ["response.created", "response.in_progress"].enumerated() {
            Self.event(type, into: &out) { o in
                o += Array("{\"response\":".utf8)
                Self.response(g, model: model, finished: false, details: false, into: &o)
                o += Array(",\"sequence_number\":\(n),\"type\":\"\(type)\"}".utf8)
            }
        }
        Self.event("response.output_item.added", into: &out) { o in
            o += Array("{\"item\":".utf8)
            Self.outputMessage(g, done: false, into: &o)
            o += Array(",\"output_index\":0,\"sequence_number\":2,\"type\":\"response.output_item.added\"}".utf8)
        }
        Self.event("response.content_part.added", into: &out) { o in
            o += Array("{\"content_index\":0,\"item_id\":\"\(g.itemID)\",\"output_index\":0,\"part\":{\"annotations\":[],\"text\":\"\",\"type\":\"output_text\",\"logprobs\":null},\"sequence_number\":3,\"type\":\"response.content_part.added\"}".utf8)
        }
    }

    /// One token of the answer.
    static func responsesDelta(_ g: EmulatorHandler.Generation, tokenIndex: Int, into out: inout [UInt8]) {
        let piece = OutputText.piece(seed: g.number, index: tokenIndex)
        Self.event("response.output_text.delta", into: &out) { o in
            o += Array("{\"content_index\":0,\"delta\":\"".utf8) + piece
            o += Array("\",\"item_id\":\"\(g.itemID)\",\"logprobs\":[],\"output_index\":0,\"sequence_number\":\(4 + tokenIndex),\"type\":\"response.output_text.delta\"}".utf8)
        }
    }

    /// The events after the last token: the text, the part and the item done, then the response
    /// completed with its usage.
    static func responsesClosing(_ g: EmulatorHandler.Generation, model: String, details: Bool, into out: inout [UInt8]) {
        var n = 4 + g.input.maxTokens
        Self.event("response.output_text.done", into: &out) { o in
            o += Array("{\"content_index\":0,\"item_id\":\"\(g.itemID)\",\"logprobs\":[],\"output_index\":0,\"sequence_number\":\(n),\"text\":\"".utf8)
            o += g.output + Array("\",\"type\":\"response.output_text.done\"}".utf8)
        }
        n += 1
        Self.event("response.content_part.done", into: &out) { o in
            o += Array("{\"content_index\":0,\"item_id\":\"\(g.itemID)\",\"output_index\":0,\"part\":{\"annotations\":[],\"text\":\"".utf8) + g.output
            o += Array("\",\"type\":\"output_text\",\"logprobs\":null},\"sequence_number\":\(n),\"type\":\"response.content_part.done\"}".utf8)
        }
        n += 1
        Self.event("response.output_item.done", into: &out) { o in
            o += Array("{\"item\":".utf8)
            Self.outputMessage(g, done: true, into: &o)
            o += Array(",\"output_index\":0,\"sequence_number\":\(n),\"type\":\"response.output_item.done\"}".utf8)
        }
        n += 1
        Self.event("response.completed", into: &out) { o in
            o += Array("{\"response\":".utf8)
            Self.response(g, model: model, finished: true, details: details, into: &o)
            o += Array(",\"sequence_number\":\(n),\"type\":\"response.completed\"}".utf8)
        }
    }

    // MARK: - Messages

    /// Anthropic usage from vLLM's: `input_tokens` leaves out what was read from the cache.
    static func anthropicUsage(_ g: EmulatorHandler.Generation, outputTokens: Int, details: Bool, into out: inout [UInt8]) {
        let prompt = g.input.promptTokens
        if details {
            out += Array("{\"input_tokens\":\(max(0, prompt - g.cachedTokens)),\"output_tokens\":\(outputTokens),\"cache_read_input_tokens\":\(g.cachedTokens)}".utf8)
        } else {
            out += Array("{\"input_tokens\":\(prompt),\"output_tokens\":\(outputTokens)}".utf8)
        }
    }

    static func message(_ g: EmulatorHandler.Generation, model: String, details: Bool, into out: inout [UInt8]) {
        out += Array("{\"id\":\"\(g.requestID)\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"".utf8) + g.output
        out += Array("\"}],\"model\":".utf8)
        JSONWriter.appendString(model, to: &out)
        out += Array(",\"stop_reason\":\"max_tokens\",\"stop_sequence\":null,\"usage\":".utf8)
        Self.anthropicUsage(g, outputTokens: g.input.maxTokens, details: details, into: &out)
        out += Array("}".utf8)
    }

    static func messagesOpening(_ g: EmulatorHandler.Generation, model: String, details: Bool, into out: inout [UInt8]) {
        Self.event("message_start", into: &out) { o in
            o += Array("{\"type\":\"message_start\",\"message\":{\"id\":\"\(g.requestID)\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":".utf8)
            JSONWriter.appendString(model, to: &o)
            o += Array(",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":".utf8)
            Self.anthropicUsage(g, outputTokens: 0, details: details, into: &o)
            o += Array("}}".utf8)
        }
        Self.event("content_block_start", into: &out) { o in
            o += Array("{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}".utf8)
        }
    }

    static func messagesDelta(_ g: EmulatorHandler.Generation, tokenIndex: Int, into out: inout [UInt8]) {
        Self.event("content_block_delta", into: &out) { o in
            o += Array("{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"".utf8)
            o += OutputText.piece(seed: g.number, index: tokenIndex) + Array("\"}}".utf8)
        }
    }

    static func messagesClosing(_ g: EmulatorHandler.Generation, details: Bool, into out: inout [UInt8]) {
        Self.event("content_block_stop", into: &out) { o in o += Array("{\"type\":\"content_block_stop\",\"index\":0}".utf8) }
        Self.event("message_delta", into: &out) { o in
            o += Array("{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null},\"usage\":".utf8)
            Self.anthropicUsage(g, outputTokens: g.input.maxTokens, details: details, into: &o)
            o += Array("}".utf8)
        }
        Self.event("message_stop", into: &out) { o in o += Array("{\"type\":\"message_stop\"}".utf8) }
    }

    // MARK: - Errors

    /// vLLM 0.32's error body (OpenAI's shape), or the Anthropic one for `/v1/messages`.
    static func error(api: RequestAPI?, status: Int, message: String, type: String, param: String?) -> JSONValue {
        if api == .messages {
            return .object(["type": .string("error"), "error": .object(["type": .string(type), "message": .string(message)])])
        }
        return .object([
            "error": .object([
                "message": .string(message), "type": .string(type), "param": param.map { .string($0) } ?? .null, "code": .int(Int64(status)),
            ])
        ])
    }
}

/// The responses a replica stored (`VLLM_ENABLE_RESPONSES_API_STORE=1`): in its memory only, as
/// in vLLM, so only this replica can continue or return them. Bounded: the oldest go first.
struct ResponseStore {
    struct Entry {
        /// The conversation as rendered for it (a continuation starts from it).
        var messages: [EngineInput.ChatMessage]
        /// Its answer.
        var output: [UInt8]
        /// The response object as returned.
        var json: [UInt8]
    }

    var entries: [String: Entry] = [:]
    var order: [String] = []
    var start = 0
    let capacity: Int

    init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    mutating func put(_ id: String, _ entry: Entry) {
        if self.entries.updateValue(entry, forKey: id) == nil { self.order.append(id) }
        while self.entries.count > self.capacity, self.start < self.order.count {
            self.entries[self.order[self.start]] = nil
            self.start += 1
        }
        if self.start > 1024, self.start * 2 > self.order.count {
            self.order.removeFirst(self.start)
            self.start = 0
        }
    }
}
