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
        let base = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
        // The scan validated the raw UTF-8; where it is invalid, that is the error (unless a
        // control byte or a bad escape comes first: see below).
        let badUTF8 = span.flags & UInt32(CJS_BAD_UTF8) != 0 ? cjs_validate_utf8(base, span.start, span.end) : nil
        let needsWalk = span.flags & UInt32(CJS_CONTROL) != 0 || span.flags & UInt32(CJS_REWRITE) != 0
            || (decodeEscapes && span.hasEscapes)
        if !needsWalk {
            // Already canonical (the common case): copied as one run.
            if let badUTF8 { throw JSONError("invalid UTF-8 in string", at: badUTF8) }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[span.start..<span.end]))
            return
        }
        // Rewritten in C into room at the end of `out` (never longer than the JSON), then trimmed.
        // The room is made by appending the raw bytes (a memcpy), which the rewrite overwrites.
        let start = out.count
        let room = span.end - span.start
        out.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[span.start..<span.end]))
        let result = out.withUnsafeMutableBufferPointer { o in
            cjs_canonicalize(base, span.start, span.end, o.baseAddress! + start, decodeEscapes ? 1 : 0)
        }
        out.removeLast(room - result.written)
        if let badUTF8, Int(result.error) == CJS_CANONICAL_OK || badUTF8 < result.at {
            throw JSONError("invalid UTF-8 in string", at: badUTF8)
        }
        if Int(result.error) != CJS_CANONICAL_OK { throw Self.error(result) }
    }

    /// The error `cjs_canonicalize` stopped at.
    static func error(_ r: cjs_canonical_result) -> JSONError {
        let at = r.at
        switch Int(r.error) {
        case CJS_CANONICAL_CONTROL: return JSONError("control character U+00\(hexByte(r.byte)) in string must be escaped", at: at)
        case CJS_CANONICAL_ESCAPE_AT_END: return JSONError("invalid escape at end of string", at: at)
        case CJS_CANONICAL_BAD_ESCAPE: return JSONError("invalid escape '\\\(JSONReader.printable(r.byte))'", at: at)
        case CJS_CANONICAL_TRUNCATED_U: return JSONError("truncated \\u escape", at: at)
        case CJS_CANONICAL_BAD_HEX: return JSONError("invalid hex digit in \\u escape", at: at)
        case CJS_CANONICAL_LONE_HIGH: return JSONError("lone high surrogate in \\u escape", at: at)
        case CJS_CANONICAL_HIGH_WITHOUT_LOW: return JSONError("high surrogate not followed by a low surrogate", at: at)
        default: return JSONError("lone low surrogate in \\u escape", at: at)
        }
    }

    /// Appends the canonical escape of a byte a JSON string cannot hold raw: a quote, a backslash
    /// or a control byte (`cjs_canonicalize` writes the same escapes).
    static func appendEscaped(_ byte: UInt8, to out: inout [UInt8]) {
        switch byte {
        case 0x22: out.append(contentsOf: [0x5C, 0x22])
        case 0x5C: out.append(contentsOf: [0x5C, 0x5C])
        case 0x08: out.append(contentsOf: [0x5C, UInt8(ascii: "b")])
        case 0x0C: out.append(contentsOf: [0x5C, UInt8(ascii: "f")])
        case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
        case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
        case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
        default:
            out.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30])
            out.append(contentsOf: Array(hexByte(byte).utf8))
        }
    }
}

@inline(__always)
func hexByte(_ b: UInt8) -> String {
    let digits: [Character] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f"]
    return String([digits[Int(b >> 4)], digits[Int(b & 0xF)]])
}
