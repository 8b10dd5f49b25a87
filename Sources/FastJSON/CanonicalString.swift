import CJSONScan

/// The one spelling of a JSON string's text that cacheroute keys on.
///
/// Two encoders write the same text differently (`\u00e9` or `é`, `\/` or `/`, `\u000a` or `\n`);
/// the engine decodes both to the same characters and caches them alike, so the router must too.
/// The canonical form is the minimal JSON escaping (what `json.dumps(ensure_ascii=False)` writes):
/// `\"`, `\\`, `\b \f \n \r \t`, `\u00xx` for other control characters, everything else as raw
/// UTF-8. It is a bijection of the decoded text, so it never merges two different texts, and text
/// already in that form (the common case) is copied as one run.
///
/// Reading also validates: raw control characters, invalid escapes, lone surrogates and invalid
/// UTF-8 are errors, because the engine rejects such a body.
public enum CanonicalString {
    /// Appends the canonical form of `span` (or, with `decodeEscapes`, the fully decoded UTF-8 text).
    public static func append(
        _ span: JSONStringSpan,
        of buffer: UnsafeRawBufferPointer,
        to out: inout [UInt8],
        decodeEscapes: Bool = false
    ) throws(JSONError) {
        let needsWalk = span.flags & UInt32(CJS_CONTROL) != 0 || span.flags & UInt32(CJS_REWRITE) != 0
            || (decodeEscapes && span.hasEscapes)
        if !needsWalk {
            // Already canonical (the common case): validate any UTF-8, then copy as one run.
            if span.flags & UInt32(CJS_BAD_UTF8) != 0 {
                let bad = cjs_validate_utf8(buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), span.start, span.end)
                throw JSONError("invalid UTF-8 in string", at: bad)
            }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[span.start..<span.end]))
            return
        }
        _ = try Self.scan(buffer, from: span.start, limit: span.end, to: &out, decodeEscapes: decodeEscapes)
    }

    /// Canonicalizes string-body bytes from `start` until an unescaped `"` or `limit`, appending to
    /// `out`; returns the index where it stopped. One pass: finding the end and copying are the same walk.
    @inline(__always)
    static func scan(
        _ buffer: UnsafeRawBufferPointer,
        from start: Int,
        limit end: Int,
        to out: inout [UInt8],
        decodeEscapes: Bool
    ) throws(JSONError) -> Int {
        let base = buffer.baseAddress!
        var runStart = start
        var i = start

        @inline(__always)
        func flush(_ upTo: Int, _ out: inout [UInt8]) {
            if upTo > runStart {
                out.append(contentsOf: UnsafeRawBufferPointer(start: base + runStart, count: upTo - runStart))
            }
        }

        while i < end {
            i = ByteScan.special(base, from: i, end: end, allEscapes: decodeEscapes)
            if i >= end { break }
            let b = buffer[i]
            if b == UInt8(ascii: "\"") {
                // The end, unless an odd run of backslashes escapes it.
                var k = i
                while k > start, buffer[k - 1] == UInt8(ascii: "\\") { k -= 1 }
                if (i - k) & 1 == 0 { break }
                i += 1
                continue
            }
            if b >= 0x80 {
                i = try Self.validateUTF8Sequence(buffer, at: i, end: end)
                continue
            }
            if b < 0x20 {
                throw JSONError("control character U+00\(hexByte(b)) in string must be escaped", at: i)
            }
            if b != UInt8(ascii: "\\") {
                i += 1  // an ordinary byte in the last 16, walked one at a time
                continue
            }
            // A backslash: the second half of an escaped backslash is an ordinary byte.
            if Self.isEscaped(buffer, i, start) {
                i += 1
                continue
            }
            guard i + 1 < end else { throw JSONError("invalid escape at end of string", at: i) }
            let e = buffer[i + 1]
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                if decodeEscapes {
                    flush(i, &out)
                    out.append(Self.unescapedByte(e))
                    runStart = i + 2
                }
                i += 2
            case UInt8(ascii: "/"):
                flush(i, &out)
                out.append(UInt8(ascii: "/"))
                i += 2
                runStart = i
            case UInt8(ascii: "u"):
                let at = i
                var scalar = try Self.hex4(buffer, at: i + 2, end: end)
                var next = i + 6
                if (0xD800...0xDBFF).contains(scalar) {
                    guard next + 6 <= end, buffer[next] == UInt8(ascii: "\\"), buffer[next + 1] == UInt8(ascii: "u")
                    else { throw JSONError("lone high surrogate in \\u escape", at: at) }
                    let low = try Self.hex4(buffer, at: next + 2, end: end)
                    guard (0xDC00...0xDFFF).contains(low) else {
                        throw JSONError("high surrogate not followed by a low surrogate", at: at)
                    }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    next += 6
                } else if (0xDC00...0xDFFF).contains(scalar) {
                    throw JSONError("lone low surrogate in \\u escape", at: at)
                }
                flush(i, &out)
                if decodeEscapes {
                    Self.appendUTF8(scalar, to: &out)
                } else {
                    Self.appendCanonical(scalar, to: &out)
                }
                i = next
                runStart = i
            default:
                throw JSONError("invalid escape '\\\(JSONReader.printable(e))'", at: i)
            }
        }
        let stop = min(i, end)
        flush(stop, &out)
        return stop
    }

    /// Whether the backslash at `i` is itself escaped (an odd run of backslashes before it).
    @inline(__always)
    static func isEscaped(_ buffer: UnsafeRawBufferPointer, _ i: Int, _ start: Int) -> Bool {
        var k = i
        while k > start, buffer[k - 1] == UInt8(ascii: "\\") { k -= 1 }
        return (i - k) & 1 == 1
    }

    /// Appends the canonical (minimally escaped) form of one scalar.
    @inline(__always)
    static func appendCanonical(_ scalar: UInt32, to out: inout [UInt8]) {
        switch scalar {
        case 0x22: out.append(contentsOf: [0x5C, 0x22])
        case 0x5C: out.append(contentsOf: [0x5C, 0x5C])
        case 0x08: out.append(contentsOf: [0x5C, UInt8(ascii: "b")])
        case 0x0C: out.append(contentsOf: [0x5C, UInt8(ascii: "f")])
        case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
        case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
        case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
        case 0..<0x20:
            out.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30])
            out.append(contentsOf: Array(hexByte(UInt8(scalar)).utf8))
        default: Self.appendUTF8(scalar, to: &out)
        }
    }

    @inline(__always)
    static func appendUTF8(_ scalar: UInt32, to out: inout [UInt8]) {
        switch scalar {
        case 0..<0x80:
            out.append(UInt8(scalar))
        case 0x80..<0x800:
            out.append(UInt8(0xC0 | (scalar >> 6)))
            out.append(UInt8(0x80 | (scalar & 0x3F)))
        case 0x800..<0x10000:
            out.append(UInt8(0xE0 | (scalar >> 12)))
            out.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (scalar & 0x3F)))
        default:
            out.append(UInt8(0xF0 | (scalar >> 18)))
            out.append(UInt8(0x80 | ((scalar >> 12) & 0x3F)))
            out.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (scalar & 0x3F)))
        }
    }

    static func unescapedByte(_ e: UInt8) -> UInt8 {
        switch e {
        case UInt8(ascii: "b"): 0x08
        case UInt8(ascii: "f"): 0x0C
        case UInt8(ascii: "n"): 0x0A
        case UInt8(ascii: "r"): 0x0D
        case UInt8(ascii: "t"): 0x09
        default: e
        }
    }

    static func hex4(_ buffer: UnsafeRawBufferPointer, at i: Int, end: Int) throws(JSONError) -> UInt32 {
        guard i + 4 <= end else { throw JSONError("truncated \\u escape", at: i - 2) }
        var v: UInt32 = 0
        for k in 0..<4 {
            let c = buffer[i + k]
            let d: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw JSONError("invalid hex digit in \\u escape", at: i + k)
            }
            v = v << 4 | d
        }
        return v
    }

    /// Validates the UTF-8 sequence that starts at `i` and returns the index after it.
    @inline(__always)
    static func validateUTF8Sequence(_ buffer: UnsafeRawBufferPointer, at i: Int, end: Int) throws(JSONError) -> Int {
        let lead = buffer[i]
        let count: Int
        var low: UInt8 = 0x80
        var high: UInt8 = 0xBF
        switch lead {
        case 0xC2...0xDF: count = 2
        case 0xE0: count = 3; low = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: count = 3
        case 0xED: count = 3; high = 0x9F
        case 0xF0: count = 4; low = 0x90
        case 0xF1...0xF3: count = 4
        case 0xF4: count = 4; high = 0x8F
        default: throw JSONError("invalid UTF-8 byte 0x\(hexByte(lead))", at: i)
        }
        guard i + count <= end else { throw JSONError("truncated UTF-8 sequence", at: i) }
        let second = buffer[i + 1]
        guard second >= low, second <= high else { throw JSONError("invalid UTF-8 sequence", at: i) }
        for k in 2..<count where buffer[i + k] & 0xC0 != 0x80 {
            throw JSONError("invalid UTF-8 sequence", at: i)
        }
        return i + count
    }
}

@inline(__always)
func hexByte(_ b: UInt8) -> String {
    let digits: [Character] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f"]
    return String([digits[Int(b >> 4)], digits[Int(b & 0xF)]])
}
