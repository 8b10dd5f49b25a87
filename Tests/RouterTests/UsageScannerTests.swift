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
}
