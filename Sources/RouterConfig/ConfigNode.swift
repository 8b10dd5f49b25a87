import Yams

/// A YAML node with its key path, read into typed values with located errors.
///
/// Every getter that fails throws a `ConfigError` pointing at the node's line and column and
/// naming its key path, so `cacheroute check` can say exactly what to fix.
struct ConfigNode {
    let node: Node
    let path: String
    let file: String

    var mark: Mark? { self.node.mark }

    func error(_ message: String) -> ConfigError {
        ConfigError(
            file: self.file,
            line: self.mark?.line ?? 0,
            column: self.mark?.column ?? 0,
            path: self.path,
            message: message
        )
    }

    /// Whether the node is YAML null (`~`, `null`, or nothing after the colon).
    var isNull: Bool {
        guard case .scalar(let s) = self.node, s.style == .plain else { return false }
        return ["", "~", "null", "Null", "NULL"].contains(s.string)
    }

    var kind: String {
        switch self.node {
        case .scalar(let s): s.style == .plain ? "'\(s.string)'" : "a string"
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .alias: "an alias"
        }
    }

    func child(_ key: String, _ node: Node) -> ConfigNode {
        ConfigNode(node: node, path: self.path.isEmpty ? key : "\(self.path).\(key)", file: self.file)
    }

    // MARK: - Structure

    /// The members of a mapping; keys outside `allowed` are errors (with a suggestion for typos).
    func mapping(allowed: [String]) throws -> ConfigMapping {
        guard case .mapping(let mapping) = self.node else {
            throw self.error("expected a mapping of keys, got \(self.kind)")
        }
        var members: [(String, ConfigNode)] = []
        for (keyNode, valueNode) in mapping {
            let keyReader = ConfigNode(node: keyNode, path: self.path, file: self.file)
            guard case .scalar(let key) = keyNode else { throw keyReader.error("keys must be plain strings") }
            let name = key.string
            guard allowed.contains(name) else {
                var message = "unknown key '\(name)'"
                if let suggestion = Self.closest(name, in: allowed) { message += "; did you mean '\(suggestion)'?" }
                message += " (allowed: \(allowed.joined(separator: ", ")))"
                throw ConfigNode(node: keyNode, path: self.child(name, keyNode).path, file: self.file).error(message)
            }
            guard !members.contains(where: { $0.0 == name }) else {
                throw ConfigNode(node: keyNode, path: self.child(name, keyNode).path, file: self.file)
                    .error("key given twice")
            }
            members.append((name, self.child(name, valueNode)))
        }
        return ConfigMapping(owner: self, members: members)
    }

    func list() throws -> [ConfigNode] {
        guard case .sequence(let sequence) = self.node else {
            throw self.error("expected a list, got \(self.kind)")
        }
        return sequence.enumerated().map { i, node in
            ConfigNode(node: node, path: "\(self.path)[\(i)]", file: self.file)
        }
    }

    // MARK: - Scalars

    func scalar() throws -> String {
        guard case .scalar(let s) = self.node else { throw self.error("expected a value, got \(self.kind)") }
        return s.string
    }

    func string(nonEmpty: Bool = true) throws -> String {
        let s = try self.scalar()
        if nonEmpty, s.isEmpty { throw self.error("must not be empty") }
        return s
    }

    func stringList() throws -> [String] {
        if case .scalar = self.node { return [try self.string()] }
        return try self.list().map { try $0.string() }
    }

    func int(_ range: ClosedRange<Int>) throws -> Int {
        let s = try self.scalar().replacingUnderscores()
        guard let value = Int(s) else { throw self.error("expected a whole number, got '\(s)'") }
        guard range.contains(value) else { throw self.error("\(value) is out of range \(range.lowerBound)...\(range.upperBound)") }
        return value
    }

    func double(_ range: ClosedRange<Double>) throws -> Double {
        let s = try self.scalar().replacingUnderscores()
        guard let value = Double(s), value.isFinite else { throw self.error("expected a number, got '\(s)'") }
        guard range.contains(value) else { throw self.error("\(s) is out of range \(range.lowerBound)...\(range.upperBound)") }
        return value
    }

    func bool() throws -> Bool {
        switch try self.scalar().lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        case let s: throw self.error("expected true or false, got '\(s)'")
        }
    }

    /// A duration: `250ms`, `2s`, `1.5m`, `1h`, or a bare number of seconds.
    func seconds(_ range: ClosedRange<Double>) throws -> Double {
        let s = try self.scalar().trimmingSpaces()
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        var value: Double?
        for (suffix, scale) in units where s.hasSuffix(suffix) {
            if let v = Double(s.dropLast(suffix.count)) {
                value = v * scale
                break
            }
        }
        if value == nil { value = Double(s) }
        guard let value, value.isFinite else {
            throw self.error("expected a duration such as 500ms, 2s, 5m or 1h, got '\(s)'")
        }
        guard range.contains(value) else {
            throw self.error("\(s) is out of range \(Self.format(range.lowerBound))...\(Self.format(range.upperBound))")
        }
        return value
    }

    /// A size: `512`, `64KiB`, `32MiB`, `1GiB` (also KB/MB/GB as powers of 1000).
    func bytes(_ range: ClosedRange<Int>) throws -> Int {
        let s = try self.scalar().trimmingSpaces().replacingUnderscores()
        let units: [(String, Int)] = [
            ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("KB", 1000), ("MB", 1_000_000),
            ("GB", 1_000_000_000), ("B", 1),
        ]
        var value: Int?
        for (suffix, scale) in units where s.hasSuffix(suffix) {
            if let v = Double(s.dropLast(suffix.count).trimmingSpaces()), v >= 0 {
                value = Int(v * Double(scale))
                break
            }
        }
        if value == nil { value = Int(s) }
        guard let value else { throw self.error("expected a size such as 4096, 64KiB or 32MiB, got '\(s)'") }
        guard range.contains(value) else { throw self.error("\(s) is out of range \(range.lowerBound)...\(range.upperBound) bytes") }
        return value
    }

    static func format(_ seconds: Double) -> String {
        seconds < 1 ? "\(Int(seconds * 1000))ms" : "\(seconds.rounded() == seconds ? String(Int(seconds)) : String(seconds))s"
    }

    /// The allowed word nearest to `word` by edit distance, if it is close.
    static func closest(_ word: String, in words: [String]) -> String? {
        let scored = words.map { ($0, Self.editDistance(Array(word), Array($0))) }.min { $0.1 < $1.1 }
        guard let scored, scored.1 <= max(2, word.count / 3) else { return nil }
        return scored.0
    }

    static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var row = Array(0...b.count)
        for i in 1...a.count {
            var diagonal = row[0]
            row[0] = i
            for j in 1...b.count {
                let above = row[j]
                row[j] = Swift.min(row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1))
                diagonal = above
            }
        }
        return row[b.count]
    }
}

/// The members of a YAML mapping, looked up by key.
struct ConfigMapping {
    let owner: ConfigNode
    let members: [(String, ConfigNode)]

    /// The member, or nil when absent or null.
    subscript(_ key: String) -> ConfigNode? {
        guard let node = self.members.first(where: { $0.0 == key })?.1, !node.isNull else { return nil }
        return node
    }

    func required(_ key: String) throws -> ConfigNode {
        guard let node = self[key] else { throw self.owner.error("missing required key '\(key)'") }
        return node
    }

    /// Applies `read` to the member if present.
    func read<T>(_ key: String, into value: inout T, _ read: (ConfigNode) throws -> T) throws {
        if let node = self[key] { value = try read(node) }
    }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }

    func replacingUnderscores() -> String {
        String(self.filter { $0 != "_" })
    }
}

extension Substring {
    func trimmingSpaces() -> String { String(self).trimmingSpaces() }
}
