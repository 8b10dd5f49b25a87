import FastJSON
import NIOCore
import ReplicaModel
import RoutingCore

/// The generated answer: deterministic 4-byte word pieces (one token each), so the same request
/// number always gives the same text and the next turn can find its blocks in the cache.
enum OutputText {
    static let pieces: [[UInt8]] = [
        "the ", "and ", "for ", "you ", "can ", "not ", "all ", "but ", "was ", "one ", "our ", "out ", "day ",
        "get ", "has ", "him ", "his ", "how ", "new ", "now ", "old ", "see ", "two ", "way ", "who ", "boy ",
        "did ", "its ", "let ", "put ", "say ", "she ", "too ", "use ", "yes ", "any ",
    ].map { Array($0.utf8) }

    static func piece(seed: UInt64, index: Int) -> [UInt8] {
        Self.pieces[Int(SplitMix64.mix(seed &* 0x9E37 &+ UInt64(index)) % UInt64(Self.pieces.count))]
    }

    static func bytes(seed: UInt64, tokens: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(tokens * 4)
        for i in 0..<tokens { out += Self.piece(seed: seed, index: i) }
        return out
    }

    /// Token ids of a prompt as the emulated tokenizer sees it: each 4-byte group as a number.
    static func tokenIDs(_ input: EngineInput) -> [UInt32] {
        if let ids = input.tokenIDs { return ids }
        var ids: [UInt32] = []
        ids.reserveCapacity(input.promptTokens)
        var i = 0
        while i < input.prompt.count {
            var v: UInt32 = 0
            for k in 0..<4 where i + k < input.prompt.count { v = v << 8 | UInt32(input.prompt[i + k]) }
            ids.append(v % 151_936)
            i += 4
        }
        return ids
    }
}

/// OpenAI and SGLang response bodies, written straight into bytes (the hot path of instant mode).
enum ResponseRenderer {
    static func usage(_ g: EmulatorHandler.Generation, details: Bool, into out: inout [UInt8]) {
        let prompt = g.input.promptTokens
        let completion = g.input.maxTokens
        out += Array("{\"prompt_tokens\":\(prompt),\"total_tokens\":\(prompt + completion),\"completion_tokens\":\(completion),".utf8)
        if details {
            out += Array("\"prompt_tokens_details\":{\"cached_tokens\":\(g.cachedTokens)}}".utf8)
        } else {
            out += Array("\"prompt_tokens_details\":null}".utf8)
        }
    }

    /// The whole (non-streamed) answer.
    static func complete(_ g: EmulatorHandler.Generation, model: String, details: Bool) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(g.output.count + 512)
        switch g.input.api {
        case .chat:
            out += Array("{\"id\":\"\(g.requestID)\",\"object\":\"chat.completion\",\"created\":\(g.created),\"model\":".utf8)
            JSONWriter.appendString(model, to: &out)
            out += Array(",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"".utf8)
            out += g.output
            out += Array("\",\"refusal\":null,\"tool_calls\":[]},\"logprobs\":null,\"finish_reason\":\"length\",\"stop_reason\":null}],\"usage\":".utf8)
            Self.usage(g, details: details, into: &out)
            out += Array(",\"prompt_logprobs\":null}".utf8)
        case .completions:
            out += Array("{\"id\":\"\(g.requestID)\",\"object\":\"text_completion\",\"created\":\(g.created),\"model\":".utf8)
            JSONWriter.appendString(model, to: &out)
            out += Array(",\"choices\":[{\"index\":0,\"text\":\"".utf8)
            out += g.output
            out += Array("\",\"logprobs\":null,\"finish_reason\":\"length\",\"stop_reason\":null,\"prompt_logprobs\":null}],\"usage\":".utf8)
            Self.usage(g, details: details, into: &out)
            out += Array("}".utf8)
        case .generate:
            out += Array("{\"text\":\"".utf8)
            out += g.output
            out += Array("\",\"meta_info\":".utf8)
            Self.metaInfo(g, into: &out)
            out += Array("}".utf8)
        case .responses:
            AgentRenderer.response(g, model: model, finished: true, details: details, into: &out)
        case .messages:
            AgentRenderer.message(g, model: model, details: details, into: &out)
        }
        return out
    }

    static func metaInfo(_ g: EmulatorHandler.Generation, into out: inout [UInt8]) {
        out += Array("{\"id\":\"\(g.requestID)\",\"finish_reason\":{\"type\":\"length\",\"length\":\(g.input.maxTokens)},".utf8)
        out += Array("\"prompt_tokens\":\(g.input.promptTokens),\"completion_tokens\":\(g.sentTokens == 0 ? g.input.maxTokens : g.sentTokens),\"cached_tokens\":\(g.cachedTokens)}".utf8)
    }

    /// One SSE event carrying token `tokenIndex` (the first also opens the assistant message).
    static func streamChunk(_ g: EmulatorHandler.Generation, tokenIndex: Int, model: String, into buffer: inout ByteBuffer) {
        var out: [UInt8] = []
        let piece = OutputText.piece(seed: g.number, index: tokenIndex)
        switch g.input.api {
        case .chat:
            Self.chatChunkStart(g, model: model, into: &out)
            out += Array("[{\"index\":0,\"delta\":{\"content\":\"".utf8) + piece + Array("\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n".utf8)
        case .completions:
            out += Array("data: {\"id\":\"\(g.requestID)\",\"object\":\"text_completion\",\"created\":\(g.created),\"model\":".utf8)
            JSONWriter.appendString(model, to: &out)
            out += Array(",\"choices\":[{\"index\":0,\"text\":\"".utf8) + piece + Array("\",\"logprobs\":null,\"finish_reason\":null,\"stop_reason\":null}]}\n\n".utf8)
        case .generate:
            // SGLang streams the text so far.
            out += Array("data: {\"text\":\"".utf8)
            for i in 0...tokenIndex { out += OutputText.piece(seed: g.number, index: i) }
            out += Array("\",\"meta_info\":{\"id\":\"\(g.requestID)\",\"prompt_tokens\":\(g.input.promptTokens),\"completion_tokens\":\(tokenIndex + 1),\"cached_tokens\":\(g.cachedTokens)}}\n\n".utf8)
        case .responses:
            AgentRenderer.responsesDelta(g, tokenIndex: tokenIndex, into: &out)
        case .messages:
            AgentRenderer.messagesDelta(g, tokenIndex: tokenIndex, into: &out)
        }
        buffer.writeBytes(out)
    }

    /// The events before the first token, for the APIs that have them: chat's assistant role
    /// with empty content, the Responses and Messages opening events.
    static func opening(_ g: EmulatorHandler.Generation, model: String, details: Bool, into buffer: inout ByteBuffer) -> Bool {
        var out: [UInt8] = []
        switch g.input.api {
        case .chat:
            Self.chatChunkStart(g, model: model, into: &out)
            out += Array("[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n".utf8)
        case .responses:
            AgentRenderer.responsesOpening(g, model: model, into: &out)
        case .messages:
            AgentRenderer.messagesOpening(g, model: model, details: details, into: &out)
        case .completions, .generate:
            return false
        }
        buffer.writeBytes(out)
        return true
    }

    static func chatChunkStart(_ g: EmulatorHandler.Generation, model: String, into out: inout [UInt8]) {
        out += Array("data: {\"id\":\"\(g.requestID)\",\"object\":\"chat.completion.chunk\",\"created\":\(g.created),\"model\":".utf8)
        JSONWriter.appendString(model, to: &out)
        out += Array(",\"choices\":".utf8)
    }

    /// The finish event, the usage event (when asked for) and `[DONE]`.
    static func streamEnd(_ g: EmulatorHandler.Generation, model: String, details: Bool, into buffer: inout ByteBuffer) {
        var out: [UInt8] = []
        switch g.input.api {
        case .chat:
            Self.chatChunkStart(g, model: model, into: &out)
            out += Array("[{\"index\":0,\"delta\":{\"content\":\"\"},\"logprobs\":null,\"finish_reason\":\"length\",\"stop_reason\":null}]}\n\n".utf8)
            if g.input.includeUsage {
                Self.chatChunkStart(g, model: model, into: &out)
                out += Array("[],\"usage\":".utf8)
                Self.usage(g, details: details, into: &out)
                out += Array("}\n\n".utf8)
            }
        case .completions:
            out += Array("data: {\"id\":\"\(g.requestID)\",\"object\":\"text_completion\",\"created\":\(g.created),\"model\":".utf8)
            JSONWriter.appendString(model, to: &out)
            out += Array(",\"choices\":[{\"index\":0,\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"length\",\"stop_reason\":null}]}\n\n".utf8)
            if g.input.includeUsage {
                out += Array("data: {\"id\":\"\(g.requestID)\",\"object\":\"text_completion\",\"created\":\(g.created),\"model\":".utf8)
                JSONWriter.appendString(model, to: &out)
                out += Array(",\"choices\":[],\"usage\":".utf8)
                Self.usage(g, details: details, into: &out)
                out += Array("}\n\n".utf8)
            }
        case .generate:
            out += Array("data: {\"text\":\"".utf8) + g.output + Array("\",\"meta_info\":".utf8)
            Self.metaInfo(g, into: &out)
            out += Array("}\n\n".utf8)
        case .responses:
            // No `[DONE]` after Responses or Messages events.
            AgentRenderer.responsesClosing(g, model: model, details: details, into: &out)
            buffer.writeBytes(out)
            return
        case .messages:
            AgentRenderer.messagesClosing(g, details: details, into: &out)
            buffer.writeBytes(out)
            return
        }
        out += Array("data: [DONE]\n\n".utf8)
        buffer.writeBytes(out)
    }
}
