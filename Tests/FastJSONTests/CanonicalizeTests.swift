import FastJSON
import Foundation
import Testing

/// `cjs_canonicalize` (behind `JSONReader.appendCanonicalString`) against Foundation's JSON decoder
/// on random string bodies full of escapes: the decoded text must be the decoder's, and the
/// canonical form must be the decoded text with minimal escaping (`JSONWriter.appendString`).
struct CanonicalizeTests {
    static let pieces: [String] = [
        "a", "plain words ", "\\n", "\\t", "\\r", "\\b", "\\f", "\\\"", "\\\\", "\\/", "\\u00e9", "\\u00E9",
        "\\u0041", "\\u0000", "\\u001f", "\\u0022", "\\u005c", "\\u000a", "\\u007f", "\\u20ac", "\\u2028",
        "\\ud83d\\ude00", "\\uD834\\uDD1E", "é", "日本", "😀", "\\u65e5",
        // An escaped backslash before a letter that would start an escape: plain text.
        "\\\\u", "\\\\/", "\\\\x", "\\\\\\\\",
    ]
    /// Pieces that make a string invalid.
    static let invalid: [String] = ["\\x", "\\u12", "\\ud800", "\\udc00", "\\u12G4", "\\'", "\\U0041"]

    func body(_ state: inout UInt64, pieces count: Int) -> String {
        var out = ""
        for _ in 0..<count {
            state = SplitMixForTests.next(state)
            out += Self.pieces[Int(state % UInt64(Self.pieces.count))]
        }
        return out
    }

    /// (decoded, canonical) through our reader, for the JSON string `"body"`.
    func ours(_ body: String) throws -> (String, [UInt8]) {
        let json = Array("\"\(body)\"".utf8)
        return try json.withUnsafeBytes { raw in
            var reader = JSONReader(raw)
            let span = try reader.readStringSpan()
            let decoded = try reader.decodeString(span)
            var canonical: [UInt8] = []
            var again = JSONReader(raw)
            try again.appendCanonicalString(to: &canonical)
            return (decoded, canonical)
        }
    }

    @Test func decodedAndCanonicalFormsMatchFoundation() throws {
        var state: UInt64 = 11
        for round in 0..<2000 {
            let body = self.body(&state, pieces: 1 + round % 40)
            let expected = try JSONDecoder().decode(String.self, from: Data("\"\(body)\"".utf8))
            var minimal: [UInt8] = []
            JSONWriter.appendString(expected, to: &minimal)
            let (decoded, canonical) = try self.ours(body)
            #expect(decoded == expected, "decoded, round \(round): \(body)")
            #expect(canonical == Array(minimal.dropFirst().dropLast()), "canonical, round \(round): \(body)")
            if decoded != expected || canonical != Array(minimal.dropFirst().dropLast()) { return }
        }
    }

    @Test func acceptsExactlyWhatFoundationAccepts() {
        var state: UInt64 = 3
        for round in 0..<2000 {
            var body = self.body(&state, pieces: 1 + round % 12)
            state = SplitMixForTests.next(state)
            if state % 2 == 0 { body += Self.invalid[Int(state >> 8) % Self.invalid.count] + self.body(&state, pieces: 2) }
            let foundation = (try? JSONDecoder().decode(String.self, from: Data("\"\(body)\"".utf8))) != nil
            let accepted = (try? self.ours(body)) != nil
            #expect(accepted == foundation, "round \(round): \(body)")
            if accepted != foundation { return }
        }
    }

    @Test func badEscapesAreErrorsWithTheirPosition() {
        let cases: [(String, String, Int)] = [
            (#"ab\x"#, "invalid escape", 3),
            (#"ab\u12"#, "truncated", 3),
            (#"ab\u12g4"#, "hex digit", 7),
            (#"\ud800x"#, "lone high surrogate", 1),
            (#"\ud800\u0041"#, "not followed by a low surrogate", 1),
            (#"a\udc00"#, "lone low surrogate", 2),
            ("a\u{01}\\u00e9", "control character U+0001", 2),
        ]
        for (body, message, at) in cases {
            do {
                _ = try self.ours(body)
                Issue.record("\(body) was accepted")
            } catch let error as JSONError {
                #expect(error.message.contains(message) && error.offset == at, "\(body): \(error)")
            } catch {
                Issue.record("\(body): \(error)")
            }
        }
    }
}
