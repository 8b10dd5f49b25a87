import HTTPTransport
import NIOCore
import RoutingCore
import Testing

/// The HTTP/1.1 head parser on hostile and fragmented input: what a client or a replica controls.
struct HeadParserTests {
    static let heads: [(String, HTTP1HeadParser.Kind)] = [
        ("POST /v1/chat/completions HTTP/1.1\r\nHost: a:1\r\nContent-Length: 12\r\nConnection: keep-alive, x-a\r\nx-a: 1\r\nX-Request-Id: r-1\r\n\r\n", .request),
        ("GET /v1/models HTTP/1.0\r\nAccept: */*\r\n\r\n", .request),
        ("POST /generate HTTP/1.1\r\nhost: b\r\ntransfer-encoding: chunked\r\nexpect: 100-continue\r\n\r\n", .request),
        ("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n", .response),
        ("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\n\r\n", .response),
    ]

    /// Parses `bytes` fed in the given pieces: the head, the error, or nil (incomplete).
    func parse(_ pieces: [[UInt8]], kind: HTTP1HeadParser.Kind) -> Result<HTTP1Head, HTTP1ParseError>? {
        var parser = HTTP1HeadParser(kind: kind, maxBytes: 4096)
        var buffer = ByteBuffer()
        for piece in pieces {
            buffer.writeBytes(piece)
            do {
                if let head = try parser.parse(&buffer) { return .success(head) }
            } catch {
                return .failure(error)
            }
        }
        return nil
    }

    @Test func anyFragmentationGivesTheSameHead() {
        var rng = SplitMix64Generator(seed: 7)
        for (text, kind) in Self.heads {
            let bytes = Array(text.utf8)
            guard case .success(let whole) = self.parse([bytes], kind: kind) else {
                Issue.record("did not parse whole: \(text)")
                continue
            }
            for _ in 0..<300 {
                var pieces: [[UInt8]] = []
                var at = 0
                while at < bytes.count {
                    let n = Int.random(in: 1...max(1, min(9, bytes.count - at)), using: &rng)
                    pieces.append(Array(bytes[at..<(at + n)]))
                    at += n
                }
                guard case .success(let head) = self.parse(pieces, kind: kind) else {
                    Issue.record("fragmented parse failed: \(pieces.map(\.count)) of \(text)")
                    break
                }
                #expect(head.bytes == whole.bytes && head.fields.count == whole.fields.count)
                #expect(head.contentLength == whole.contentLength && head.chunked == whole.chunked)
            }
        }
    }

    /// A recycled head's storage is reused for the next head of the same kind; a head still
    /// held elsewhere when it was recycled is left as it was.
    @Test func recycledHeadsParseLikeFreshOnes() throws {
        for kind in [HTTP1HeadParser.Kind.request, .response] {
            let texts = Self.heads.filter { $0.1 == kind }.map(\.0)
            var parser = HTTP1HeadParser(kind: kind, maxBytes: 4096)
            var kept: [(HTTP1Head, String)] = []
            for round in 0..<6 {
                let text = texts[round % texts.count]
                var buffer = ByteBuffer(string: text + "next")
                let head = try #require(try parser.parse(&buffer))
                let fresh = try HTTP1HeadParser.parseHead(Array(text.utf8), kind: kind)
                #expect(head.bytes == fresh.bytes && head.fields.count == fresh.fields.count)
                #expect(head.status == fresh.status && head.contentLength == fresh.contentLength && head.chunked == fresh.chunked)
                #expect(zip(head.fields, fresh.fields).allSatisfy { $0.name == $1.name && $0.value == $1.value && $0.kind == $1.kind })
                #expect(String(buffer: buffer) == "next")
                if round.isMultiple(of: 3) { kept.append((head, text)) }
                parser.recycle(head)
            }
            for (head, text) in kept { #expect(String(decoding: head.bytes, as: UTF8.self) == text) }
        }
    }

    @Test func mutatedHeadsNeverTrapAndWhatParsesIsClean() {
        var rng = SplitMix64Generator(seed: 11)
        let specials: [UInt8] = [0x00, 0x09, 0x0A, 0x0D, 0x20, 0x3A, 0x7F, 0xFF, UInt8(ascii: ","), UInt8(ascii: "-")]
        var parsed = 0
        for _ in 0..<20_000 {
            let (text, kind) = Self.heads[Int.random(in: 0..<Self.heads.count, using: &rng)]
            var bytes = Array(text.utf8)
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let at = Int.random(in: 0..<bytes.count, using: &rng)
                let byte = Bool.random(using: &rng) ? specials.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: bytes[at] = byte
                case 1: bytes.insert(byte, at: at)
                default: bytes.remove(at: at)
                }
                if bytes.isEmpty { bytes = [0x0D] }
            }
            guard case .success(let head) = self.parse([bytes], kind: kind) else { continue }
            parsed += 1
            for field in head.fields {
                #expect(!field.name.isEmpty)
                for i in field.name { #expect(head.bytes[i] > 0x20 && head.bytes[i] < 0x7F && head.bytes[i] != UInt8(ascii: ":")) }
                for i in field.value { #expect((head.bytes[i] >= 0x20 || head.bytes[i] == 0x09) && head.bytes[i] != 0x7F) }
            }
            if kind == .request {
                #expect(!(head.chunked && head.contentLength != nil))
                let hosts = head.fields.filter { $0.kind == .host }.count
                #expect(hosts == 1 || (hosts == 0 && head.minorVersion == 0))
            }
            if let length = head.contentLength { #expect(length >= 0) }
        }
        #expect(parsed > 100)
    }
}

/// A seeded generator for reproducible random tests.
struct SplitMix64Generator: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) {
        self.state = seed
    }

    mutating func next() -> UInt64 {
        self.state &+= 1
        return SplitMix64.mix(self.state)
    }
}
