import HTTPTransport
import NIOCore
import RoutingCore

/// How the data plane reaches replicas: the seam a different transport (TLS, HTTP/2) replaces
/// without touching the exchange. A transport belongs to one event loop, and its connections
/// live there too, so an answer is relayed handler to handler with no loop hop.
protocol UpstreamTransport: AnyObject {
    /// A connection to `endpoint`: an idle kept-alive one when there is one (`.ready`, no
    /// future), else one being made or freed (`fresh`: never a pooled one).
    func lease(_ endpoint: ReplicaEndpoint, fresh: Bool, settings: UpstreamPoolSettings) -> UpstreamLeaseResult
    /// Closes idle connections to replicas that are not among `endpoints` (they left the fleet).
    func prune(keeping endpoints: [ReplicaEndpoint])
}

enum UpstreamLeaseResult {
    case ready(any UpstreamLease)
    case pending(EventLoopFuture<any UpstreamLease>)
    case failed(UpstreamError)
}

/// One connection to a replica, leased for one request.
protocol UpstreamLease: AnyObject, Sendable {
    /// Whether it served a request before (a stale kept-alive connection fails differently).
    var reused: Bool { get }
    /// Writes the request (head bytes, then the body) and reports the answer to `delegate`.
    func send(head: ByteBuffer, body: ByteBuffer?, isHead: Bool, to delegate: any UpstreamDelegate)
    /// Back-pressure: stop or resume reading the answer (the client is slow, or caught up).
    func setReading(_ on: Bool)
    /// The answer ended: the connection goes back to its transport (or closes if it cannot be reused).
    func release()
    /// The request is abandoned: the connection closes and reports nothing more.
    func drop()
}

/// What a leased connection tells the request using it.
protocol UpstreamDelegate: AnyObject {
    func upstreamHead(_ head: HTTP1Head)
    func upstreamBody(_ buffer: ByteBuffer)
    func upstreamEnd()
    func upstreamReadComplete()
    func upstreamFailed(_ error: UpstreamError)
}

/// What a transport needs of the configuration (`upstream.*`).
struct UpstreamPoolSettings: Equatable {
    var connectTimeout: Double
    /// Connections per replica on this loop; more requests wait for one.
    var maxPerLoop: Int
    /// How long an idle connection is kept.
    var keepAliveSeconds: Double
    var maxResponseHeadBytes: Int
    /// The TLS context for `https://` replicas.
    var tls: ClientTLS? = nil
}

/// Why an upstream exchange failed.
struct UpstreamError: Error, CustomStringConvertible {
    var description: String

    static let closed = UpstreamError(description: "the replica closed the connection")
    static let poolFull = UpstreamError(description: "no connection to the replica became free in time")
    static func connect(_ error: any Error) -> UpstreamError { UpstreamError(description: "connect failed: \(error)") }
}
