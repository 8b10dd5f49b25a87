/// How one attempt of a request on a replica ended, as far as the replica's health and the
/// retry policy care.
public enum AttemptOutcome: Sendable, Hashable {
    case success
    /// Connection refused, reset or closed before the response head (or no connection in time).
    case connectFailure
    /// A 5xx status.
    case serverError(Int)
    /// No response head within `upstream.first_byte_timeout`, or silence mid-stream.
    case timeout
    /// Failed after the response had started.
    case brokenStream
    /// The client left first: says nothing about the replica.
    case clientGone
    /// A pooled keep-alive connection the replica had already closed: says nothing about it
    /// either (the request goes once more on a fresh connection to the same replica).
    case staleConnection
    /// Its replica left rotation (probed down or ejected) while the request waited for the
    /// answer's head: it goes elsewhere (the replica's health already says what this would).
    case replicaLost
    /// A streamed request's replica sent no answer within its stall deadline (a few times the
    /// time to first token its learned speed predicted): a hung replica.
    case stalled

    /// Whether this outcome counts against the replica (passive outlier detection).
    public var isFailure: Bool {
        switch self {
        case .connectFailure, .serverError, .timeout, .brokenStream, .stalled: true
        case .success, .clientGone, .staleConnection, .replicaLost: false
        }
    }

    /// A closed set of names for metric labels and logs (never an address or a message).
    public var kind: String {
        switch self {
        case .success: "success"
        case .connectFailure: "connect"
        case .serverError: "status_5xx"
        case .timeout: "timeout"
        case .brokenStream: "broken_stream"
        case .clientGone: "client_gone"
        case .staleConnection: "stale_connection"
        case .replicaLost: "replica_lost"
        case .stalled: "stalled"
        }
    }
}
