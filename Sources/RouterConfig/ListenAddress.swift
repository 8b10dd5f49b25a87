import RoutingCore

/// A `host:port` to listen on (`[::1]:8080` for IPv6).
public struct ListenAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port`, `[v6]:port` or `:port` (all interfaces); nil with a reason on failure.
    public static func parse(_ text: String) -> Result<ListenAddress, AddressError> {
        guard let colon = text.lastIndex(of: ":") else {
            return .failure(AddressError("expected host:port, got '\(text)'"))
        }
        var host = String(text[..<colon])
        let portText = text[text.index(after: colon)...]
        guard let port = Int(portText), (0...65535).contains(port) else {
            return .failure(AddressError("invalid port '\(portText)' (0-65535)"))
        }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        return .success(ListenAddress(host: host, port: port))
    }

    public var description: String { self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)" }
}
