import FastJSON
import RoutingCore

/// A stored answer in the other form than the one asked for: a stream read as the JSON answer a
/// replica would have sent, or a JSON answer as the stream it would have sent (the key leaves
/// `stream` out, so both forms of one request share it).
///
/// JSON to stream: chat and completions (one chunk with the role, one with the content, one with
/// the finish reason, the usage when there is one, `[DONE]`). Stream to JSON: chat,
/// completions, Responses (its `response.completed` event holds the whole response) and Messages
/// (the message, its content blocks and its stop reason put back together).
public enum FormConversion {
    /// Whether an answer stored as `stored` can serve a request that wants `wanted`.
    public static func converts(api: RequestAPI, from stored: AnswerForm, to wanted: AnswerForm) -> Bool {
        if stored == wanted { return true }
        switch (api, wanted) {
        case (.chat, _), (.completions, _): return true
        case (.responses, .json), (.messages, .json): return true
        default: return false
        }
    }

    /// `answer` in `form` (nil when it cannot be converted).
    public static func convert(_ answer: CachedAnswer, api: RequestAPI, to form: AnswerForm) -> CachedAnswer? {
        guard answer.form != form else { return answer }
        var out = answer
        out.form = form
        switch form {
        case .json:
            guard let doc = Self.joined(answer.body, api: api) else { return nil }
            out.body = []
            doc.write(to: &out.body)
            out.contentType = "application/json"
        case .stream:
            guard let doc = try? JSONValue.parse(answer.body), let events = Self.chunks(doc, api: api) else { return nil }
            out.body = []
            for e in events {
                out.body += Array("data: ".utf8)
                e.write(to: &out.body)
                out.body += [0x0A, 0x0A]
            }
            out.body += Array("data: [DONE]\n\n".utf8)
            out.contentType = "text/event-stream; charset=utf-8"
        }
        return out
    }

    // MARK: - Stream to JSON

    static func joined(_ body: [UInt8], api: RequestAPI) -> JSONValue? {
        var docs: [JSONValue] = []
        for event in SSEEvents.split(body) {
            guard let data = SSEEvents.fields(event).data, data != Array("[DONE]".utf8), let doc = try? JSONValue.parse(data) else { continue }
            docs.append(doc)
        }
        switch api {
        case .chat, .completions, .generate: return Self.joinedChoices(docs, api: api)
        case .responses: return docs.last { $0["type"]?.stringValue == "response.completed" }?["response"]
        case .messages: return Self.joinedMessage(docs)
        }
    }

    static func joinedChoices(_ chunks: [JSONValue], api: RequestAPI) -> JSONValue? {
        guard let first = chunks.first(where: { $0["id"] != nil }) else { return nil }
        struct Choice {
            var role = "assistant"
            var text = ""
            var reasoning = ""
            var tools: [Int: (id: String?, name: String, arguments: String)] = [:]
            var finish: JSONValue = .null
        }
        var choices: [Int: Choice] = [:]
        var usage: JSONValue?
        for chunk in chunks {
            if let u = chunk["usage"], u != .null { usage = u }
            for c in chunk["choices"]?.arrayValue ?? [] {
                let i = Int(c["index"]?.intValue ?? 0)
                var choice = choices[i] ?? Choice()
                if api == .completions {
                    choice.text += c["text"]?.stringValue ?? ""
                } else if let d = c["delta"] {
                    if let r = d["role"]?.stringValue { choice.role = r }
                    choice.text += d["content"]?.stringValue ?? ""
                    choice.reasoning += d["reasoning_content"]?.stringValue ?? ""
                    for t in d["tool_calls"]?.arrayValue ?? [] {
                        let k = Int(t["index"]?.intValue ?? 0)
                        var call = choice.tools[k] ?? (nil, "", "")
                        if let id = t["id"]?.stringValue { call.id = id }
                        call.name += t["function"]?["name"]?.stringValue ?? ""
                        call.arguments += t["function"]?["arguments"]?.stringValue ?? ""
                        choice.tools[k] = call
                    }
                }
                if let f = c["finish_reason"], f != .null { choice.finish = f }
                choices[i] = choice
            }
        }
        let list: [JSONValue] = choices.keys.sorted().map { i in
            let c = choices[i]!
            if api == .completions {
                return .object(["index": .int(Int64(i)), "text": .string(c.text), "logprobs": .null, "finish_reason": c.finish])
            }
            var message: [JSONValue.Member] = [.init("role", .string(c.role)), .init("content", .string(c.text))]
            if !c.reasoning.isEmpty { message.append(.init("reasoning_content", .string(c.reasoning))) }
            if !c.tools.isEmpty {
                message.append(
                    .init(
                        "tool_calls",
                        .array(
                            c.tools.keys.sorted().map { k in
                                let t = c.tools[k]!
                                return .object([
                                    "id": t.id.map(JSONValue.string) ?? .null, "type": .string("function"),
                                    "function": .object(["name": .string(t.name), "arguments": .string(t.arguments)]),
                                ])
                            })))
            }
            return .object(["index": .int(Int64(i)), "message": .object(message), "logprobs": .null, "finish_reason": c.finish])
        }
        var doc: [JSONValue.Member] = [
            .init("id", first["id"]!), .init("object", .string(api == .completions ? "text_completion" : "chat.completion")),
            .init("created", first["created"] ?? .null), .init("model", first["model"] ?? .null), .init("choices", .array(list)),
        ]
        if let usage { doc.append(.init("usage", usage)) }
        return .object(doc)
    }

    static func joinedMessage(_ events: [JSONValue]) -> JSONValue? {
        guard case .object(var message)? = events.first(where: { $0["type"]?.stringValue == "message_start" })?["message"] else { return nil }
        var blocks: [Int: JSONValue] = [:]
        var texts: [Int: String] = [:]
        var inputs: [Int: String] = [:]
        func set(_ key: String, _ value: JSONValue) {
            if let i = message.lastIndex(where: { $0.key == key }) { message[i].value = value } else { message.append(.init(key, value)) }
        }
        for e in events {
            let i = Int(e["index"]?.intValue ?? 0)
            switch e["type"]?.stringValue {
            case "content_block_start":
                blocks[i] = e["content_block"]
            case "content_block_delta":
                if let t = e["delta"]?["text"]?.stringValue { texts[i, default: ""] += t }
                if let j = e["delta"]?["partial_json"]?.stringValue { inputs[i, default: ""] += j }
            case "message_delta":
                if let d = e["delta"], case .object(let members) = d { for m in members { set(m.key, m.value) } }
                if let u = e["usage"], case .object(let out) = u, case .object(var usage)? = message.last(where: { $0.key == "usage" })?.value {
                    for m in out {
                        if let k = usage.lastIndex(where: { $0.key == m.key }) { usage[k].value = m.value } else { usage.append(m) }
                    }
                    set("usage", .object(usage))
                }
            default:
                break
            }
        }
        let content: [JSONValue] = blocks.keys.sorted().compactMap { i in
            guard case .object(var b)? = blocks[i] else { return nil }
            func put(_ key: String, _ value: JSONValue) {
                if let k = b.lastIndex(where: { $0.key == key }) { b[k].value = value } else { b.append(.init(key, value)) }
            }
            if let t = texts[i] { put("text", .string(t)) }
            if let j = inputs[i] { put("input", (try? JSONValue.parse(j.isEmpty ? "{}" : j)) ?? .object([])) }
            return .object(b)
        }
        set("content", .array(content))
        return .object(message)
    }

    // MARK: - JSON to stream

    static func chunks(_ doc: JSONValue, api: RequestAPI) -> [JSONValue]? {
        guard api == .chat || api == .completions, let choices = doc["choices"]?.arrayValue, let id = doc["id"] else { return nil }
        let object: JSONValue = .string(api == .completions ? "text_completion" : "chat.completion.chunk")
        func chunk(_ choices: [JSONValue]) -> JSONValue {
            .object(["id": id, "object": object, "created": doc["created"] ?? .null, "model": doc["model"] ?? .null, "choices": .array(choices)])
        }
        var out: [JSONValue] = []
        for c in choices {
            let index = c["index"] ?? .int(0)
            if api == .completions {
                out.append(chunk([.object(["index": index, "text": c["text"] ?? .string(""), "logprobs": .null, "finish_reason": .null])]))
                out.append(chunk([.object(["index": index, "text": .string(""), "logprobs": .null, "finish_reason": c["finish_reason"] ?? .null])]))
                continue
            }
            let m = c["message"]
            out.append(chunk([.object(["index": index, "delta": .object(["role": m?["role"] ?? .string("assistant"), "content": .string("")]), "logprobs": .null, "finish_reason": .null])]))
            var delta: [JSONValue.Member] = []
            if let content = m?["content"], content != .null { delta.append(.init("content", content)) }
            if let r = m?["reasoning_content"], r != .null { delta.append(.init("reasoning_content", r)) }
            if let tools = m?["tool_calls"]?.arrayValue, !tools.isEmpty {
                delta.append(
                    .init(
                        "tool_calls",
                        .array(
                            tools.enumerated().map { k, t in
                                .object(["index": .int(Int64(k)), "id": t["id"] ?? .null, "type": .string("function"), "function": t["function"] ?? .object([])])
                            })))
            }
            if !delta.isEmpty { out.append(chunk([.object(["index": index, "delta": .object(delta), "logprobs": .null, "finish_reason": .null])])) }
            out.append(chunk([.object(["index": index, "delta": .object([]), "logprobs": .null, "finish_reason": c["finish_reason"] ?? .null])]))
        }
        if let usage = doc["usage"], usage != .null {
            out.append(.object(["id": id, "object": object, "created": doc["created"] ?? .null, "model": doc["model"] ?? .null, "choices": .array([]), "usage": usage]))
        }
        return out
    }
}
