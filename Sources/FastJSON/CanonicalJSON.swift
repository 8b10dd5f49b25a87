/// Canonical JSON: the same value always gives the same bytes.
///
/// Object members are sorted by key (for a repeated key the last one wins, as in Python's
/// `json.loads`), insignificant whitespace is dropped, strings use `CanonicalString`, numbers and
/// literals keep their spelling. Array order is kept: it is meaning (the order of tools, of parts).
public enum CanonicalJSON {
    /// Reads one value from `reader` and appends its canonical form to `out`, in time linear in
    /// its size however it nests: each byte is read once, and written once more at most (when an
    /// object's keys came out of order).
    public static func appendValue(
        _ reader: inout JSONReader,
        to out: inout [UInt8],
        depth: Int = 0
    ) throws(JSONError) {
        let start = out.count
        var unordered: [Int: [Member]] = [:]
        try Self.appendValue(&reader, to: &out, depth: depth, unordered: &unordered)
        if !unordered.isEmpty { Self.putInOrder(&out, from: start, unordered) }
    }

    /// A member as written: its key (without quotes) and the whole `"key":value`, in `out`.
    typealias Member = (key: Range<Int>, bytes: Range<Int>)

    /// Writes members in the order they come; an object whose keys were out of order (or
    /// repeated) is recorded in `unordered` by where its `{` is, and put in order once the
    /// whole value is written (`putInOrder`): sorting it in place at every level would copy a deep
    /// value once per level.
    static func appendValue(
        _ reader: inout JSONReader,
        to out: inout [UInt8],
        depth: Int,
        unordered: inout [Int: [Member]]
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
                try Self.appendValue(&reader, to: &out, depth: depth + 1, unordered: &unordered)
            }
            out.append(UInt8(ascii: "]"))
        case .object:
            try Self.appendObject(&reader, to: &out, depth: depth, unordered: &unordered, dropping: nil)
        }
    }

    /// An object, in one pass: members are written in the order they come, each value
    /// canonicalized as it is read (never skipped and read again, which cost a pass per level of
    /// nesting); members named `dropped` are left out. Returns whether one was.
    @discardableResult
    static func appendObject(
        _ reader: inout JSONReader,
        to out: inout [UInt8],
        depth: Int,
        unordered: inout [Int: [Member]],
        dropping dropped: [UInt8]?
    ) throws(JSONError) -> Bool {
        try reader.beginObject()
        out.append(UInt8(ascii: "{"))
        let objectStart = out.count
        var members: [(key: Range<Int>, bytes: Range<Int>)] = []
        var ordered = true
        var found = false
        var first = true
        while let keySpan = try reader.nextKey(first: &first) {
            if let dropped, reader.span(keySpan, equals: dropped) {
                found = true
                try reader.skipValue()
                continue
            }
            if !members.isEmpty { out.append(UInt8(ascii: ",")) }
            let start = out.count
            out.append(UInt8(ascii: "\""))
            try CanonicalString.append(keySpan, of: reader.buffer, to: &out)
            let key = (start + 1)..<out.count
            out.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
            try Self.appendValue(&reader, to: &out, depth: depth + 1, unordered: &unordered)
            if ordered, let last = members.last, !out[last.key].lexicographicallyPrecedes(out[key]) { ordered = false }
            members.append((key, start..<out.count))
        }
        // Recorded by where its '{' is (its first member starts right after).
        if !ordered { unordered[objectStart - 1] = members }
        out.append(UInt8(ascii: "}"))
        return found
    }

    /// Rewrites `out` from `start` with every recorded object's members in key order (of a
    /// repeated key the last one stays): one copy of the bytes, each object sorted once.
    static func putInOrder(_ out: inout [UInt8], from start: Int, _ unordered: [Int: [Member]]) {
        let starts = unordered.keys.sorted()
        var result: [UInt8] = []
        result.reserveCapacity(out.count - start)
        /// The '{' of the first recorded object at or after `i`.
        func next(_ i: Int) -> Int? {
            var (lo, hi) = (0, starts.count)
            while lo < hi {
                let mid = (lo + hi) / 2
                if starts[mid] < i { lo = mid + 1 } else { hi = mid }
            }
            return lo < starts.count ? starts[lo] : nil
        }
        func emit(_ range: Range<Int>) {
            var i = range.lowerBound
            while let brace = next(i), brace < range.upperBound {
                result.append(contentsOf: out[i...brace])
                let members = unordered[brace]!
                let order = members.indices.sorted { a, b in
                    let (ka, kb) = (out[members[a].key], out[members[b].key])
                    return ka.elementsEqual(kb) ? a < b : ka.lexicographicallyPrecedes(kb)
                }
                var wrote = false
                for (n, index) in order.enumerated() {
                    if n + 1 < order.count, out[members[order[n + 1]].key].elementsEqual(out[members[index].key]) { continue }
                    if wrote { result.append(UInt8(ascii: ",")) }
                    wrote = true
                    emit(members[index].bytes)
                }
                // On past the members (nested records are inside them); the '}' follows.
                i = members.last!.bytes.upperBound
            }
            result.append(contentsOf: out[i..<range.upperBound])
        }
        emit(start..<out.count)
        out.replaceSubrange(start..<out.count, with: result)
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
        let start = out.count
        var unordered: [Int: [Member]] = [:]
        let found = try Self.appendObject(&reader, to: &out, depth: 0, unordered: &unordered, dropping: dropped)
        if !unordered.isEmpty { Self.putInOrder(&out, from: start, unordered) }
        return found
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
