// HTTP/1.1 head parsing on the proxy's path: a wrk chat request head and an nginx response head,
// per parse, against copying the same bytes out of a buffer (the floor). Run:
// swift run -c release HeadBench
import HTTPTransport
import NIOCore

import BenchTiming

let request = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:19400\r\nContent-Length: 4125\r\nContent-Type: application/json\r\nX-Session-ID: session-417\r\n\r\n"
let response = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov 2026 21:29:22 GMT\r\nContent-Type: application/json\r\nContent-Length: 205\r\nConnection: keep-alive\r\n\r\n"
var sink = 0
print("head         bytes   floor (copy)   parse      ratio")
for (name, text, kind) in [("request", request, HTTP1HeadParser.Kind.request), ("response", response, .response)] {
    let buffer = ByteBuffer(string: text)
    let floor = measure(200_000) {
        var b = buffer
        sink &+= b.readBytes(length: b.readableBytes)!.count
    }
    let parse = measure(200_000) {
        var b = buffer
        var parser = HTTP1HeadParser(kind: kind, maxBytes: 65536)
        if let head = try? parser.parse(&b) { sink &+= head.fields.count }
    }
    print("\(name + String(repeating: " ", count: 12 - name.count)) \(text.utf8.count)     \(Int(floor * 1e9)) ns         \(Int(parse * 1e9)) ns     \(Int(parse / floor))x")
}
if sink == 42 { print("") }
