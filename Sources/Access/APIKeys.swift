/// The API keys clients may present, each naming a tenant. Only SHA-256 digests are kept; a key
/// is found by the first bytes of its digest and confirmed by comparing the whole digest in
/// constant time, so neither the keys nor the timing of a comparison give a key away.
public struct APIKeys: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var digest: [UInt8]
        public var tenant: String
    }

    var buckets: [UInt64: [Entry]] = [:]
    public private(set) var count = 0
    /// The tenants the keys name, sorted (bounded: they come from the file).
    public private(set) var tenants: [String] = []

    public init() {}

    /// Keys and their tenants, in file order. A repeated key keeps its first tenant.
    public init(_ pairs: [(key: String, tenant: String)]) {
        var tenants = Set<String>()
        for (key, tenant) in pairs {
            let digest = SHA256.hash(key.utf8)
            let bucket = Self.bucket(digest)
            guard !(self.buckets[bucket]?.contains { SHA256.constantTimeEqual($0.digest, digest) } ?? false) else { continue }
            self.buckets[bucket, default: []].append(Entry(digest: digest, tenant: tenant))
            self.count += 1
            tenants.insert(tenant)
        }
        self.tenants = tenants.sorted()
    }

    static func bucket(_ digest: [UInt8]) -> UInt64 {
        var value: UInt64 = 0
        for i in 0..<8 { value = value << 8 | UInt64(digest[i]) }
        return value
    }

    /// The tenant of `key`, or nil when it is not one of the keys.
    public func tenant(of key: some Collection<UInt8>) -> String? {
        let digest = SHA256.hash(key)
        var found: String?
        for entry in self.buckets[Self.bucket(digest)] ?? [] where SHA256.constantTimeEqual(entry.digest, digest) {
            found = entry.tenant
        }
        return found
    }

    /// Reads a keys file: YAML-like `- {key: ..., tenant: ...}` lines (or `- key: ...` with
    /// `tenant: ...` on the next line), or plain lines with one key each (tenant `default`).
    /// Blank lines and `#` comments are skipped. Throws with the line of the first problem.
    public static func parse(_ text: String) throws(KeysFileError) -> APIKeys {
        var pairs: [(key: String, tenant: String)] = []
        var pending: (key: String?, tenant: String?, line: Int)?
        func flush() throws(KeysFileError) {
            guard let p = pending else { return }
            pending = nil
            guard let key = p.key else { throw KeysFileError(line: p.line, message: "an entry without a 'key'") }
            pairs.append((key, p.tenant ?? "default"))
        }
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = n + 1
            var s = Substring(raw)
            if let hash = s.firstIndex(of: "#"), s[..<hash].allSatisfy({ $0 == " " || $0 == "\t" }) || s[s.index(before: hash)] == " " {
                s = s[..<hash]
            }
            s = Self.trimmed(s)
            if s.isEmpty { continue }
            var isItem = false
            if s.hasPrefix("- ") || s == "-" {
                try flush()
                isItem = true
                s = Self.trimmed(s.dropFirst())
                pending = (nil, nil, line)
            }
            if s.hasPrefix("{"), s.hasSuffix("}") {
                for part in s.dropFirst().dropLast().split(separator: ",") {
                    try Self.field(part, line: line, into: &pending)
                }
                continue
            }
            if let colon = s.firstIndex(of: ":"), pending != nil || isItem, ["key", "tenant"].contains(Self.trimmed(s[..<colon])) {
                try Self.field(s, line: line, into: &pending)
                continue
            }
            guard pending == nil, !isItem else { throw KeysFileError(line: line, message: "expected 'key: ...' or 'tenant: ...'") }
            let key = Self.unquoted(s)
            guard Self.isPlausibleKey(key) else { throw KeysFileError(line: line, message: "a key must be one word of printable characters") }
            pairs.append((String(key), "default"))
        }
        try flush()
        guard !pairs.isEmpty else { throw KeysFileError(line: 0, message: "the file holds no key") }
        return APIKeys(pairs)
    }

    static func field(_ part: Substring, line: Int, into pending: inout (key: String?, tenant: String?, line: Int)?) throws(KeysFileError) {
        guard let colon = part.firstIndex(of: ":") else { throw KeysFileError(line: line, message: "expected 'name: value' in '\(part)'") }
        let name = Self.trimmed(part[..<colon])
        let value = Self.unquoted(Self.trimmed(part[part.index(after: colon)...]))
        if pending == nil { pending = (nil, nil, line) }
        switch name {
        case "key":
            guard Self.isPlausibleKey(value) else { throw KeysFileError(line: line, message: "a key must be one word of printable characters") }
            pending?.key = String(value)
        case "tenant":
            guard !value.isEmpty else { throw KeysFileError(line: line, message: "an empty tenant") }
            pending?.tenant = String(value)
        default:
            throw KeysFileError(line: line, message: "unknown field '\(name)' (expected key, tenant)")
        }
    }

    static func trimmed(_ s: Substring) -> Substring {
        var s = s
        while let f = s.first, f == " " || f == "\t" || f == "\r" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s = s.dropLast() }
        return s
    }

    static func unquoted(_ s: Substring) -> Substring {
        if s.count >= 2, let first = s.first, first == "\"" || first == "'", s.last == first { return s.dropFirst().dropLast() }
        return s
    }

    static func isPlausibleKey(_ s: Substring) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }
}

/// Why a keys file could not be read.
public struct KeysFileError: Error, Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var message: String

    public var description: String { self.line > 0 ? "line \(self.line): \(self.message)" : self.message }
}
