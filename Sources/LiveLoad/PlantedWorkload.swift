import FastJSON

/// Requests of eight tenants whose system prompts (2-6 KB) break prefix caching in three planted
/// ways: tenant A puts a per-request timestamp at byte ~100, tenant B a request UUID at byte
/// ~1500, tenant C sends its 12 tools in a new order each time; the other five are clean. The
/// prefix diagnostics must name exactly those three (`cacheroute analyze`, `/admin/prefixes`).
public enum PlantedWorkload {
    static let words = Array(
        "the of and to in is you that it he was for on are as with his they at be this have from or one had by word but not what all were we when your can said there use an each which she do how their if will up other about out many then them these so some her would make like him into time has look two more write go see number no way could people my than first water been call who oil its now find long down day did get come made may part"
            .split(separator: " "))

    /// Deterministic prose of about `bytes` bytes, different per `seed`.
    static func prose(_ bytes: Int, seed: UInt64) -> String {
        var x = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        var out = ""
        while out.utf8.count < bytes {
            x ^= x << 13
            x ^= x >> 7
            x ^= x << 17
            out += Self.words[Int(x % UInt64(Self.words.count))] + (x % 11 == 0 ? ". " : " ")
        }
        return out
    }

    /// A per-request value of a kind (deterministic from `n`).
    static func uuid(_ n: Int) -> String {
        var x = UInt64(n + 1) &* 0xD6E8_FEB8_6659_FD93
        var hex = ""
        for i in 0..<32 {
            x ^= x >> 29
            x = x &* 0xBF58_476D_1CE4_E5B9
            hex += String(Int(x & 0xF), radix: 16)
            if [7, 11, 15, 19].contains(i) { hex += "-" }
        }
        return hex
    }

    static func timestamp(_ n: Int) -> String {
        let s = 1_796_000_000 + n * 37
        return "2026-12-03T\(10 + (s / 3600) % 10):\(10 + (s / 60) % 50):\(10 + s % 50).\(100 + n % 900)Z"
    }

    /// Byte offsets the spans are planted at in each tenant's system prompt.
    public static let timestampOffset = 100
    public static let uuidOffset = 1500
    /// A string no request carries but in its prompts: checked against memory and logs.
    public static let marker = "ZQXJ-PLANTED-MARKER-7731"

    /// `count` chat bodies, tenants interleaved: (tenant, body).
    public static func requests(_ count: Int) -> [(tenant: String, body: [UInt8])] {
        let tenants = ["A", "B", "C", "D", "E", "F", "G", "H"]
        var out: [(String, [UInt8])] = []
        for n in 0..<count {
            let t = n % tenants.count
            let name = tenants[t]
            let size = 2048 + t * 512
            var system = "[\(Self.marker)] " + Self.prose(size, seed: UInt64(t + 1))
            if name == "A" { system = Self.insert(Self.timestamp(n), at: Self.timestampOffset, in: system) }
            if name == "B" { system = Self.insert(Self.uuid(n), at: Self.uuidOffset, in: system) }
            var tools: [JSONValue] = []
            if name == "C" {
                var order = Array(0..<12)
                var x = UInt64(n + 7) &* 0x2545_F491_4F6C_DD1D
                for i in stride(from: order.count - 1, to: 0, by: -1) {
                    x ^= x << 13
                    x ^= x >> 7
                    x ^= x << 17
                    order.swapAt(i, Int(x % UInt64(i + 1)))
                }
                tools = order.map { k in
                    .object([
                        "type": .string("function"),
                        "function": .object([
                            "name": .string("tool_\(k)"), "description": .string(Self.prose(120, seed: UInt64(100 + k))),
                            "parameters": .object(["type": .string("object"), "properties": .object(["q": .object(["type": .string("string")])])]),
                        ]),
                    ])
                }
            }
            var body: [JSONValue.Member] = [
                .init("model", .string("cacheroute-demo")), .init("max_tokens", .int(1)),
                .init(
                    "messages",
                    .array([
                        .object(["role": .string("system"), "content": .string(system)]),
                        .object(["role": .string("user"), "content": .string("Question \(n) from tenant \(name)?")]),
                    ])),
            ]
            if !tools.isEmpty { body.append(.init("tools", .array(tools))) }
            var bytes: [UInt8] = []
            JSONValue.object(body).write(to: &bytes)
            out.append((name, bytes))
        }
        return out
    }

    /// `value` as a word of its own at the first word boundary from `offset`.
    static func insert(_ value: String, at offset: Int, in text: String) -> String {
        var i = text.utf8.index(text.utf8.startIndex, offsetBy: min(offset, text.utf8.count))
        while i < text.utf8.endIndex, text.utf8[i] != UInt8(ascii: " ") { i = text.utf8.index(after: i) }
        if i < text.utf8.endIndex { i = text.utf8.index(after: i) }
        return String(text[..<i]) + value + " " + String(text[i...])
    }
}
