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

/// Body framing read as strictly as h11 reads it (issue found by Benchmarks/fuzz_h11.py).
@Suite struct StrictFramingTests {
    static func head(_ fields: String) -> Result<HTTP1Head, HTTP1ParseError> {
        var parser = HTTP1HeadParser(kind: .request, maxBytes: 65536)
        var buffer = ByteBuffer(string: "POST /v1/chat/completions HTTP/1.1\r\nhost: r\r\n\(fields)\r\n")
        do {
            guard let head = try parser.parse(&buffer) else { return .failure(HTTP1ParseError(0, "incomplete")) }
            return .success(head)
        } catch {
            return .failure(error)
        }
    }

    @Test func contentLengthsMustBeSpelledAlike() throws {
        #expect(try Self.head("content-length: 96\r\n").get().contentLength == 96)
        #expect(try Self.head("content-length: 096\r\n").get().contentLength == 96)
        #expect(try Self.head("content-length: 5, 5\r\n").get().contentLength == 5)
        #expect(try Self.head("content-length: 5\r\ncontent-length: 5\r\n").get().contentLength == 5)
        for bad in ["content-length: 096\r\ncontent-length: 96\r\n", "content-length: 096, 96\r\n", "content-length: 5,\r\n", "content-length: ,5\r\n", "content-length: 5, 6\r\n"] {
            guard case .failure(let error) = Self.head(bad) else {
                Issue.record("accepted \(bad.debugDescription)")
                continue
            }
            #expect(error.status == 400, "\(bad.debugDescription)")
        }
    }

    @Test func transferEncodingIsTheOneWordChunked() throws {
        #expect(try Self.head("transfer-encoding: chunked\r\n").get().chunked)
        #expect(try Self.head("transfer-encoding: Chunked \r\n").get().chunked)
        for bad in ["transfer-encoding: chunked,\r\n", "transfer-encoding: ,chunked\r\n", "transfer-encoding: gzip, chunked\r\n", "transfer-encoding: chunked, chunked\r\n"] {
            guard case .failure = Self.head(bad) else {
                Issue.record("accepted \(bad.debugDescription)")
                continue
            }
        }
    }

    @Test func nothingButAnExtensionFollowsAChunkSize() throws {
        #expect(try ChunkedTrailerTests.decode("5 \r\nhello\r\n0\r\n\r\n").get() == "hello")
        #expect(try ChunkedTrailerTests.decode("5 ;ext=1\r\nhello\r\n0\r\n\r\n").get() == "hello")
        guard case .failure(let error) = ChunkedTrailerTests.decode("5 xyz\r\nhello\r\n0\r\n\r\n") else {
            Issue.record("junk after a chunk size was accepted")
            return
        }
        #expect(error.description == "junk after a chunk size")
    }
}

/// Request targets: absolute form accepted (RFC 9112 3.2.2), dot-segments refused.
@Suite struct RequestTargetTests {
    static func target(_ target: String) -> Result<String, HTTP1ParseError> {
        var parser = HTTP1HeadParser(kind: .request, maxBytes: 65536)
        var buffer = ByteBuffer(string: "POST \(target) HTTP/1.1\r\nhost: r\r\n\r\n")
        do {
            guard let head = try parser.parse(&buffer) else { return .failure(HTTP1ParseError(0, "incomplete")) }
            return .success(head.targetString)
        } catch {
            return .failure(error)
        }
    }

    @Test(arguments: [
        ("http://router.example/v1/chat/completions", "/v1/chat/completions"),
        ("HTTPS://router.example:8443/v1/models?x=1", "/v1/models?x=1"),
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/a.b/...c/x.", "/a.b/...c/x."),
        ("/v1/models?path=/../x", "/v1/models?path=/../x"),
        ("*", "*"),
    ])
    func accepted(target: String, path: String) throws {
        #expect(try Self.target(target).get() == path)
    }

    @Test(arguments: [
        "/v1/../admin/replicas", "/./v1/models", "/v1/..", "/v1/%2e%2E/admin", "/v1/.%2e/x", "http://h/v1/../x", "http://host", "http://?x",
        "ftp://h/x", "example.com:443", "v1/models",
    ])
    func refused(target: String) {
        guard case .failure(let error) = Self.target(target) else {
            Issue.record("accepted \(target)")
            return
        }
        #expect(error.status == 400)
    }
}
