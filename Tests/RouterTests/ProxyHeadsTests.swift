import HTTPTransport
import NIOCore
import RoutingCore
import Testing

@testable import DataPlane
import FleetState

/// The heads the proxy writes, byte for byte, including the worst cases of their size bounds
/// (`HeadWriter` traps rather than write past a bound that is too small).
@Suite struct ProxyHeadsTests {
    let endpoint = ReplicaEndpoint(name: "r1", url: "http://10.0.0.7:8000/prefix")

    func text(_ buffer: ByteBuffer) -> String { String(buffer: buffer) }

    @Test func upstreamRequestRewritesTheHead() throws {
        let head = try HTTP1HeadParser.parseHead(
            Array(
                ("POST /v1/chat/completions HTTP/1.1\r\nHost: router\r\nConnection: keep-alive, x-drop\r\nx-drop: 1\r\n"
                    + "X-Forwarded-For: 1.1.1.1\r\nContent-Type: application/json\r\nX-Forwarded-For: 2.2.2.2\r\n"
                    + "Content-Length: 5\r\nX-Request-Id: theirs\r\n\r\n").utf8
            ),
            kind: .request
        )
        var out = ByteBuffer()
        ProxyHeads.upstreamRequest(
            head, endpoint: self.endpoint, client: "3.3.3.3", requestID: .generated(0xab), bodyLength: 5, into: &out
        )
        #expect(
            self.text(out)
                == "POST /prefix/v1/chat/completions HTTP/1.1\r\nhost: 10.0.0.7:8000\r\nContent-Type: application/json\r\n"
                + "x-request-id: 00000000000000ab\r\nx-forwarded-for: 1.1.1.1, 2.2.2.2, 3.3.3.3\r\n"
                + "x-forwarded-proto: http\r\ncontent-length: 5\r\n\r\n"
        )
    }

    @Test(arguments: [
        "GET / HTTP/1.0\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: h\r\n" + String(repeating: "x-forwarded-for:a\r\n", count: 300) + "\r\n",
    ])
    func theLargestUpstreamHeadsFitTheirBound(_ received: String) throws {
        // The most the router adds to a head: the path prefix, the longest client request id, a
        // long client address, every X-Forwarded-For joined, the longest body length. The first
        // head (no fields) fills all but 4 bytes of its bound (the received head's blank line and
        // the unused ", "): a bound 5 bytes smaller traps here.
        let head = try HTTP1HeadParser.parseHead(Array(received.utf8), kind: .request)
        let client = String(repeating: "f", count: 200)
        let id = RequestID.client(String(repeating: "i", count: RequestID.maxClientBytes))
        var out = ByteBuffer()
        ProxyHeads.upstreamRequest(head, endpoint: self.endpoint, client: client, requestID: id, bodyLength: Int.max, into: &out)
        let text = self.text(out)
        #expect(text.hasPrefix("GET /prefix/ HTTP/1.1\r\nhost: 10.0.0.7:8000\r\nx-request-id: iii"))
        #expect(text.contains("x-forwarded-for: \(head.fields.isEmpty ? "" : "a, a, ")"))
        #expect(text.contains("\(client)\r\nx-forwarded-proto: http\r\n"))
        #expect(text.hasSuffix("content-length: \(Int.max)\r\n\r\n"))
    }

    @Test func clientResponseKeepsEndToEndFieldsOnly() throws {
        let response = try HTTP1HeadParser.parseHead(
            Array(
                "HTTP/1.1 200 OK\r\nServer: x\r\nConnection: keep-alive\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n\r\n".utf8
            ),
            kind: .response
        )
        let request = try HTTP1HeadParser.parseHead(Array("GET / HTTP/1.0\r\n\r\n".utf8), kind: .request)
        var out = ByteBuffer()
        ProxyHeads.clientResponse(
            response, request: request, framing: .length, close: false, endpoint: self.endpoint, tier: .session,
            requestID: .client("abc"), into: &out
        )
        #expect(
            self.text(out)
                == "HTTP/1.1 200 OK\r\nServer: x\r\ncontent-length: 2\r\nx-cacheroute-replica: r1\r\n"
                + "x-cacheroute-tier: session\r\nx-request-id: abc\r\nconnection: keep-alive\r\n\r\n"
        )
    }

    @Test func numbersAreWrittenInFull() {
        var buffer = ByteBuffer()
        buffer.writeHead(maxBytes: 128) { w in
            for n in [0, 7, 10, 4125, Int.max, -5] {
                w.write(decimal: n)
                w.write(" ")
            }
            w.write(status: 42)
            w.write(status: 204)
            w.write(" ")
            w.write(hex16: 0x0123_4567_89ab_cdef)
        }
        #expect(self.text(buffer) == "0 7 10 4125 \(Int.max) 0 100204 0123456789abcdef")
    }
}
