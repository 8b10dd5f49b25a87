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
