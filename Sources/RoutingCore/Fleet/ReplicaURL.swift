/// A replica's base URL, split for the connection pool: `http://host:port[/prefix]`.
public struct ReplicaURL: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// A path prefix put before every request path (no trailing slash; empty for none).
    public var pathPrefix: String
    /// `https://`: the router speaks TLS to the replica (verified per `upstream.tls`).
    public var tls: Bool

    public init(host: String, port: Int, pathPrefix: String = "", tls: Bool = false) {
        self.host = host
        self.port = port
        self.pathPrefix = pathPrefix
        self.tls = tls
    }

    /// Parses a replica URL: `http://` or `https://`, a host, an optional port (80 or 443 by
    /// default) and an optional path prefix.
    public static func parse(_ text: String) -> Result<ReplicaURL, AddressError> {
        let lower = text.lowercased()
        let tls = lower.hasPrefix("https://")
        guard tls || lower.hasPrefix("http://") else {
            return .failure(AddressError("expected an http:// or https:// URL such as http://10.0.0.5:8000, got '\(text)'"))
        }
        var rest = Substring(text.dropFirst(tls ? "https://".count : "http://".count))
        var path = ""
        if let slash = rest.firstIndex(of: "/") {
            path = String(rest[slash...])
            rest = rest[..<slash]
        }
        while path.hasSuffix("/") { path.removeLast() }
        if path.contains("?") || path.contains("#") {
            return .failure(AddressError("a replica URL may not have a query or fragment: '\(text)'"))
        }
        var host = String(rest)
        var port = tls ? 443 : 80
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return .failure(AddressError("unclosed '[' in '\(text)'")) }
            let after = host[host.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else {
                    return .failure(AddressError("invalid port in '\(text)'"))
                }
                port = p
            } else if !after.isEmpty {
                return .failure(AddressError("unexpected '\(after)' in '\(text)'"))
            }
            host = String(host[host.index(after: host.startIndex)..<close])
        } else if let colon = host.lastIndex(of: ":") {
            guard let p = Int(host[host.index(after: colon)...]), (1...65535).contains(p) else {
                return .failure(AddressError("invalid port in '\(text)'"))
            }
            port = p
            host = String(host[..<colon])
        }
        guard !host.isEmpty else { return .failure(AddressError("missing host in '\(text)'")) }
        guard host.allSatisfy({ $0.isLetter || $0.isNumber || "-._:".contains($0) }) else {
            return .failure(AddressError("invalid host '\(host)'"))
        }
        return .success(ReplicaURL(host: host, port: port, pathPrefix: path, tls: tls))
    }

    /// `host:port` as an HTTP Host header value.
    public var authority: String { self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)" }

    public var description: String { "\(self.tls ? "https" : "http")://\(self.authority)\(self.pathPrefix)" }
}

/// Why an address (a listener's or a replica's) could not be read.
public struct AddressError: Error, Sendable, Hashable, CustomStringConvertible {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}
