/// A problem in a configuration file, located as `FILE:LINE:COLUMN: key.path: what is wrong`.
public struct ConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    public var file: String
    /// 1-based; 0 when unknown.
    public var line: Int
    public var column: Int
    /// The key path, e.g. `replicas[2].url`; empty for the document itself.
    public var path: String
    public var message: String

    public init(file: String, line: Int, column: Int, path: String, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.path = path
        self.message = message
    }

    public var description: String {
        let location = self.line > 0 ? "\(self.file):\(self.line):\(self.column)" : self.file
        return self.path.isEmpty ? "\(location): \(self.message)" : "\(location): \(self.path): \(self.message)"
    }
}

/// Several problems at once, so a user fixes a file in one round.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [ConfigError]

    public init(_ errors: [ConfigError]) {
        self.errors = errors
    }

    public var description: String { self.errors.map(\.description).joined(separator: "\n") }
}
