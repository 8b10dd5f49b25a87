import RoutingCore

/// What happened to one request, reported when it ends (access log, metrics).
public struct RequestSummary: Sendable {
    /// The route label: `chat`, `completions`, `generate`, `models`, `other`, `local`.
    public var route: String
    public var method: String
    public var path: String
    public var status: Int
    /// The replica that answered (or was last tried).
    public var replica: String?
    public var tier: Tier?
    public var attempts: Int
    /// Why attempts failed, in order (connect, 503, timeout...).
    public var upstreamErrors: [String]
    public var seconds: Double
    /// Time to the response head from the replica.
    public var firstByteSeconds: Double?
    /// Time to the first body byte from the replica (the first token of a stream).
    public var firstTokenSeconds: Double?
    public var streamed: Bool
    public var clientGone: Bool
    public var promptTokensEstimate: Int?
    /// From the answer's `usage` (prompt_tokens and prompt_tokens_details.cached_tokens), when present.
    public var usagePromptTokens: Int?
    public var usageCachedTokens: Int?
    public var requestBytes: Int
    public var responseBytes: Int
    /// The client's `X-Request-Id`, or the one the router made.
    public var requestID: RequestID?
    /// The client's address (the connection's peer, not `X-Forwarded-For`).
    public var client: String?
    /// Seconds it waited in the router's queue (nil: it did not wait).
    public var queuedSeconds: Double?
    /// `usage.completion_tokens` of the answer, when present.
    public var usageOutputTokens: Int?
    /// The tenant as a metric label (`AccessPolicy.label`: configured tenants by name, `other`,
    /// `none`); nil before the request was read.
    public var tenant: String?
    /// What the response cache did (hit-exact, hit-semantic, miss, bypass); nil when it is off.
    public var cache: String?

    public init(route: String, method: String, path: String) {
        self.route = route
        self.method = method
        self.path = path
        self.status = 0
        self.attempts = 0
        self.upstreamErrors = []
        self.seconds = 0
        self.streamed = false
        self.clientGone = false
        self.requestBytes = 0
        self.responseBytes = 0
    }
}

/// Receives request summaries and attempt events; implemented by metrics and the access log.
public protocol ProxyObserver: Sendable {
    func requestFinished(_ summary: RequestSummary)
    /// An attempt failed before the first byte and the request went to another replica.
    func retried(replica: String, outcome: AttemptOutcome)
    /// An attempt on a replica failed (connect, timeout, status_5xx, broken_stream).
    func attemptFailed(replica: String, outcome: AttemptOutcome)
}

/// Observers in turn.
public struct ObserverList: ProxyObserver {
    public var observers: [any ProxyObserver]

    public init(_ observers: [any ProxyObserver]) {
        self.observers = observers
    }

    public func requestFinished(_ summary: RequestSummary) { for o in self.observers { o.requestFinished(summary) } }
    public func retried(replica: String, outcome: AttemptOutcome) { for o in self.observers { o.retried(replica: replica, outcome: outcome) } }
    public func attemptFailed(replica: String, outcome: AttemptOutcome) { for o in self.observers { o.attemptFailed(replica: replica, outcome: outcome) } }
}
