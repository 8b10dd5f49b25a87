import NIOCore

/// Reads the chunked transfer coding (RFC 9112 section 7.1), handing out each chunk's data as
/// slices of the input (no copy). Extensions and trailers are read and dropped; trailer lines are
/// held to the rules of head fields (a token name, a colon, no obsolete folding, no control
/// characters in the value), so that a body's end is read the same way by every strict parser.
public struct ChunkedDecoder: Sendable {
    enum State: Sendable {
        case size
        /// Whitespace after the size: only a `;` extension or the line end may follow.
        case sizeWhitespace
        case sizeExtension
        case sizeLF
        case data(Int)
        case dataCR
        case dataLF
        /// At the start of a trailer line (or the empty line that ends the body).
        case trailerStart
        case trailerName
        case trailerValue
        case trailerLF
        case finalLF
        case done
    }

    private var state = State.size
    private var size = 0
    private var digits = 0
    /// Bytes of framing lines (sizes, extensions, trailers) since the last data: bounded.
    private var lineBytes = 0
    static let maxLineBytes = 16 << 10

    public init() {}

    public var isDone: Bool {
        if case .done = self.state { return true }
        return false
    }

    /// Consumes from `buffer`; `payload` gets each piece of chunk data. Returns true once the
    /// last chunk and trailers have been read (the rest of `buffer` belongs to the next message).
    public mutating func decode(_ buffer: inout ByteBuffer, payload: (ByteBuffer) -> Void) throws(HTTP1ParseError) -> Bool {
        while buffer.readableBytes > 0 {
            if case .data(let remaining) = self.state {
                let n = min(remaining, buffer.readableBytes)
                payload(buffer.readSlice(length: n)!)
                self.state = remaining == n ? .dataCR : .data(remaining - n)
                continue
            }
            if case .done = self.state { return true }
            let byte = buffer.readInteger(as: UInt8.self)!
            self.lineBytes += 1
            if self.lineBytes > Self.maxLineBytes { throw HTTP1ParseError(400, "chunk framing line too long") }
            switch self.state {
            case .size:
                if let v = Self.hexValue(byte) {
                    self.digits += 1
                    guard self.digits <= 15 else { throw HTTP1ParseError(400, "chunk size too large") }
                    self.size = self.size << 4 | v
                } else if self.digits > 0, byte == UInt8(ascii: ";") {
                    self.state = .sizeExtension
                } else if self.digits > 0, byte == 0x20 || byte == 0x09 {
                    self.state = .sizeWhitespace
                } else if self.digits > 0, byte == 0x0D {
                    self.state = .sizeLF
                } else {
                    throw HTTP1ParseError(400, "malformed chunk size")
                }
            case .sizeWhitespace:
                if byte == UInt8(ascii: ";") {
                    self.state = .sizeExtension
                } else if byte == 0x0D {
                    self.state = .sizeLF
                } else if byte != 0x20, byte != 0x09 {
                    throw HTTP1ParseError(400, "junk after a chunk size")
                }
            case .sizeExtension:
                if byte == 0x0D { self.state = .sizeLF } else if byte == 0x0A { throw HTTP1ParseError(400, "bare LF in chunk framing") }
            case .sizeLF:
                guard byte == 0x0A else { throw HTTP1ParseError(400, "malformed chunk size line") }
                if self.size == 0 {
                    self.state = .trailerStart
                } else {
                    self.state = .data(self.size)
                    self.lineBytes = 0
                }
                self.size = 0
                self.digits = 0
            case .dataCR:
                guard byte == 0x0D else { throw HTTP1ParseError(400, "chunk data longer than its size") }
                self.state = .dataLF
            case .dataLF:
                guard byte == 0x0A else { throw HTTP1ParseError(400, "chunk data longer than its size") }
                self.state = .size
            case .trailerStart:
                if byte == 0x0D {
                    self.state = .finalLF
                } else if byte == 0x20 || byte == 0x09 {
                    throw HTTP1ParseError(400, "obsolete line folding is not accepted")
                } else if HTTP1HeadParser.isTokenByte(byte) {
                    self.state = .trailerName
                } else {
                    throw HTTP1ParseError(400, "malformed chunk trailer")
                }
            case .trailerName:
                if byte == UInt8(ascii: ":") {
                    self.state = .trailerValue
                } else if !HTTP1HeadParser.isTokenByte(byte) {
                    throw HTTP1ParseError(400, byte == 0x0D || byte == 0x0A ? "trailer line without a colon" : "invalid character in a trailer name")
                }
            case .trailerValue:
                if byte == 0x0D {
                    self.state = .trailerLF
                } else if byte == 0x0A {
                    throw HTTP1ParseError(400, "bare LF in chunk trailer")
                } else if (byte < 0x20 && byte != 0x09) || byte == 0x7F {
                    throw HTTP1ParseError(400, "invalid character in a trailer value")
                }
            case .trailerLF:
                guard byte == 0x0A else { throw HTTP1ParseError(400, "malformed chunk trailer") }
                self.state = .trailerStart
            case .finalLF:
                guard byte == 0x0A else { throw HTTP1ParseError(400, "malformed end of chunked body") }
                self.state = .done
                return true
            case .data, .done:
                break
            }
        }
        return self.isDone
    }

    @inline(__always)
    static func hexValue(_ b: UInt8) -> Int? {
        switch b {
        case 0x30...0x39: return Int(b - 0x30)
        case 0x41...0x46: return Int(b - 0x41 + 10)
        case 0x61...0x66: return Int(b - 0x61 + 10)
        default: return nil
        }
    }
}

/// How a message body is delimited, and the reading of it.
public enum BodyReader: Sendable {
    /// No body (or its end was reached).
    case none
    /// Content-Length: bytes still to come.
    case length(Int)
    case chunked(ChunkedDecoder)
    /// A response without length: the body ends when the connection closes.
    case untilClose

    /// The framing of a request body (RFC 9112 6.3: no length and no chunked means none).
    public static func request(_ head: HTTP1Head) -> BodyReader {
        if head.chunked { return .chunked(ChunkedDecoder()) }
        if let n = head.contentLength, n > 0 { return .length(n) }
        return .none
    }

    /// The framing of a response to a request with `method` (RFC 9112 6.3).
    public static func response(_ head: HTTP1Head, requestIsHead: Bool) -> BodyReader {
        if requestIsHead || head.status == 204 || head.status == 304 || head.status < 200 { return .none }
        if head.chunked { return .chunked(ChunkedDecoder()) }
        if let n = head.contentLength { return n > 0 ? .length(n) : .none }
        return .untilClose
    }

    public var isComplete: Bool {
        if case .none = self { return true }
        return false
    }

    /// Consumes body bytes from `buffer`, handing each piece to `payload`. Returns true when the
    /// body is complete; what is left in `buffer` then belongs to the next message.
    public mutating func read(_ buffer: inout ByteBuffer, payload: (ByteBuffer) -> Void) throws(HTTP1ParseError) -> Bool {
        switch self {
        case .none:
            return true
        case .length(let remaining):
            let n = min(remaining, buffer.readableBytes)
            if n > 0 { payload(buffer.readSlice(length: n)!) }
            if n == remaining {
                self = .none
                return true
            }
            self = .length(remaining - n)
            return false
        case .chunked(var decoder):
            self = .none
            let done = try decoder.decode(&buffer, payload: payload)
            self = done ? .none : .chunked(decoder)
            return done
        case .untilClose:
            if buffer.readableBytes > 0 { payload(buffer.readSlice(length: buffer.readableBytes)!) }
            return false
        }
    }
}
