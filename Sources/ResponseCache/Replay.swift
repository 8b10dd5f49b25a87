import FastJSON
import RoutingCore

/// A stored answer as a client gets it: the same bytes, with a fresh id and creation time.
///
/// A stream replays byte for byte but for those two (every event, in order, with its framing and
/// `[DONE]`). A JSON answer also says in its usage that its whole prompt was cached.
public enum Replay {
    /// A fresh id in the shape of `old`: its prefix (through the first `-` or `_`, e.g.
    /// `chatcmpl-`, `resp_`, `msg_`), `cache`, and 24 random hex digits.
    public static func freshID(like old: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        if let cut = old.firstIndex(where: { $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") }), cut < 24 { out += old[...cut] }
        out += Array("cache".utf8)
        var rng = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef".utf8)
        for _ in 0..<24 { out.append(digits[Int(rng.next() & 0xF)]) }
        return out
    }

    /// The body a client gets for `answer`.
    public static func body(_ answer: CachedAnswer, api: RequestAPI, id: [UInt8], now: Int) -> [UInt8] {
        var out = Self.rewrite(answer.body, oldID: answer.id, newID: id, oldCreated: answer.created, now: now)
        if answer.form == .json, var doc = try? JSONValue.parse(out) {
            Self.markCached(&doc, api: api)
            out.removeAll(keepingCapacity: true)
            doc.write(to: &out)
        }
        return out
    }

    /// The events of a stream body, each with its terminator (for paced replay).
    public static func events(_ body: [UInt8]) -> [ArraySlice<UInt8>] {
        SSEEvents.whole(body)
    }

    /// Replaces the quoted id and every `"created":N` / `"created_at":N` with the old value.
    static func rewrite(_ body: [UInt8], oldID: [UInt8], newID: [UInt8], oldCreated: [UInt8], now: Int) -> [UInt8] {
        var patterns: [(from: [UInt8], to: [UInt8], digitAfter: Bool)] = []
        if !oldID.isEmpty { patterns.append(([0x22] + oldID + [0x22], [0x22] + newID + [0x22], true)) }
        if !oldCreated.isEmpty {
            let fresh = Array(String(now).utf8)
            patterns.append((Array("\"created\":".utf8) + oldCreated, Array("\"created\":".utf8) + fresh, false))
            patterns.append((Array("\"created_at\":".utf8) + oldCreated, Array("\"created_at\":".utf8) + fresh, false))
        }
        guard !patterns.isEmpty else { return body }
        var out: [UInt8] = []
        out.reserveCapacity(body.count + 64)
        var i = 0
        let n = body.count
        scan: while i < n {
            if body[i] == 0x22 {
                for p in patterns where i + p.from.count <= n && body[i] == p.from[0] {
                    var match = true
                    for k in 1..<p.from.count where body[i + k] != p.from[k] {
                        match = false
                        break
                    }
                    // A number pattern must end where the number ends.
                    if match, !p.digitAfter, i + p.from.count < n, (0x30...0x39).contains(body[i + p.from.count]) { match = false }
                    if match {
                        out += p.to
                        i += p.from.count
                        continue scan
                    }
                }
            }
            out.append(body[i])
            i += 1
        }
        return out
    }

    /// Usage that says the whole prompt came from a cache.
    static func markCached(_ doc: inout JSONValue, api: RequestAPI) {
        guard case .object(var members) = doc, let u = members.lastIndex(where: { $0.key == "usage" }), case .object(var usage) = members[u].value else {
            return
        }
        func set(_ members: inout [JSONValue.Member], _ key: String, _ value: JSONValue) {
            if let i = members.lastIndex(where: { $0.key == key }) { members[i].value = value } else { members.append(.init(key, value)) }
        }
        func int(_ key: String) -> Int64? { usage.last(where: { $0.key == key })?.value.intValue }
        switch api {
        case .chat, .completions, .generate:
            guard let prompt = int("prompt_tokens") else { return }
            set(&usage, "prompt_tokens_details", .object(["cached_tokens": .int(prompt)]))
        case .responses:
            guard let input = int("input_tokens") else { return }
            set(&usage, "input_tokens_details", .object(["cached_tokens": .int(input)]))
        case .messages:
            let input = int("input_tokens") ?? 0
            let read = int("cache_read_input_tokens") ?? 0
            let created = int("cache_creation_input_tokens") ?? 0
            set(&usage, "input_tokens", .int(0))
            set(&usage, "cache_creation_input_tokens", .int(0))
            set(&usage, "cache_read_input_tokens", .int(input + read + created))
        }
        members[u].value = .object(usage)
        doc = .object(members)
    }
}
