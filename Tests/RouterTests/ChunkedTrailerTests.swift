import HTTPTransport
import NIOCore
import Testing

/// Trailers after the last chunk are held to the rules of head fields, as h11 holds them.
@Suite struct ChunkedTrailerTests {
    /// Decodes `text` whole; the body, or the error's message.
    static func decode(_ text: String) -> Result<String, HTTP1ParseError> {
        var decoder = ChunkedDecoder()
        var buffer = ByteBuffer(string: text)
        var body = ""
        do {
            let done = try decoder.decode(&buffer) { body += String(buffer: $0) }
            return done ? .success(body) : .failure(HTTP1ParseError(400, "incomplete"))
        } catch {
            return .failure(error)
        }
    }

    @Test(arguments: [
        "5\r\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n",
        "5\r\nhello\r\n0\r\nx-a:1\r\nx-b: \t two words \r\n\r\n",
        "5;ext=1\r\nhello\r\n0\r\nx-empty:\r\n\r\n",
    ])
    func wellFormedTrailersAreReadAndDropped(text: String) throws {
        #expect(try Self.decode(text).get() == "hello")
    }

    @Test(arguments: [
        ("5\r\nhello\r\n0\r\nno colon here\r\n\r\n", "invalid character in a trailer name"),
        ("5\r\nhello\r\n0\r\nnocolon\r\n\r\n", "trailer line without a colon"),
        ("5\r\nhello\r\n0\r\n: no name\r\n\r\n", "malformed chunk trailer"),
        ("5\r\nhello\r\n0\r\nx-a: 1\r\n folded\r\n\r\n", "obsolete line folding is not accepted"),
        ("5\r\nhello\r\n0\r\nx a: 1\r\n\r\n", "invalid character in a trailer name"),
        ("5\r\nhello\r\n0\r\nx-a: 1\u{01}\r\n\r\n", "invalid character in a trailer value"),
        ("5\r\nhello\r\n0\r\nx-a: 1\n\r\n", "bare LF in chunk trailer"),
        ("5\r\nhello\r\n0\r\nx-a: 1\r\r\n", "malformed chunk trailer"),
    ])
    func malformedTrailersAreRefused(text: String, message: String) {
        guard case .failure(let error) = Self.decode(text) else {
            Issue.record("accepted: \(text.debugDescription)")
            return
        }
        #expect(error.status == 400 && error.description == message, "\(error)")
    }
}
