// The router's HTTP/1.1 request parsing (head, then body framing, chunk trailers included) as a
// filter for Benchmarks/fuzz_h11.py: reads length-prefixed inputs (4-byte little-endian length,
// then the bytes) from stdin and prints one verdict line per input:
//   ok <framing> body=<bytes> rest=<bytes left after the message>
//   incomplete
//   err <status> <message>
// Run through the script: python3 Benchmarks/fuzz_h11.py
import Foundation
import HTTPTransport
import NIOCore

let input = FileHandle.standardInput.readDataToEndOfFile()
var out = ""
out.reserveCapacity(64 << 20)
var offset = 0
input.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
    while offset + 4 <= raw.count {
        let length = Int(raw[offset]) | Int(raw[offset + 1]) << 8 | Int(raw[offset + 2]) << 16 | Int(raw[offset + 3]) << 24
        offset += 4
        var buffer = ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: raw[offset..<min(raw.count, offset + length)]))
        offset += length
        var parser = HTTP1HeadParser(kind: .request, maxBytes: 65536)
        do {
            guard let head = try parser.parse(&buffer) else {
                out += "incomplete\n"
                continue
            }
            var reader = BodyReader.request(head)
            var body = 0
            let framing = head.chunked ? "chunked" : "cl=\(head.contentLength ?? 0)"
            let done = try reader.read(&buffer) { body += $0.readableBytes }
            out += done ? "ok \(framing) body=\(body) rest=\(buffer.readableBytes)\n" : "incomplete\n"
        } catch let error as HTTP1ParseError {
            out += "err \(error.status) \(error.description)\n"
        } catch {
            out += "err 0 \(error)\n"
        }
    }
}
FileHandle.standardOutput.write(out.data(using: .utf8)!)
