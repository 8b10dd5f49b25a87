/// Where a replica is and the bytes the data plane writes for it on every request, made once per
/// replica and address (carried from snapshot to snapshot while they stay) rather than per request.
public final class ReplicaEndpoint: Sendable {
    public let name: String
    /// The URL as configured.
    public let urlText: String
    /// The parsed base URL; nil when the configured one cannot be used (the replica is then
    /// never routable, and `/admin/replicas` says why).
    public let url: ReplicaURL?
    /// Why `url` is nil.
    public let urlError: String?
    /// `host: <authority>\r\n`
    public let hostLine: [UInt8]
    /// `x-cacheroute-replica: <name>\r\n`
    public let replicaLine: [UInt8]

    public init(name: String, url text: String) {
        self.name = name
        self.urlText = text
        switch ReplicaURL.parse(text) {
        case .success(let url):
            self.url = url
            self.urlError = nil
            self.hostLine = Array("host: \(url.authority)\r\n".utf8)
        case .failure(let error):
            self.url = nil
            self.urlError = error.description
            self.hostLine = []
        }
        self.replicaLine = Array("x-cacheroute-replica: \(name)\r\n".utf8)
    }
}
