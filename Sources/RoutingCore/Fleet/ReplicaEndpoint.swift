import XXHash

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
    /// What the ids of responses this replica stores carry to find it again (`StoredResponseID`).
    public let responseTag: String

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
        self.responseTag = StoredResponseID.tag(replica: name)
    }
}

/// Ids of stored responses (OpenAI Responses API) that name the replica holding them.
///
/// vLLM keeps stored responses in the memory of the replica that made them, so a follow-up
/// (`previous_response_id`, or a `GET`, `DELETE` or `cancel` of `/v1/responses/{id}`) only works
/// there. The router chooses the id of each response it sends (vLLM takes a request's
/// `request_id` as its response's id): `resp_cr`, twelve hex digits of XXH3 of the replica's
/// name, then sixteen of the request. Any router instance, before or after a restart, finds the
/// replica from the id alone: no shared state.
public enum StoredResponseID {
    static let prefix = "resp_cr"

    /// The tag of a replica: 12 hex digits of XXH3 of its name.
    public static func tag(replica name: String) -> String {
        String(XXH3.hash(name).hex16.prefix(12))
    }

    /// An id for a response made by the replica with `tag`, for request `request`.
    public static func make(tag: String, request: UInt64) -> String {
        Self.prefix + tag + request.hex16
    }

    /// The replica tag in a response id made this way; nil for any other id.
    public static func tag(of id: some StringProtocol) -> Substring? {
        let utf8 = id.utf8
        guard utf8.count >= Self.prefix.utf8.count + 12, id.hasPrefix(Self.prefix) else { return nil }
        let start = id.index(id.startIndex, offsetBy: Self.prefix.count)
        let end = id.index(start, offsetBy: 12)
        let tag = Substring(id[start..<end])
        guard tag.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else { return nil }
        return tag
    }
}
