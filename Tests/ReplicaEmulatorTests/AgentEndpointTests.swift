import CacheRouteTestSupport
import FastJSON
import Foundation
import HTTPTransport
import NIOCore
import NIOHTTP1
import ReplicaEmulator
import Testing

/// The emulator's Responses and Messages endpoints in vLLM 0.32's shapes.
@Suite(.serialized)
struct AgentEndpointTests {
    /// The `event:` names and data of an SSE body, in order.
    static func events(_ text: String) -> [(name: String, data: JSONValue)] {
        text.components(separatedBy: "\n\n").compactMap { block in
            let lines = block.split(separator: "\n")
            guard let name = lines.first(where: { $0.hasPrefix("event: ") }), let data = lines.first(where: { $0.hasPrefix("data: ") }),
                let value = try? JSONValue.parse(Array(data.dropFirst(6).utf8))
            else { return nil }
            return (String(name.dropFirst(7)), value)
        }
    }

    @Test func responsesAreStoredStreamedAndContinued() async throws {
        try await TestSupport.withEmulators(1) { servers in
            let port = servers[0].port
            let first = try await TestSupport.post(port, "/v1/responses", #"{"model":"cacheroute-demo","instructions":"Be brief.","input":"Hi","max_output_tokens":3,"request_id":"resp_given"}"#)
            let r1 = try JSONValue.parse(first.bodyBytes)
            #expect(r1["id"]?.stringValue == "resp_given" && r1["object"]?.stringValue == "response")
            #expect(r1["output"]?[0]?["content"]?[0]?["type"]?.stringValue == "output_text")
            #expect(r1["usage"]?["output_tokens"]?.intValue == 3 && r1["usage"]?["input_tokens_details"]?["cached_tokens"]?.intValue == 0)
            // Streamed continuation: vLLM's event sequence, numbered, no [DONE]; the history is in cache.
            let stream = try await TestSupport.post(port, "/v1/responses", #"{"model":"cacheroute-demo","instructions":"Be brief.","input":"More","max_output_tokens":2,"stream":true,"previous_response_id":"resp_given"}"#)
            let text = String(buffer: stream.body)
            let events = Self.events(text)
            #expect(events.map(\.name) == [
                "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
                "response.output_text.delta", "response.output_text.delta", "response.output_text.done", "response.content_part.done",
                "response.output_item.done", "response.completed",
            ])
            #expect(events.map { $0.data["sequence_number"]?.intValue ?? -1 } == (0..<10).map { Int64($0) })
            #expect(!text.contains("[DONE]"))
            let done = try #require(events.last?.data["response"])
            #expect(done["previous_response_id"]?.stringValue == "resp_given")
            let usage = done["usage"]
            #expect((usage?["input_tokens_details"]?["cached_tokens"]?.intValue ?? 0) > 0, "\(usage?.serialized ?? "")")
            // Retrieved as stored; unknown ids, cancel and DELETE answer as vLLM does.
            let id = try #require(done["id"]?.stringValue)
            #expect(try JSONValue.parse(try await TestSupport.get(port, "/v1/responses/\(id)").bodyBytes)["id"]?.stringValue == id)
            let missing = try await TestSupport.get(port, "/v1/responses/resp_nope")
            #expect(missing.status == .notFound)
            #expect(try JSONValue.parse(missing.bodyBytes)["error"]?["message"]?.stringValue == "Response with id 'resp_nope' not found.")
            let cancel = try await TestSupport.post(port, "/v1/responses/\(id)/cancel", "")
            #expect(cancel.status == .badRequest)
            let continued = try await TestSupport.post(port, "/v1/responses", #"{"model":"cacheroute-demo","input":"x","previous_response_id":"resp_nope"}"#)
            #expect(continued.status == .notFound)
            #expect(try JSONValue.parse(continued.bodyBytes)["error"]?["param"]?.stringValue == "response_id")
        }
    }

    @Test func withoutTheStoreNothingCanBeContinued() async throws {
        try await TestSupport.withEmulators(1, configure: { s, _ in s.storeResponses = false }) { servers in
            let port = servers[0].port
            let first = try JSONValue.parse(try await TestSupport.post(port, "/v1/responses", #"{"model":"cacheroute-demo","input":"Hi","max_output_tokens":2}"#).bodyBytes)
            let id = try #require(first["id"]?.stringValue)
            #expect(id.hasPrefix("resp_"))
            #expect(try await TestSupport.get(port, "/v1/responses/\(id)").status == .notFound)
        }
    }

    @Test func messagesInAnthropicShapes() async throws {
        try await TestSupport.withEmulators(1) { servers in
            let port = servers[0].port
            let body = #"{"model":"cacheroute-demo","max_tokens":3,"system":[{"type":"text","text":"\#(String(repeating: "Rules. ", count: 100))","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"Hi"}]"#
            let whole = try JSONValue.parse(try await TestSupport.post(port, "/v1/messages", body + "}").bodyBytes)
            #expect(whole["type"]?.stringValue == "message" && whole["content"]?[0]?["type"]?.stringValue == "text")
            #expect(whole["stop_reason"]?.stringValue == "max_tokens" && whole["usage"]?["output_tokens"]?.intValue == 3)
            let streamed = try await TestSupport.post(port, "/v1/messages", body + #","stream":true}"#)
            let events = Self.events(String(buffer: streamed.body))
            #expect(events.map(\.name) == [
                "message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_delta",
                "content_block_stop", "message_delta", "message_stop",
            ])
            // The second time the system is in cache: input_tokens leaves it out.
            let usage = try #require(events.first { $0.name == "message_delta" }?.data["usage"])
            let read = usage["cache_read_input_tokens"]?.intValue ?? 0
            #expect(read > 0 && (usage["input_tokens"]?.intValue ?? 0) < read)
            let count = try JSONValue.parse(try await TestSupport.post(port, "/v1/messages/count_tokens", body + "}").bodyBytes)
            #expect((count["input_tokens"]?.intValue ?? 0) > 100)
            let bad = try await TestSupport.post(port, "/v1/messages", #"{"model":"cacheroute-demo","messages":[{"role":"user","content":"x"}]}"#)
            #expect(bad.status == .badRequest)
            let error = try JSONValue.parse(bad.bodyBytes)
            #expect(error["type"]?.stringValue == "error" && error["error"]?["message"]?.stringValue?.contains("max_tokens") == true)
        }
    }
}
