import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A parsed HTTP/1.x message head (request or response), kept as the bytes received plus
/// ranges into them: a proxy copies most fields through unchanged, so it never builds strings
/// or header dictionaries for them.
///
/// Parsing is strict where lenience enables request smuggling (RFC 9112 section 11.2): no
/// obsolete line folding, no whitespace before a field's colon, one consistent Content-Length,
/// Transfer-Encoding only as `chunked` and never next to a Content-Length in a request, CRLF
/// line ends.
public struct HTTP1Head: Sendable {
    /// The head as received, from the start line through the empty line.
    public var bytes: [UInt8]
    public var fields: [Field]
    /// Request: the method and the request target.
    public var method: Range<Int> = 0..<0
    public var target: Range<Int> = 0..<0
    /// Response: the status code and the reason phrase.
    public var status = 0
    public var reason: Range<Int> = 0..<0
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var minorVersion = 1
    public var contentLength: Int?
    public var chunked = false
    /// `Connection: close` was sent.
    public var connectionClose = false
    /// `Connection: keep-alive` was sent (matters for HTTP/1.0).
    public var connectionKeepAlive = false
    public var expectContinue = false

    /// One header field: ranges of its name and (trimmed) value in `bytes`, and what it is to a proxy.
    public struct Field: Sendable {
        public var name: Range<Int>
        public var value: Range<Int>
        public var kind: Kind
    }

    /// Header fields a proxy treats specially; everything else is `.other`.
    public enum Kind: UInt8, Sendable {
        case other
        /// Connection-specific (RFC 9110 7.6.1): never forwarded.
        case hopByHop
        case contentLength
        case transferEncoding
        case host
        case expect
        case xForwardedFor
        case xForwardedProto
        case contentType
        case xRequestID
        /// Credentials: `Authorization` and `x-api-key` (kept from replicas unless configured).
        case authorization
        case xAPIKey
        /// `Forwarded` (RFC 7239).
        case forwarded
    }

    /// The connection may carry another message after this one.
    public var isKeepAlive: Bool {
        self.minorVersion >= 1 ? !self.connectionClose : (self.connectionKeepAlive && !self.connectionClose)
    }

    public func string(_ range: Range<Int>) -> String {
        String(decoding: self.bytes[range], as: UTF8.self)
    }

    public var methodString: String { self.string(self.method) }
    public var targetString: String { self.string(self.target) }

    /// The target without its query.
    public var path: Range<Int> {
        var end = self.target.lowerBound
        while end < self.target.upperBound, self.bytes[end] != UInt8(ascii: "?") { end += 1 }
        return self.target.lowerBound..<end
    }

    /// Whether the method is exactly `literal` (methods are case-sensitive).
    public func methodIs(_ literal: StaticString) -> Bool {
        self.equals(self.method, literal, ignoringCase: false)
    }

    /// Whether `range` holds `literal` (ASCII; optionally case-insensitive against a lower-case literal).
    public func equals(_ range: Range<Int>, _ literal: StaticString, ignoringCase: Bool) -> Bool {
        guard range.count == literal.utf8CodeUnitCount else { return false }
        let p = literal.utf8Start
        var i = 0
        for index in range {
            var byte = self.bytes[index]
            if ignoringCase, byte >= 0x41, byte <= 0x5A { byte |= 0x20 }
            if byte != p[i] { return false }
            i += 1
        }
        return true
    }

    /// The value of the first field named `name` (ASCII case-insensitive).
    public func value(named name: String) -> String? {
        var name = name
        return name.withUTF8 { wanted in
            for field in self.fields where field.name.count == wanted.count {
                var same = true
                var i = 0
                for index in field.name {
                    if Self.lower(self.bytes[index]) != Self.lower(wanted[i]) {
                        same = false
                        break
                    }
                    i += 1
                }
                if same { return self.string(field.value) }
            }
            return nil
        }
    }

    /// The first field of a kind.
    public func first(_ kind: Kind) -> Field? {
        self.fields.first { $0.kind == kind }
    }

    @inline(__always)
    static func lower(_ byte: UInt8) -> UInt8 {
        byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
    }
}

/// Why a head could not be parsed; `status` is what a server answers.
public struct HTTP1ParseError: Error, Sendable, CustomStringConvertible {
    public var status: Int
    public var description: String

    public init(_ status: Int, _ description: String) {
        self.status = status
        self.description = description
    }
}

/// Finds and parses message heads in a byte stream.
public struct HTTP1HeadParser: Sendable {
    public enum Kind: Sendable {
        case request
        case response
    }

    public let kind: Kind
    /// Largest head accepted (431 for requests beyond it).
    public let maxBytes: Int
    /// Where the search for the end of the head resumes (a head arriving byte by byte is
    /// scanned once, not once per byte).
    private var scanned = 0
    /// A head its user is done with (`recycle`): the next head is parsed into its storage.
    private var spare: HTTP1Head?

    public init(kind: Kind, maxBytes: Int) {
        self.kind = kind
        self.maxBytes = maxBytes
    }

    /// A head from the start of `buffer` if it is complete (and consumes it), nil if more bytes
    /// are needed. Throws on a malformed or oversized head.
    public mutating func parse(_ buffer: inout ByteBuffer) throws(HTTP1ParseError) -> HTTP1Head? {
        let found: Int? = buffer.withUnsafeReadableBytes { raw in
            // Empty lines before a request line are ignored (RFC 9112 2.2).
            var start = 0
            if self.kind == .request {
                while start + 1 < raw.count, raw[start] == 0x0D, raw[start + 1] == 0x0A { start += 2 }
            }
            // Each LF (found with memchr) ends the head if CR LF CR precede it. A bare LF is
            // refused at once (-1): waiting for a CR LF CR LF that never comes would hold the
            // connection until the header timeout.
            var i = max(self.scanned, start)
            while i < raw.count, let base = raw.baseAddress, let lf = memchr(base + i, 0x0A, raw.count - i) {
                i = base.distance(to: UnsafeRawPointer(lf))
                guard i > start, raw[i - 1] == 0x0D else { return -1 }
                if i >= start + 3, raw[i - 2] == 0x0A, raw[i - 3] == 0x0D { return i + 1 }
                i += 1
            }
            self.scanned = max(start, raw.count)
            return nil
        }
        if found == -1 {
            self.scanned = 0
            throw HTTP1ParseError(400, "a line of the head ends in a bare LF (HTTP/1.1 lines end in CR LF)")
        }
        guard let end = found else {
            if buffer.readableBytes > self.maxBytes {
                throw HTTP1ParseError(431, "request header fields exceed \(self.maxBytes) bytes")
            }
            return nil
        }
        if end > self.maxBytes { throw HTTP1ParseError(431, "request header fields exceed \(self.maxBytes) bytes") }
        self.scanned = 0
        // Into the storage of the recycled head if there is one, else new arrays.
        var bytes: [UInt8] = []
        var fields: [HTTP1Head.Field] = []
        if var spare = self.spare.take() {
            swap(&bytes, &spare.bytes)
            swap(&fields, &spare.fields)
            bytes.removeAll(keepingCapacity: true)
            fields.removeAll(keepingCapacity: true)
        }
        buffer.withUnsafeReadableBytes { bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: $0[..<end])) }
        buffer.moveReaderIndex(forwardBy: end)
        // `fields` moves into the head (a copy left behind would make its first append copy it).
        var head = HTTP1Head(bytes: bytes, fields: consume fields)
        try Self.parse(bytes, into: &head, kind: self.kind)
        return head
    }

    /// Gives back a head its user is done with (nothing else holds its storage), so that the next
    /// head is parsed without allocating.
    public mutating func recycle(_ head: consuming HTTP1Head) {
        self.spare = head
    }

    /// Parses a complete head (through its empty line).
    public static func parseHead(_ bytes: [UInt8], kind: Kind) throws(HTTP1ParseError) -> HTTP1Head {
        var head = HTTP1Head(bytes: bytes, fields: [])
        try Self.parse(bytes, into: &head, kind: kind)
        return head
    }

    /// Parses `bytes` (`head.bytes`, read through a second reference) into `head`.
    private static func parse(_ bytes: [UInt8], into head: inout HTTP1Head, kind: Kind) throws(HTTP1ParseError) {
        try bytes.withUnsafeBufferPointer { (b: UnsafeBufferPointer<UInt8>) throws(HTTP1ParseError) in
            try Self.parse(b, kind: kind, into: &head)
        }
    }

    private static func parse(_ bytes: UnsafeBufferPointer<UInt8>, kind: Kind, into head: inout HTTP1Head) throws(HTTP1ParseError) {
        var i = 0
        while kind == .request, i + 1 < bytes.count, bytes[i] == 0x0D, bytes[i + 1] == 0x0A { i += 2 }
        guard let lineEnd = Self.lineEnd(bytes, from: i) else { throw HTTP1ParseError(400, "malformed start line") }
        switch kind {
        case .request: try Self.requestLine(bytes, i..<lineEnd, into: &head)
        case .response: try Self.statusLine(bytes, i..<lineEnd, into: &head)
        }
        i = lineEnd + 2
        head.fields.reserveCapacity(12)
        var connectionTokens: [Range<Int>] = []
        var sawTransferEncoding = false
        var hosts = 0
        var firstLength: Range<Int>?
        while true {
            guard let end = Self.lineEnd(bytes, from: i) else { throw HTTP1ParseError(400, "malformed header line") }
            if end == i { break }
            let first = bytes[i]
            if first == 0x20 || first == 0x09 { throw HTTP1ParseError(400, "obsolete line folding is not accepted") }
            var colon = i
            while colon < end, bytes[colon] != UInt8(ascii: ":") {
                guard Self.isTokenByte(bytes[colon]) else {
                    throw HTTP1ParseError(400, "invalid character in a header name")
                }
                colon += 1
            }
            guard colon < end, colon > i else { throw HTTP1ParseError(400, "header line without a name and colon") }
            var valueStart = colon + 1
            var valueEnd = end
            while valueStart < valueEnd, bytes[valueStart] == 0x20 || bytes[valueStart] == 0x09 { valueStart += 1 }
            while valueEnd > valueStart, bytes[valueEnd - 1] == 0x20 || bytes[valueEnd - 1] == 0x09 { valueEnd -= 1 }
            // lineEnd stopped at the first CR or LF, so only other controls remain to refuse.
            var index = valueStart
            while index < valueEnd {
                let c = bytes[index]
                if (c < 0x20 && c != 0x09) || c == 0x7F { throw HTTP1ParseError(400, "invalid character in a header value") }
                index += 1
            }
            let name = i..<colon
            let value = valueStart..<valueEnd
            let fieldKind = Self.classify(bytes, name)
            head.fields.append(HTTP1Head.Field(name: name, value: value, kind: fieldKind))
            switch fieldKind {
            case .contentLength:
                try Self.contentLength(bytes, value, first: &firstLength, into: &head)
            case .transferEncoding:
                sawTransferEncoding = true
                try Self.transferEncoding(bytes, value, into: &head, kind: kind)
            case .expect:
                if Self.equals(bytes, value, "100-continue") { head.expectContinue = true }
            case .host:
                hosts += 1
            case .hopByHop where Self.equals(bytes, name, "connection"):
                Self.tokens(bytes, value) { token in
                    if Self.equals(bytes, token, "close") {
                        head.connectionClose = true
                    } else if Self.equals(bytes, token, "keep-alive") {
                        head.connectionKeepAlive = true
                    } else {
                        connectionTokens.append(token)
                    }
                }
            default:
                break
            }
            i = end + 2
        }
        // RFC 9112 3.2: an HTTP/1.1 request has exactly one Host (as nginx and HAProxy enforce).
        if kind == .request, hosts > 1 || (hosts == 0 && head.minorVersion >= 1) {
            throw HTTP1ParseError(400, hosts == 0 ? "an HTTP/1.1 request needs a Host header" : "more than one Host header")
        }
        if sawTransferEncoding {
            switch kind {
            case .request:
                if head.contentLength != nil {
                    throw HTTP1ParseError(400, "a request may not carry both Content-Length and Transfer-Encoding")
                }
                if head.minorVersion == 0 { throw HTTP1ParseError(400, "Transfer-Encoding is not defined for HTTP/1.0") }
            case .response:
                // Transfer-Encoding overrides Content-Length (RFC 9112 6.3); the connection is not reused.
                head.contentLength = nil
                if !head.chunked { head.connectionClose = true }
            }
        }
        if !connectionTokens.isEmpty {
            // Fields the Connection header names are hop-by-hop too.
            for index in head.fields.indices {
                let field = head.fields[index]
                for token in connectionTokens where token.count == field.name.count {
                    if zip(token, field.name).allSatisfy({ HTTP1Head.lower(bytes[$0]) == HTTP1Head.lower(bytes[$1]) }) {
                        head.fields[index].kind = .hopByHop
                    }
                }
            }
        }
    }

    /// Whether `range` holds `lower` ignoring ASCII case (`lower` is lower case).
    @inline(__always)
    static func equals(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ lower: StaticString) -> Bool {
        guard range.count == lower.utf8CodeUnitCount else { return false }
        let p = lower.utf8Start
        var i = 0
        for index in range {
            if HTTP1Head.lower(bytes[index]) != p[i] { return false }
            i += 1
        }
        return true
    }

    /// The index of the CR of the next CRLF at or after `from`; a bare LF is malformed (a stray
    /// CR inside the line is refused by the checks of names, targets and values).
    @inline(__always)
    static func lineEnd(_ bytes: UnsafeBufferPointer<UInt8>, from: Int) -> Int? {
        guard from < bytes.count, let base = bytes.baseAddress,
            let lf = memchr(base + from, 0x0A, bytes.count - from)
        else { return nil }
        let i = UnsafeRawPointer(base).distance(to: UnsafeRawPointer(lf))
        guard i > from, bytes[i - 1] == 0x0D else { return nil }
        return i - 1
    }

    static func requestLine(_ bytes: UnsafeBufferPointer<UInt8>, _ line: Range<Int>, into head: inout HTTP1Head) throws(HTTP1ParseError) {
        var i = line.lowerBound
        while i < line.upperBound, bytes[i] != 0x20 {
            guard Self.isTokenByte(bytes[i]) else { throw HTTP1ParseError(400, "invalid request method") }
            i += 1
        }
        guard i > line.lowerBound, i < line.upperBound else { throw HTTP1ParseError(400, "malformed request line") }
        head.method = line.lowerBound..<i
        let targetStart = i + 1
        var j = targetStart
        while j < line.upperBound, bytes[j] != 0x20 {
            guard bytes[j] > 0x20, bytes[j] < 0x7F else { throw HTTP1ParseError(400, "invalid character in the request target") }
            j += 1
        }
        guard j > targetStart, j < line.upperBound else { throw HTTP1ParseError(400, "malformed request line") }
        head.target = targetStart..<j
        let version = (j + 1)..<line.upperBound
        head.minorVersion = try Self.version(bytes, version)
        let first = bytes[targetStart]
        if first != UInt8(ascii: "/"), !(first == UInt8(ascii: "*") && head.target.count == 1) {
            // Absolute form (RFC 9112 3.2.2: a server must accept it): the path after the authority
            // is the target from here on (the router sets Host for the replica in any case).
            guard let scheme = Self.absoluteScheme(bytes, head.target) else {
                throw HTTP1ParseError(400, "the request target must be a path (origin form) or an absolute http(s) URL")
            }
            var path = targetStart + scheme
            while path < j, bytes[path] != UInt8(ascii: "/"), bytes[path] != UInt8(ascii: "?"), bytes[path] != UInt8(ascii: "#") { path += 1 }
            guard path > targetStart + scheme, path < j, bytes[path] == UInt8(ascii: "/") else {
                throw HTTP1ParseError(400, "an absolute-form target needs a host and a path")
            }
            head.target = path..<j
        }
        try Self.refuseDotSegments(bytes, head.target)
    }

    /// The length of `http://` or `https://` (any case) at the start of `range`, if there.
    static func absoluteScheme(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Int? {
        for (literal, length) in [("http://", 7), ("https://", 8)] where range.count > length {
            if zip(literal.utf8, bytes[range.lowerBound..<(range.lowerBound + length)]).allSatisfy({ $0 == HTTP1Head.lower($1) }) { return length }
        }
        return nil
    }

    /// A path with `.` or `..` segments (also percent-encoded: `%2e`) is refused: forwarded as it
    /// is, a replica or a proxy behind may resolve it to a path the router never routed.
    static func refuseDotSegments(_ bytes: UnsafeBufferPointer<UInt8>, _ target: Range<Int>) throws(HTTP1ParseError) {
        var i = target.lowerBound
        var segmentStart = i
        var dots = 0
        var other = false
        func check() throws(HTTP1ParseError) {
            if !other, dots == 1 || dots == 2, i > segmentStart { throw HTTP1ParseError(400, "dot-segments ('.' or '..') in the path are refused") }
        }
        while i < target.upperBound {
            let b = bytes[i]
            if b == UInt8(ascii: "?") || b == UInt8(ascii: "#") { break }
            if b == UInt8(ascii: "/") {
                try check()
                segmentStart = i + 1
                dots = 0
                other = false
            } else if b == UInt8(ascii: ".") {
                dots += 1
            } else if b == UInt8(ascii: "%"), i + 2 < target.upperBound, bytes[i + 1] == UInt8(ascii: "2"), HTTP1Head.lower(bytes[i + 2]) == UInt8(ascii: "e") {
                dots += 1
                i += 2
            } else {
                other = true
            }
            i += 1
        }
        try check()
    }

    static func statusLine(_ bytes: UnsafeBufferPointer<UInt8>, _ line: Range<Int>, into head: inout HTTP1Head) throws(HTTP1ParseError) {
        guard line.count >= 12, bytes[line.lowerBound + 8] == 0x20 else { throw HTTP1ParseError(502, "malformed status line") }
        head.minorVersion = try Self.version(bytes, line.lowerBound..<(line.lowerBound + 8))
        var status = 0
        for index in (line.lowerBound + 9)..<(line.lowerBound + 12) {
            let b = bytes[index]
            guard b >= 0x30, b <= 0x39 else { throw HTTP1ParseError(502, "malformed status code") }
            status = status * 10 + Int(b - 0x30)
        }
        guard status >= 100 else { throw HTTP1ParseError(502, "malformed status code") }
        head.status = status
        let reasonStart = line.lowerBound + 12
        if reasonStart < line.upperBound {
            guard bytes[reasonStart] == 0x20 else { throw HTTP1ParseError(502, "malformed status line") }
            head.reason = (reasonStart + 1)..<line.upperBound
        } else {
            head.reason = line.upperBound..<line.upperBound
        }
    }

    static func version(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) throws(HTTP1ParseError) -> Int {
        let s = range.lowerBound
        let isHTTP = range.count >= 5 && bytes[s] == 0x48 && bytes[s + 1] == 0x54 && bytes[s + 2] == 0x54 && bytes[s + 3] == 0x50 && bytes[s + 4] == 0x2F
        guard isHTTP, range.count == 8, bytes[s + 5] == 0x31, bytes[s + 6] == 0x2E else {
            if isHTTP {
                throw HTTP1ParseError(505, "only HTTP/1.0 and HTTP/1.1 are served")
            }
            throw HTTP1ParseError(400, "malformed HTTP version")
        }
        switch bytes[range.upperBound - 1] {
        case UInt8(ascii: "0"): return 0
        case UInt8(ascii: "1"): return 1
        default: throw HTTP1ParseError(505, "only HTTP/1.0 and HTTP/1.1 are served")
        }
    }

    /// A Content-Length field. Repeated values (in a list or in several fields) must be spelled
    /// alike (`5, 5` is 5; `096` next to `96` is refused, as h11 and the replicas behind do).
    static func contentLength(
        _ bytes: UnsafeBufferPointer<UInt8>, _ value: Range<Int>, first: inout Range<Int>?, into head: inout HTTP1Head
    ) throws(HTTP1ParseError) {
        var result: Int?
        var failed = false
        var sawEmpty = false
        var i = value.lowerBound
        // An empty element (`5,` or `,5`) is malformed too.
        while i <= value.upperBound {
            var end = i
            while end < value.upperBound, bytes[end] != UInt8(ascii: ",") { end += 1 }
            if !bytes[i..<end].contains(where: { $0 != 0x20 && $0 != 0x09 }) { sawEmpty = true }
            i = end + 1
        }
        if sawEmpty { throw HTTP1ParseError(400, "invalid Content-Length") }
        Self.tokens(bytes, value) { token in
            if let f = first {
                if !bytes[f].elementsEqual(bytes[token]) { failed = true }
            } else {
                first = token
            }
            var n = 0
            guard !token.isEmpty, token.count <= 15 else {
                failed = true
                return
            }
            for index in token {
                let b = bytes[index]
                guard b >= 0x30, b <= 0x39 else {
                    failed = true
                    return
                }
                n = n * 10 + Int(b - 0x30)
            }
            if let r = result, r != n { failed = true }
            result = n
        }
        guard !failed, let n = result else { throw HTTP1ParseError(400, "invalid Content-Length") }
        if let existing = head.contentLength, existing != n { throw HTTP1ParseError(400, "conflicting Content-Length values") }
        head.contentLength = n
    }

    static func transferEncoding(_ bytes: UnsafeBufferPointer<UInt8>, _ value: Range<Int>, into head: inout HTTP1Head, kind: Kind) throws(HTTP1ParseError) {
        var codings: [Range<Int>] = []
        Self.tokens(bytes, value) { codings.append($0) }
        guard let last = codings.last else { throw HTTP1ParseError(400, "empty Transfer-Encoding") }
        if kind == .request, codings.count == 1, codings[0].count != value.count {
            // `chunked,` or `,chunked`: a request's Transfer-Encoding is the one word (as h11 and the
            // replicas behind hold it), not a list with empty elements.
            throw HTTP1ParseError(400, "empty element in Transfer-Encoding")
        }
        if head.chunked {
            // chunked must be the final coding, applied once.
            throw HTTP1ParseError(400, "chunked applied more than once")
        }
        let isChunked = Self.equals(bytes, last, "chunked")
        if kind == .request {
            guard isChunked else { throw HTTP1ParseError(400, "a request's final transfer coding must be chunked") }
            guard codings.count == 1 else { throw HTTP1ParseError(501, "transfer codings other than chunked are not supported") }
        }
        head.chunked = isChunked
    }

    /// Comma-separated tokens of a field value, trimmed, empty ones skipped.
    static func tokens(_ bytes: UnsafeBufferPointer<UInt8>, _ value: Range<Int>, _ body: (Range<Int>) -> Void) {
        var i = value.lowerBound
        while i < value.upperBound {
            while i < value.upperBound, bytes[i] == 0x20 || bytes[i] == 0x09 || bytes[i] == UInt8(ascii: ",") { i += 1 }
            let start = i
            while i < value.upperBound, bytes[i] != UInt8(ascii: ",") { i += 1 }
            var end = i
            while end > start, bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09 { end -= 1 }
            if end > start { body(start..<end) }
        }
    }

    /// What a field is to a proxy, from its name (ASCII case-insensitive, switch on length).
    static func classify(_ bytes: UnsafeBufferPointer<UInt8>, _ name: Range<Int>) -> HTTP1Head.Kind {
        @inline(__always) func eq(_ literal: StaticString) -> Bool {
            let p = literal.utf8Start
            var i = 0
            for index in name {
                if HTTP1Head.lower(bytes[index]) != p[i] { return false }
                i += 1
            }
            return true
        }
        switch name.count {
        case 2: return eq("te") ? .hopByHop : .other
        case 4: return eq("host") ? .host : .other
        case 6: return eq("expect") ? .expect : .other
        case 9: return eq("x-api-key") ? .xAPIKey : eq("forwarded") ? .forwarded : .other
        case 7: return eq("trailer") || eq("upgrade") ? .hopByHop : .other
        case 10: return eq("connection") || eq("keep-alive") ? .hopByHop : .other
        case 12: return eq("content-type") ? .contentType : eq("x-request-id") ? .xRequestID : .other
        case 13: return eq("authorization") ? .authorization : .other
        case 14: return eq("content-length") ? .contentLength : .other
        case 15: return eq("x-forwarded-for") ? .xForwardedFor : .other
        case 16: return eq("proxy-connection") ? .hopByHop : .other
        case 17: return eq("transfer-encoding") ? .transferEncoding : eq("x-forwarded-proto") ? .xForwardedProto : .other
        case 18: return eq("proxy-authenticate") ? .hopByHop : .other
        case 19: return eq("proxy-authorization") ? .hopByHop : .other
        default: return .other
        }
    }

    /// tchar of RFC 9110 5.6.2, as a bit set over ASCII.
    @inline(__always)
    static func isTokenByte(_ b: UInt8) -> Bool {
        let low: UInt64 = 0x03FF_6CFA_0000_0000
        let high: UInt64 = 0x57FF_FFFF_C7FF_FFFE
        return b < 64 ? (low >> UInt64(b)) & 1 == 1 : b < 128 ? (high >> UInt64(b - 64)) & 1 == 1 : false
    }
}
