import FastJSON
import Testing

struct CanonicalJSONTests {
    func canonical(_ text: String) throws -> String {
        String(decoding: try CanonicalJSON.canonicalize(Array(text.utf8)), as: UTF8.self)
    }

    @Test func sortsKeysAndDropsWhitespace() throws {
        #expect(try self.canonical(#"{ "b" : 1 , "a" : [ 1 , { "d":true, "c":null } ] }"#) == #"{"a":[1,{"c":null,"d":true}],"b":1}"#)
    }

    @Test func keyOrderAndWhitespaceMerge() throws {
        let a = #"[{"type":"function","function":{"name":"get","parameters":{"type":"object","properties":{"x":{"type":"string"}}}}}]"#
        let b = """
            [ { "function" : { "parameters" : { "properties" : { "x" : { "type" : "string" } }, "type" : "object" },
                "name" : "get" }, "type" : "function" } ]
            """
        #expect(try self.canonical(a) == self.canonical(b))
    }

    @Test func arrayOrderIsMeaning() throws {
        #expect(try self.canonical("[1,2]") != self.canonical("[2,1]"))
    }

    @Test func lastDuplicateKeyWins() throws {
        #expect(try self.canonical(#"{"a":1,"a":2}"#) == #"{"a":2}"#)
    }

    @Test(arguments: [
        (#""\u00e9""#, "\"é\""),
        (#""\/""#, "\"/\""),
        (#""\u000a""#, #""\n""#),
        (#""\u0001""#, #""\u0001""#),
        (#""\u0022\u005c""#, #""\"\\""#),
        (#""\ud83d\ude00""#, "\"😀\""),
        (#""\t\b\f\r""#, #""\t\b\f\r""#),
    ])
    func stringsHaveOneSpelling(input: String, expected: String) throws {
        #expect(try self.canonical(input) == expected)
    }

    @Test(arguments: [
        #""\ud800""#,  // lone high surrogate
        #""\udc00""#,  // lone low surrogate
        #""\x""#,  // invalid escape
        "\"a\u{01}b\"",  // raw control character
        #""abc"#,  // unterminated
        "{\"a\" 1}",
        "[1,]",
        "01",
        "tru",
    ])
    func rejectsInvalid(input: String) {
        #expect(throws: JSONError.self) { try self.canonical(input) }
    }

    @Test func rejectsInvalidUTF8() {
        for bytes: [UInt8] in [[0x22, 0xC3, 0x28, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], [0x22, 0xF8, 0x22], [0x22, 0xE2, 0x82, 0x22]] {
            #expect(throws: JSONError.self) { try CanonicalJSON.canonicalize(bytes) }
        }
    }

    @Test func deepNestingIsRefusedNotCrashed() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: JSONError.self) { try self.canonical(deep) }
        // Skipping (no recursion) handles any depth.
        let bytes = Array(deep.utf8)
        bytes.withUnsafeBytes { raw in
            var reader = JSONReader(raw)
            #expect(throws: Never.self) { try reader.skipValue() }
        }
    }

    @Test func valueRoundTrip() throws {
        let value = try JSONValue.parse(#"{"a":[1,2.5,"x\n",null,true],"b":{"c":-3}}"#)
        #expect(value["a"]?[1]?.doubleValue == 2.5)
        #expect(value["b"]?["c"]?.intValue == -3)
        #expect(try JSONValue.parse(value.serialized) == value)
        #expect(value.serialized == #"{"a":[1,2.5,"x\n",null,true],"b":{"c":-3}}"#)
    }
}

/// Canonical JSON of randomly nested objects, written with shuffled keys, repeated keys and
/// whitespace, against a reference built from the values themselves.
@Suite struct CanonicalJSONOrderTests {
    struct Rng {
        var state: UInt64
        mutating func next(_ n: Int) -> Int {
            self.state = self.state &* 6364136223846793005 &+ 1442695040888963407
            return Int((self.state >> 33) % UInt64(n))
        }
    }

    /// A random value: (a spelling of it, its canonical form).
    static func value(_ r: inout Rng, depth: Int) -> (text: String, canonical: String) {
        switch depth > 6 ? r.next(3) : r.next(6) {
        case 0: let n = r.next(1000); return ("\(n)", "\(n)")
        case 1: let s = "\"s\(r.next(50))\""; return (s, s)
        case 2: let s = r.next(2) == 0 ? "true" : "null"; return (s, s)
        case 3:
            let count = r.next(4)
            let items = (0..<count).map { _ in Self.value(&r, depth: depth + 1) }
            return ("[ " + items.map(\.text).joined(separator: " , ") + " ]", "[" + items.map(\.canonical).joined(separator: ",") + "]")
        default:
            var members: [(key: String, value: (text: String, canonical: String))] = []
            for _ in 0..<(1 + r.next(5)) { members.append(("k\(r.next(8))", Self.value(&r, depth: depth + 1))) }
            // The last of a repeated key wins; canonical order is by key.
            var last: [String: String] = [:]
            for m in members { last[m.key] = m.value.canonical }
            let canonical = "{" + last.keys.sorted().map { "\"\($0)\":\(last[$0]!)" }.joined(separator: ",") + "}"
            return ("{ " + members.map { "\"\($0.key)\" : \($0.value.text)" }.joined(separator: " ,\n ") + " }", canonical)
        }
    }

    @Test func shuffledRepeatedAndNestedKeysCanonicalizeLikeTheReference() throws {
        var r = Rng(state: 42)
        for _ in 0..<2000 {
            let (text, canonical) = Self.value(&r, depth: 0)
            let got = try CanonicalJSON.canonicalize(Array(text.utf8))
            #expect(String(decoding: got, as: UTF8.self) == canonical, "\(text)")
        }
    }
}
