import HTTPTransport
import NIOCore
import NIOHTTP1
import FleetState
import RoutingCore

/// Writes the heads the proxy sends: the request to a replica and the response to a client.
/// Fields are copied as bytes from the received head; hop-by-hop fields (RFC 9110 7.6.1) and
/// those a `Connection` header names never cross.
enum ProxyHeads {
    /// The request for a replica: hop-by-hop fields, Host, Expect and the body framing dropped;
    /// Host set to the replica, `X-Forwarded-For` extended with the client, `X-Forwarded-Proto`
    /// added when absent, `X-Request-Id` set to the request's id, the body length stated.
    ///   - reserve: room for bytes the caller appends (a small body sent in the same write).
    ///   - stripCredentials: drop the client's `Authorization` and `x-api-key` (the router checked them).
    ///   - authorization: the replicas' own `authorization` line, which replaces the client's.
    ///   - trustForwarded: the client is a trusted proxy: its `X-Forwarded-For` is extended, its
    ///     `X-Forwarded-Proto` and `Forwarded` kept; otherwise they are replaced (Forwarded dropped).
    ///   - out: where the head is appended (an empty buffer, usually a recycled one).
    static func upstreamRequest(
        _ head: HTTP1Head, endpoint: ReplicaEndpoint, client: String?, requestID: RequestID, bodyLength: Int, reserve: Int = 0,
        stripCredentials: Bool = false, authorization: [UInt8]? = nil, proto: StaticString = "http", trustForwarded: Bool = true,
        into out: inout ByteBuffer
    ) {
        let prefix = endpoint.url?.pathPrefix ?? ""
        // Each received field is copied at most once (an X-Forwarded-For value with its ", " is
        // shorter than its line), plus what the router writes itself: the path prefix, Host, the
        // request id, the client address, and X-Forwarded-For, X-Forwarded-Proto and
        // Content-Length with their names (17 + 2 + 2 + 25 + 16 + 19 digits + 4 = 85 bytes).
        let bound = head.bytes.count + prefix.utf8.count + endpoint.hostLine.count + (client?.utf8.count ?? 0)
            + RequestID.maxFieldBytes + (authorization?.count ?? 0) + 85
        out.reserveCapacity(minimumWritableBytes: bound + reserve)
        head.bytes.withUnsafeBytes { bytes in
            out.writeHead(maxBytes: bound) { w in
                w.write(UnsafeRawBufferPointer(rebasing: bytes[head.method]))
                w.write(" ")
                if !prefix.isEmpty { w.write(string: prefix) }
                w.write(UnsafeRawBufferPointer(rebasing: bytes[head.target]))
                w.write(" HTTP/1.1\r\n")
                w.write(endpoint.hostLine)
                var forwardedFor = false
                var forwardedProto = false
                for field in head.fields {
                    switch field.kind {
                    case .other, .contentType:
                        break
                    case .xForwardedProto:
                        guard trustForwarded else { continue }
                        forwardedProto = true
                    case .xForwardedFor:
                        forwardedFor = trustForwarded
                        continue
                    case .forwarded:
                        guard trustForwarded else { continue }
                    case .hopByHop, .contentLength, .transferEncoding, .host, .expect, .xRequestID:
                        continue
                    case .authorization:
                        if stripCredentials || authorization != nil { continue }
                    case .xAPIKey:
                        if stripCredentials { continue }
                    }
                    w.write(UnsafeRawBufferPointer(rebasing: bytes[field.name.lowerBound..<field.value.upperBound]))
                    w.write("\r\n")
                }
                requestID.writeField(to: &w)
                if let authorization { w.write(authorization) }
                if client != nil || forwardedFor {
                    w.write("x-forwarded-for: ")
                    var first = true
                    for field in head.fields where trustForwarded && field.kind == .xForwardedFor {
                        if !first { w.write(", ") }
                        first = false
                        w.write(UnsafeRawBufferPointer(rebasing: bytes[field.value]))
                    }
                    if let client {
                        if !first { w.write(", ") }
                        w.write(string: client)
                    }
                    w.write("\r\n")
                }
                if !forwardedProto {
                    w.write("x-forwarded-proto: ")
                    w.write(proto)
                    w.write("\r\n")
                }
                w.write("content-length: ")
                w.write(decimal: bodyLength)
                w.write("\r\n\r\n")
            }
        }
    }

    /// The response head for the client: the replica's status and fields minus hop-by-hop ones,
    /// the body framing for `framing`, which replica and tier served it, and the request's id
    /// (unless the replica returned it already, as vLLM does with `--enable-request-id-headers`).
    static func clientResponse(
        _ response: HTTP1Head,
        request: HTTP1Head,
        framing: ClientFraming,
        close: Bool,
        endpoint: ReplicaEndpoint,
        tier: Tier,
        requestID: RequestID,
        reserve: Int = 0,
        extra: [UInt8] = [],
        into out: inout ByteBuffer
    ) {
        // The received status line and fields at most once, plus the lines the router writes
        // itself: the replica, the request id, and under 100 bytes of Content-Length (or
        // Transfer-Encoding), the tier and Connection; 192 leaves room to spare.
        let bound = response.bytes.count + endpoint.replicaLine.count + RequestID.maxFieldBytes + extra.count + 192
        out.reserveCapacity(minimumWritableBytes: bound + reserve)
        response.bytes.withUnsafeBytes { bytes in
            out.writeHead(maxBytes: bound) { w in
                w.write("HTTP/1.1 ")
                w.write(status: response.status)
                w.write(" ")
                w.write(UnsafeRawBufferPointer(rebasing: bytes[response.reason]))
                w.write("\r\n")
                for field in response.fields {
                    switch field.kind {
                    case .hopByHop, .transferEncoding:
                        continue
                    case .contentLength where framing != .none:
                        continue
                    default:
                        w.write(UnsafeRawBufferPointer(rebasing: bytes[field.name.lowerBound..<field.value.upperBound]))
                        w.write("\r\n")
                    }
                }
                switch framing {
                case .length:
                    w.write("content-length: ")
                    w.write(decimal: response.contentLength ?? 0)
                    w.write("\r\n")
                case .chunked:
                    w.write("transfer-encoding: chunked\r\n")
                case .none, .close:
                    break
                }
                w.write(endpoint.replicaLine)
                if !extra.isEmpty { w.write(extra) }
                w.write("x-cacheroute-tier: ")
                w.write(string: tier.rawValue)
                w.write("\r\n")
                if response.first(.xRequestID) == nil { requestID.writeField(to: &w) }
                Self.writeConnection(&w, close: close, request: request)
                w.write("\r\n")
            }
        }
    }

    /// A complete JSON response the router answers itself.
    static func localResponse(
        _ status: HTTPResponseStatus,
        body: [UInt8],
        retryAfter: Int?,
        close: Bool,
        request: HTTP1Head?,
        requestID: RequestID,
        contentType: String? = nil,
        extra: [UInt8] = [],
        bodyBytes: Int? = nil,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        let reason = status.reasonPhrase
        // The reason, the request id, and under 150 bytes of status line, Content-Type,
        // Content-Length, Retry-After and Connection; 192 leaves room to spare.
        let bound = reason.utf8.count + RequestID.maxFieldBytes + (contentType?.utf8.count ?? 0) + extra.count + 192
        var out = allocator.buffer(capacity: bound + body.count)
        out.writeHead(maxBytes: bound) { w in
            w.write("HTTP/1.1 ")
            w.write(status: Int(status.code))
            w.write(" ")
            w.write(string: reason)
            if let contentType {
                w.write("\r\ncontent-type: ")
                w.write(string: contentType)
                w.write("\r\ncontent-length: ")
            } else {
                w.write("\r\ncontent-type: application/json\r\ncontent-length: ")
            }
            w.write(decimal: bodyBytes ?? body.count)
            w.write("\r\n")
            if !extra.isEmpty { w.write(extra) }
            if let retryAfter {
                w.write("retry-after: ")
                w.write(decimal: retryAfter)
                w.write("\r\n")
            }
            requestID.writeField(to: &w)
            Self.writeConnection(&w, close: close, request: request)
            w.write("\r\n")
        }
        out.writeBytes(body)
        return out
    }

    /// `Connection: close` when closing; `keep-alive` for an HTTP/1.0 client that asked for it.
    static func writeConnection(_ w: inout HeadWriter, close: Bool, request: HTTP1Head?) {
        if close {
            w.write("connection: close\r\n")
        } else if let request, request.minorVersion == 0 {
            w.write("connection: keep-alive\r\n")
        }
    }

    /// One chunk of the chunked coding around `piece`.
    static func chunk(_ piece: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var piece = piece
        var out = allocator.buffer(capacity: piece.readableBytes + 24)
        out.writeString(String(piece.readableBytes, radix: 16))
        out.writeStaticString("\r\n")
        out.writeBuffer(&piece)
        out.writeStaticString("\r\n")
        return out
    }
}
