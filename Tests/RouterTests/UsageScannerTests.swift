import NIOCore
import Testing

@testable import DataPlane
import FleetState

/// The usage numbers are found however the response is cut into pieces.
@Suite struct UsageScannerTests {
    static let answer = #"{"id":"x","choices":[{"text":"a \"prompt_tokens\": 9"}],"usage":{"prompt_tokens": 2048,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":1536}}}"#

    func scan(_ pieces: [String]) -> (Int?, Int?) {
        var scanner = UsageScanner()
        for piece in pieces { scanner.feed(ByteBuffer(string: piece)) }
        return (scanner.promptTokens, scanner.cachedTokens)
    }

    @Test func oneWholePiece() {
        #expect(self.scan([Self.answer]) == (2048, 1536))
    }

    @Test func everyCutIntoTwoPieces() {
        let bytes = Array(Self.answer.utf8)
        for cut in 1..<bytes.count {
            let found = self.scan([String(decoding: bytes[..<cut], as: UTF8.self), String(decoding: bytes[cut...], as: UTF8.self)])
            #expect(found == (2048, 1536), "cut at \(cut)")
        }
    }

    @Test func piecesOfEverySmallSize() {
        let bytes = Array(Self.answer.utf8)
        for size in 1...40 {
            let pieces = stride(from: 0, to: bytes.count, by: size).map {
                String(decoding: bytes[$0..<min(bytes.count, $0 + size)], as: UTF8.self)
            }
            #expect(self.scan(pieces) == (2048, 1536), "pieces of \(size) bytes")
        }
    }

    @Test func theLastValueOfAStreamWins() {
        let events = [
            "data: {\"usage\":{\"prompt_tokens\":10}}\n\n",
            "data: {\"usage\":{\"prompt_tokens\":12,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n", "data: [DONE]\n\n",
        ]
        #expect(self.scan(events) == (12, 4))
    }

    /// Every API's usage, cut into pieces of every small size: (prompt, cached, output).
    @Test(arguments: [
        // Responses (also the `response.completed` event of a stream).
        (false, #"event: response.completed\ndata: {"response":{"id":"resp_1","output":[{"content":[{"text":"\"input_tokens\": 5"}]}],"usage":{"input_tokens":3000,"input_tokens_details":{"cached_tokens":2048,"input_tokens_per_turn":[3000],"cached_tokens_per_turn":[2048]},"output_tokens":40,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":3040},"user":null},"sequence_number":9,"type":"response.completed"}"#, 3000, 2048, 40),
        // Messages: input_tokens leaves out what the cache served.
        (true, #"{"id":"chatcmpl-1","type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":952,"output_tokens":6,"cache_read_input_tokens":2048}}"#, 3000, 2048, 6),
        // A Messages stream: message_start, then message_delta with the final figures.
        (true, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":100,\"output_tokens\":0}}}\n\nevent: content_block_delta\ndata: {}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":10,\"output_tokens\":7,\"cache_read_input_tokens\":80,\"cache_creation_input_tokens\":10}}\n\n", 100, 80, 7),
    ])
    func everyAPIsUsage(anthropic: Bool, text: String, prompt: Int, cached: Int, output: Int) {
        let bytes = Array(text.utf8)
        for size in [1, 2, 3, 7, 13, 29, 48, 100, bytes.count] {
            var scanner = UsageScanner()
            scanner.anthropic = anthropic
            for start in stride(from: 0, to: bytes.count, by: size) {
                scanner.feed(ByteBuffer(bytes: bytes[start..<min(bytes.count, start + size)]))
            }
            #expect(scanner.promptTokens == prompt && scanner.cachedTokens == cached && scanner.completionTokens == output, "pieces of \(size)")
        }
    }
}
