import FastJSON
import HTTPTransport
import NIOCore
import NIOHTTP1

/// What a client saw of one streamed request.
public struct StreamedAnswer: Sendable {
    public var status: Int
    /// `x-cacheroute-replica`, when a cacheroute answered.
    public var replica: String?
    /// Seconds from sending to the first generated text (nil when none came).
    public var ttft: Double?
    public var seconds: Double
    /// The generated text (chat deltas or completion text, concatenated).
    public var text: String
    public var promptTokens: Int?
    public var cachedTokens: Int?
    /// Why the request failed (connect error, HTTP error status, broken stream, error event).
    public var error: String?

    public var ok: Bool { self.error == nil && self.status == 200 }
}

/// Sends OpenAI requests with `"stream": true` and reads the SSE answer as it arrives, timing
/// the first token. Used by `cacheroute demo` and `cacheroute replay`.
public struct StreamingClient: Sendable {
    public let client: HTTPClient

    public init(client: HTTPClient) {
        self.client = client
    }

    public func send(host: String, port: Int, path: String, body: [UInt8], headers: HTTPHeaders = [:], timeout: Double) async -> StreamedAnswer {
        let clock = ContinuousClock()
        let start = clock.now
        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
        var answer = StreamedAnswer(status: 0, seconds: 0, text: "")
        let request = HTTPClientRequest.post(host: host, port: port, path: path, json: body, headers: headers)
        do {
            let stream = try await self.client.stream(request, connectTimeout: 5, responseTimeout: timeout)
            answer.status = Int(stream.status.code)
            answer.replica = stream.headers["x-cacheroute-replica"].first
            var parser = SSEParser()
            var errorBody = ""
            for try await chunk in stream.body {
                if stream.status != .ok {
                    errorBody += String(buffer: chunk)
                    continue
                }
                for event in parser.feed(chunk) {
                    guard event != "[DONE]", let value = try? JSONValue.parse(event) else { continue }
                    if let error = value["error"] {
                        answer.error = error["message"]?.stringValue ?? "error event"
                        continue
                    }
                    Self.read(value, into: &answer) { seconds(clock.now - start) }
                }
            }
            if stream.status != .ok {
                answer.error = "HTTP \(stream.status.code): \(errorBody.prefix(200))"
            }
        } catch {
            answer.error = "\(error)"
        }
        answer.seconds = seconds(clock.now - start)
        return answer
    }
}

extension StreamingClient {
    /// Reads one event of a chat or completions stream (`choices`), a Responses stream
    /// (`response.output_text.delta`, then `response.completed` with usage) or a Messages stream
    /// (`content_block_delta`; usage in `message_start` and `message_delta`).
    static func read(_ value: JSONValue, into answer: inout StreamedAnswer, now: () -> Double) {
        var piece: String?
        var usage: JSONValue?
        switch value["type"]?.stringValue {
        case "response.output_text.delta"?:
            piece = value["delta"]?.stringValue
        case "response.completed"?:
            if let u = value["response"]?["usage"], u != .null {
                answer.promptTokens = u["input_tokens"]?.intValue.map(Int.init) ?? answer.promptTokens
                answer.cachedTokens = u["input_tokens_details"]?["cached_tokens"]?.intValue.map(Int.init) ?? answer.cachedTokens
            }
        case "content_block_delta"?:
            piece = value["delta"]?["text"]?.stringValue
        case "message_start"?, "message_delta"?:
            // Anthropic's input_tokens leaves out what the cache served.
            if let u = value["usage"] ?? value["message"]?["usage"], let input = u["input_tokens"]?.intValue {
                let read = Int(u["cache_read_input_tokens"]?.intValue ?? 0)
                answer.promptTokens = Int(input) + read + Int(u["cache_creation_input_tokens"]?.intValue ?? 0)
                answer.cachedTokens = read
            }
        default:
            let choice = value["choices"]?[0]
            piece = choice?["delta"]?["content"]?.stringValue ?? choice?["text"]?.stringValue
            usage = value["usage"]
        }
        if let piece, !piece.isEmpty {
            if answer.ttft == nil { answer.ttft = now() }
            answer.text += piece
        }
        if let usage, usage != .null {
            answer.promptTokens = usage["prompt_tokens"]?.intValue.map(Int.init) ?? answer.promptTokens
            answer.cachedTokens = usage["prompt_tokens_details"]?["cached_tokens"]?.intValue.map(Int.init) ?? answer.cachedTokens
        }
    }
}

/// Splits a Server-Sent Events byte stream into the `data` of each event.
public struct SSEParser: Sendable {
    private var pending: [UInt8] = []

    public init() {}

    public mutating func feed(_ buffer: ByteBuffer) -> [String] {
        self.pending += buffer.readableBytesView
        var events: [String] = []
        var start = 0
        var i = 0
        let bytes = self.pending
        while i + 1 < bytes.count {
            if bytes[i] == 0x0A, bytes[i + 1] == 0x0A {
                events.append(contentsOf: Self.data(bytes[start..<i]))
                start = i + 2
                i += 2
            } else {
                i += 1
            }
        }
        self.pending = Array(bytes[start...])
        return events
    }

    static func data(_ event: ArraySlice<UInt8>) -> [String] {
        let lines = String(decoding: event, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        let data = lines.filter { $0.hasPrefix("data:") }.map { line -> Substring in
            let rest = line.dropFirst(5)
            return rest.hasPrefix(" ") ? rest.dropFirst() : rest
        }
        return data.isEmpty ? [] : [data.joined(separator: "\n")]
    }
}
