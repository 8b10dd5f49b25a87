/// Canonical JSON: the same value always gives the same bytes.
///
/// Object members are sorted by key (for a repeated key the last one wins, as in Python's
/// `json.loads`), insignificant whitespace is dropped, strings use `CanonicalString`, numbers and
/// literals keep their spelling. Array order is kept: it is meaning (the order of tools, of parts).
public enum CanonicalJSON {
    /// Reads one value from `reader` and appends its canonical form to `out`.
    public static func appendValue(
        _ reader: inout JSONReader,
        to out: inout [UInt8],
        depth: Int = 0
    ) throws(JSONError) {
        guard depth < JSONReader.maximumDepth else { throw reader.error("JSON nested too deeply") }
        switch try reader.peekKind() {
        case .string:
            out.append(UInt8(ascii: "\""))
            try reader.appendCanonicalString(to: &out)
            out.append(UInt8(ascii: "\""))
        case .number:
            let range = try reader.readNumberSpan()
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: reader.buffer[range]))
        case .bool:
            let value = try reader.readBool()
            out.append(contentsOf: value ? Array("true".utf8) : Array("false".utf8))
        case .null:
            _ = try reader.readNullIfPresent()
            out.append(contentsOf: Array("null".utf8))
        case .array:
            try reader.beginArray()
            out.append(UInt8(ascii: "["))
            var first = true
            var wrote = false
            while try reader.nextElement(first: &first) {
                if wrote { out.append(UInt8(ascii: ",")) }
                wrote = true
                try Self.appendValue(&reader, to: &out, depth: depth + 1)
            }
            out.append(UInt8(ascii: "]"))
        case .object:
            try reader.beginObject()
            var members: [(key: [UInt8], order: Int, valueAt: Int)] = []
            var first = true
            while let keySpan = try reader.nextKey(first: &first) {
                var key: [UInt8] = []
                key.reserveCapacity(keySpan.count)
                try CanonicalString.append(keySpan, of: reader.buffer, to: &key)
                reader.skipWhitespace()
                members.append((key, members.count, reader.position))
                try reader.skipValue()
            }
            members.sort { $0.key == $1.key ? $0.order < $1.order : $0.key.lexicographicallyPrecedes($1.key) }
            out.append(UInt8(ascii: "{"))
            var wrote = false
            for (index, member) in members.enumerated() {
                if index + 1 < members.count, members[index + 1].key == member.key { continue }
                if wrote { out.append(UInt8(ascii: ",")) }
                wrote = true
                out.append(UInt8(ascii: "\""))
                out.append(contentsOf: member.key)
                out.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
                var sub = JSONReader(reader.buffer, position: member.valueAt)
                try Self.appendValue(&sub, to: &out, depth: depth + 1)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// Reads one value and appends its canonical form, leaving out the member `dropped` when the
    /// value is an object (at its top level only; Anthropic's `cache_control` marks where a
    /// client's cache breakpoint is and must not change the content's bytes). Returns whether the
    /// member was there.
    @discardableResult
    public static func appendValue(_ reader: inout JSONReader, to out: inout [UInt8], dropping dropped: [UInt8]) throws(JSONError) -> Bool {
        guard try reader.peekKind() == .object else {
            try Self.appendValue(&reader, to: &out)
            return false
        }
        let start = reader.position
        try reader.beginObject()
        var found = false
        var first = true
        while let keySpan = try reader.nextKey(first: &first) {
            if reader.span(keySpan, equals: dropped) { found = true }
            try reader.skipValue()
        }
        var sub = JSONReader(reader.buffer, position: start)
        guard found else {
            try Self.appendValue(&sub, to: &out)
            return false
        }
        // Rare: write the object without the member.
        try sub.beginObject()
        var members: [(key: [UInt8], order: Int, valueAt: Int)] = []
        first = true
        while let keySpan = try sub.nextKey(first: &first) {
            if sub.span(keySpan, equals: dropped) {
                try sub.skipValue()
                continue
            }
            var key: [UInt8] = []
            try CanonicalString.append(keySpan, of: sub.buffer, to: &key)
            sub.skipWhitespace()
            members.append((key, members.count, sub.position))
            try sub.skipValue()
        }
        members.sort { $0.key == $1.key ? $0.order < $1.order : $0.key.lexicographicallyPrecedes($1.key) }
        out.append(UInt8(ascii: "{"))
        var wrote = false
        for (index, member) in members.enumerated() {
            if index + 1 < members.count, members[index + 1].key == member.key { continue }
            if wrote { out.append(UInt8(ascii: ",")) }
            wrote = true
            out.append(UInt8(ascii: "\""))
            out.append(contentsOf: member.key)
            out.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
            var value = JSONReader(sub.buffer, position: member.valueAt)
            try Self.appendValue(&value, to: &out, depth: 1)
        }
        out.append(UInt8(ascii: "}"))
        return true
    }

    /// The canonical bytes of a whole document.
    public static func canonicalize(_ bytes: [UInt8]) throws(JSONError) -> [UInt8] {
        var out: [UInt8] = []
        let result: Result<Void, JSONError> = bytes.withUnsafeBytes { raw in
            var reader = JSONReader(raw)
            do throws(JSONError) {
                try Self.appendValue(&reader, to: &out)
                try reader.expectEnd()
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
        return out
    }
}
