import CJSONScan

/// A malformed or unexpected JSON document, with the byte offset where reading stopped.
public struct JSONError: Error, Hashable, CustomStringConvertible, Sendable {
    public var message: String
    public var offset: Int

    public init(_ message: String, at offset: Int) {
        self.message = message
        self.offset = offset
    }

    public var description: String { "\(self.message) at byte \(self.offset)" }
}

/// The kind of the next JSON value, known from its first byte.
public enum JSONKind: Sendable, Equatable {
    case object, array, string, number, bool, null
}

/// A string value as it stands in the document: the bytes between its quotes, undecoded.
public struct JSONStringSpan: Sendable, Equatable {
    public var start: Int
    public var end: Int
    /// What the scan saw in the raw bytes (`CJS_*` flags).
    var flags: UInt32

    public init(start: Int, end: Int, flags: UInt32) {
        self.start = start
        self.end = end
        self.flags = flags
    }

    public var count: Int { self.end - self.start }

    /// Whether the raw bytes contain a backslash (so they differ from the decoded text).
    public var hasEscapes: Bool { self.flags & UInt32(CJS_ESCAPES) != 0 }
}

/// A pull reader over a JSON document in memory.
///
/// It never builds a tree: callers walk objects and arrays, read the few values they need and skip
/// the rest. Skipping a string looks for its closing quote 16 bytes at a time, so a 500 KB prompt
/// costs little more than a pass of `memchr`. The buffer must outlive the reader.
public struct JSONReader {
    public let buffer: UnsafeRawBufferPointer
    public var position: Int
    /// Nesting limit for anything read recursively (deeper documents are refused, never overflow the stack).
    public static let maximumDepth = 512

    public init(_ buffer: UnsafeRawBufferPointer, position: Int = 0) {
        self.buffer = buffer
        self.position = position
    }

    @inline(__always)
    var end: Int { self.buffer.count }

    @inline(__always)
    func byte(at index: Int) -> UInt8 {
        self.buffer.load(fromByteOffset: index, as: UInt8.self)
    }

    public func error(_ message: String) -> JSONError {
        JSONError(message, at: self.position)
    }

    // MARK: - Structure

    @inline(__always)
    public mutating func skipWhitespace() {
        while self.position < self.end {
            switch self.byte(at: self.position) {
            case 0x20, 0x0A, 0x0D, 0x09: self.position += 1
            default: return
            }
        }
    }

    /// The kind of the next value, after whitespace; throws at the end of input or on a byte no value starts with.
    public mutating func peekKind() throws(JSONError) -> JSONKind {
        self.skipWhitespace()
        guard self.position < self.end else { throw self.error("unexpected end of JSON") }
        switch self.byte(at: self.position) {
        case UInt8(ascii: "{"): return .object
        case UInt8(ascii: "["): return .array
        case UInt8(ascii: "\""): return .string
        case UInt8(ascii: "t"), UInt8(ascii: "f"): return .bool
        case UInt8(ascii: "n"): return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number
        default: throw self.error("unexpected character '\(Self.printable(self.byte(at: self.position)))'")
        }
    }

    @inline(__always)
    mutating func expect(_ byte: UInt8, _ what: String) throws(JSONError) {
        self.skipWhitespace()
        guard self.position < self.end, self.byte(at: self.position) == byte else {
            throw self.error("expected \(what)")
        }
        self.position += 1
    }

    /// Consumes `{`.
    public mutating func beginObject() throws(JSONError) {
        try self.expect(UInt8(ascii: "{"), "'{'")
    }

    /// Consumes `[`.
    public mutating func beginArray() throws(JSONError) {
        try self.expect(UInt8(ascii: "["), "'['")
    }

    /// The next member's key (its `:` consumed), or nil after consuming the closing `}`.
    /// `first` must start true for each object.
    public mutating func nextKey(first: inout Bool) throws(JSONError) -> JSONStringSpan? {
        self.skipWhitespace()
        guard self.position < self.end else { throw self.error("unterminated object") }
        let b = self.byte(at: self.position)
        if b == UInt8(ascii: "}") {
            self.position += 1
            return nil
        }
        if first {
            first = false
        } else {
            guard b == UInt8(ascii: ",") else { throw self.error("expected ',' or '}' in object") }
            self.position += 1
            self.skipWhitespace()
        }
        guard self.position < self.end, self.byte(at: self.position) == UInt8(ascii: "\"") else {
            throw self.error("expected a string key")
        }
        let key = try self.readStringSpan()
        try self.expect(UInt8(ascii: ":"), "':' after key")
        return key
    }

    /// True when another element follows (positioned at it), false after consuming the closing `]`.
    public mutating func nextElement(first: inout Bool) throws(JSONError) -> Bool {
        self.skipWhitespace()
        guard self.position < self.end else { throw self.error("unterminated array") }
        let b = self.byte(at: self.position)
        if b == UInt8(ascii: "]") {
            self.position += 1
            return false
        }
        if first {
            first = false
        } else {
            guard b == UInt8(ascii: ",") else { throw self.error("expected ',' or ']' in array") }
            self.position += 1
        }
        self.skipWhitespace()
        return true
    }

    /// Requires that only whitespace remains.
    public mutating func expectEnd() throws(JSONError) {
        self.skipWhitespace()
        guard self.position == self.end else { throw self.error("unexpected data after the JSON value") }
    }

    // MARK: - Scalars

    /// Reads a string value and returns the span of its raw bytes, validating nothing but its end.
    public mutating func readStringSpan() throws(JSONError) -> JSONStringSpan {
        try self.expect(UInt8(ascii: "\""), "a string")
        let start = self.position
        let scan = cjs_scan_string(self.buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), start, self.end)
        guard scan.end < self.end else {
            self.position = start
            throw self.error("unterminated string")
        }
        self.position = scan.end + 1
        return JSONStringSpan(start: start, end: scan.end, flags: scan.flags)
    }

    /// Reads a number and returns its span, checked against the JSON grammar.
    public mutating func readNumberSpan() throws(JSONError) -> Range<Int> {
        self.skipWhitespace()
        let start = self.position
        var i = start
        func digits(_ i: inout Int) -> Int {
            let s = i
            while i < self.end, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self.byte(at: i)) { i += 1 }
            return i - s
        }
        if i < self.end, self.byte(at: i) == UInt8(ascii: "-") { i += 1 }
        let intStart = i
        let intDigits = digits(&i)
        guard intDigits > 0 else { throw self.error("invalid number") }
        if intDigits > 1, self.byte(at: intStart) == UInt8(ascii: "0") { throw self.error("invalid number (leading zero)") }
        if i < self.end, self.byte(at: i) == UInt8(ascii: ".") {
            i += 1
            guard digits(&i) > 0 else { throw self.error("invalid number") }
        }
        if i < self.end, self.byte(at: i) | 0x20 == UInt8(ascii: "e") {
            i += 1
            if i < self.end, self.byte(at: i) == UInt8(ascii: "+") || self.byte(at: i) == UInt8(ascii: "-") { i += 1 }
            guard digits(&i) > 0 else { throw self.error("invalid number") }
        }
        self.position = i
        return start..<i
    }

    /// Reads an integer that fits in Int64.
    public mutating func readInteger() throws(JSONError) -> Int64 {
        let at = self.position
        let span = try self.readNumberSpan()
        var value: Int64 = 0
        var negative = false
        for i in span {
            let b = self.byte(at: i)
            if b == UInt8(ascii: "-") {
                negative = true
                continue
            }
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) else {
                throw JSONError("expected an integer", at: at)
            }
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int64(b &- UInt8(ascii: "0")))
            guard !o1, !o2 else { throw JSONError("integer out of range", at: at) }
            value = a
        }
        return negative ? -value : value
    }

    /// Reads a number as a Double (integers and decimals; exponent form included).
    public mutating func readDouble() throws(JSONError) -> Double {
        let at = self.position
        let span = try self.readNumberSpan()
        var text = ""
        text.reserveCapacity(span.count)
        for i in span { text.unicodeScalars.append(Unicode.Scalar(self.byte(at: i))) }
        guard let value = Double(text) else { throw JSONError("invalid number", at: at) }
        return value
    }

    /// Reads `true` or `false`.
    public mutating func readBool() throws(JSONError) -> Bool {
        self.skipWhitespace()
        if self.matchLiteral("true") { return true }
        if self.matchLiteral("false") { return false }
        throw self.error("expected true or false")
    }

    /// Consumes `null` if it is next; true when it did.
    public mutating func readNullIfPresent() throws(JSONError) -> Bool {
        self.skipWhitespace()
        return self.matchLiteral("null")
    }

    mutating func matchLiteral(_ literal: StaticString) -> Bool {
        let n = literal.utf8CodeUnitCount
        guard self.position + n <= self.end else { return false }
        let p = literal.utf8Start
        for k in 0..<n where self.byte(at: self.position + k) != p[k] { return false }
        self.position += n
        return true
    }

    /// Skips one value of any kind, however deep, without recursion.
    public mutating func skipValue() throws(JSONError) {
        var depth = 0
        repeat {
            self.skipWhitespace()
            guard self.position < self.end else { throw self.error("unexpected end of JSON") }
            let b = self.byte(at: self.position)
            switch b {
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                self.position += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                guard depth > 0 else { throw self.error("unexpected '\(Self.printable(b))'") }
                depth -= 1
                self.position += 1
            case UInt8(ascii: ","), UInt8(ascii: ":"):
                guard depth > 0 else { throw self.error("unexpected '\(Self.printable(b))'") }
                self.position += 1
            case UInt8(ascii: "\""):
                _ = try self.readStringSpan()
            case UInt8(ascii: "t"), UInt8(ascii: "f"), UInt8(ascii: "n"):
                guard self.matchLiteral("true") || self.matchLiteral("false") || self.matchLiteral("null") else {
                    throw self.error("invalid literal")
                }
            default:
                _ = try self.readNumberSpan()
            }
        } while depth > 0
    }

    /// Reads a string value and appends its canonical form (see `CanonicalString`) in one pass.
    public mutating func appendCanonicalString(to out: inout [UInt8], decodeEscapes: Bool = false) throws(JSONError) {
        let span = try self.readStringSpan()
        try CanonicalString.append(span, of: self.buffer, to: &out, decodeEscapes: decodeEscapes)
    }

    /// The raw document bytes of a span.
    public func bytes(_ span: JSONStringSpan) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: self.buffer[span.start..<span.end])
    }

    /// Whether the raw key equals `literal` (keys with escapes never match: the fields read here are plain ASCII).
    @inline(__always)
    public func key(_ span: JSONStringSpan, equals literal: StaticString) -> Bool {
        let n = literal.utf8CodeUnitCount
        guard !span.hasEscapes, span.count == n else { return false }
        let p = literal.utf8Start
        for k in 0..<n where self.byte(at: span.start + k) != p[k] { return false }
        return true
    }

    /// Whether the raw span equals the bytes of `text`.
    public func span(_ span: JSONStringSpan, equals text: [UInt8]) -> Bool {
        guard !span.hasEscapes, span.count == text.count else { return false }
        for k in 0..<text.count where self.byte(at: span.start + k) != text[k] { return false }
        return true
    }

    /// Whether the raw bytes of a string span start with `text` (ASCII; no escapes in the prefix).
    public func span(_ span: JSONStringSpan, hasPrefix text: [UInt8]) -> Bool {
        guard span.count >= text.count else { return false }
        for k in 0..<text.count where self.byte(at: span.start + k) != text[k] { return false }
        return true
    }

    /// The decoded text of a string span (escapes resolved; invalid input throws).
    public func decodeString(_ span: JSONStringSpan) throws(JSONError) -> String {
        if !span.hasEscapes {
            // The scan already checked the UTF-8 (`CJS_BAD_UTF8`): decode without validating again.
            guard span.flags & UInt32(CJS_BAD_UTF8) == 0 else { throw JSONError("invalid UTF-8 in string", at: span.start) }
            return String(decoding: self.bytes(span).assumingMemoryBound(to: UInt8.self), as: UTF8.self)
        }
        var canonical: [UInt8] = []
        canonical.reserveCapacity(span.count)
        try CanonicalString.append(span, of: self.buffer, to: &canonical, decodeEscapes: true)
        return String(decoding: canonical, as: UTF8.self)
    }

    static func printable(_ b: UInt8) -> String {
        (0x20..<0x7F).contains(b) ? String(UnicodeScalar(b)) : "\\x" + String(b, radix: 16)
    }
}
