/// A JSON document as a value, for the places where convenience beats speed: `explain` output,
/// admin endpoints, tests, trace files. Objects keep their member order.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([Member])

    public struct Member: Sendable, Equatable {
        public var key: String
        public var value: JSONValue

        public init(_ key: String, _ value: JSONValue) {
            self.key = key
            self.value = value
        }
    }

    /// An object from ordered pairs.
    public static func object(_ pairs: KeyValuePairs<String, JSONValue>) -> JSONValue {
        .object(pairs.map { Member($0.key, $0.value) })
    }

    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.last(where: { $0.key == key })?.value
    }

    public subscript(index: Int) -> JSONValue? {
        guard case .array(let items) = self, items.indices.contains(index) else { return nil }
        return items[index]
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var intValue: Int64? {
        switch self {
        case .int(let i): return i
        case .double(let d) where d.rounded() == d && abs(d) < 9e18: return Int64(d)
        default: return nil
        }
    }

    public var doubleValue: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }

    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var objectValue: [Member]? {
        if case .object(let m) = self { return m }
        return nil
    }

    // MARK: - Parsing

    /// Parses a whole document.
    public static func parse(_ bytes: some Collection<UInt8>) throws(JSONError) -> JSONValue {
        let array = Array(bytes)
        let result: Result<JSONValue, JSONError> = array.withUnsafeBytes { raw in
            guard raw.count > 0 else { return .failure(JSONError("empty document", at: 0)) }
            var reader = JSONReader(raw)
            do throws(JSONError) {
                let value = try Self.read(&reader, depth: 0)
                try reader.expectEnd()
                return .success(value)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// Parses a whole document given as text.
    public static func parse(_ text: String) throws(JSONError) -> JSONValue {
        try Self.parse(Array(text.utf8))
    }

    /// Reads one value from a reader.
    public static func read(_ reader: inout JSONReader, depth: Int = 0) throws(JSONError) -> JSONValue {
        guard depth < JSONReader.maximumDepth else { throw reader.error("JSON nested too deeply") }
        switch try reader.peekKind() {
        case .null:
            _ = try reader.readNullIfPresent()
            return .null
        case .bool:
            return .bool(try reader.readBool())
        case .string:
            let span = try reader.readStringSpan()
            return .string(try reader.decodeString(span))
        case .number:
            let start = reader.position
            let range = try reader.readNumberSpan()
            let isInteger = !range.contains { i in
                let b = reader.buffer[i]
                return b == UInt8(ascii: ".") || b == UInt8(ascii: "e") || b == UInt8(ascii: "E")
            }
            if isInteger, range.count < 19 {
                reader.position = start
                return .int(try reader.readInteger())
            }
            reader.position = start
            return .double(try reader.readDouble())
        case .array:
            try reader.beginArray()
            var items: [JSONValue] = []
            var first = true
            while try reader.nextElement(first: &first) {
                items.append(try Self.read(&reader, depth: depth + 1))
            }
            return .array(items)
        case .object:
            try reader.beginObject()
            var members: [Member] = []
            var first = true
            while let key = try reader.nextKey(first: &first) {
                let name = try reader.decodeString(key)
                members.append(Member(name, try Self.read(&reader, depth: depth + 1)))
            }
            return .object(members)
        }
    }

    // MARK: - Writing

    /// The compact JSON text.
    public var serialized: String {
        var out: [UInt8] = []
        self.write(to: &out, indent: nil, level: 0)
        return String(decoding: out, as: UTF8.self)
    }

    /// Indented JSON text (two spaces), for people.
    public var pretty: String {
        var out: [UInt8] = []
        self.write(to: &out, indent: 2, level: 0)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the compact JSON bytes.
    public func write(to out: inout [UInt8]) {
        self.write(to: &out, indent: nil, level: 0)
    }

    func write(to out: inout [UInt8], indent: Int?, level: Int) {
        func newline(_ level: Int) {
            guard let indent else { return }
            out.append(0x0A)
            out.append(contentsOf: repeatElement(UInt8(ascii: " "), count: indent * level))
        }
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .int(let i): out.append(contentsOf: String(i).utf8)
        case .double(let d): JSONWriter.appendNumber(d, to: &out)
        case .string(let s): JSONWriter.appendString(s, to: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (n, item) in items.enumerated() {
                if n > 0 { out.append(UInt8(ascii: ",")) }
                newline(level + 1)
                item.write(to: &out, indent: indent, level: level + 1)
            }
            if !items.isEmpty { newline(level) }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (n, member) in members.enumerated() {
                if n > 0 { out.append(UInt8(ascii: ",")) }
                newline(level + 1)
                JSONWriter.appendString(member.key, to: &out)
                out.append(UInt8(ascii: ":"))
                if indent != nil { out.append(UInt8(ascii: " ")) }
                member.value.write(to: &out, indent: indent, level: level + 1)
            }
            if !members.isEmpty { newline(level) }
            out.append(UInt8(ascii: "}"))
        }
    }
}

/// Low-level JSON output helpers, for hot paths that write bytes directly.
public enum JSONWriter {
    /// Appends `s` as a JSON string literal (quotes, minimal escaping, UTF-8 kept raw).
    public static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { utf8 in
            var runStart = 0
            for (i, b) in utf8.enumerated() where b < 0x20 || b == 0x22 || b == 0x5C {
                out.append(contentsOf: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(utf8)[runStart..<i]))
                CanonicalString.appendEscaped(b, to: &out)
                runStart = i + 1
            }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(utf8)[runStart...]))
        }
        out.append(UInt8(ascii: "\""))
    }

    /// Appends a number; non-finite values become `null`, integral values print without a fraction.
    public static func appendNumber(_ d: Double, to out: inout [UInt8]) {
        guard d.isFinite else {
            out.append(contentsOf: "null".utf8)
            return
        }
        if d.rounded() == d, abs(d) < 1e15 {
            out.append(contentsOf: String(Int64(d)).utf8)
        } else {
            out.append(contentsOf: d.description.utf8)
        }
    }
}
