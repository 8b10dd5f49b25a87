/// When a request that failed before its first byte reached the client may try another replica.
public struct RetrySettings: Sendable, Equatable {
    /// Extra attempts on other replicas (`upstream.retries`).
    public var retries: Int
    /// Retries may add at most this fraction of the request rate ...
    public var budget: Double
    /// ... plus this many per second.
    public var minPerSecond: Double

    public init(retries: Int = 2, budget: Double = 0.2, minPerSecond: Double = 3) {
        self.retries = retries
        self.budget = budget
        self.minPerSecond = minPerSecond
    }
}

/// The retry policy: which outcomes are retried, how many attempts a request gets, and the
/// fleet-wide budget that keeps a dead replica from doubling the load (a token bucket filled by
/// `budget` per routed request plus `minPerSecond` per second, one token per retry).
///
/// Pure: time is passed in. The fleet router holds one; the exchange machine asks `allows`.
public struct RetryPolicy: Sendable {
    public var settings: RetrySettings
    public private(set) var tokens: Double
    var lastRefill: Double

    public init(settings: RetrySettings = RetrySettings(), now: Double = 0) {
        self.settings = settings
        self.tokens = Self.initialTokens
        self.lastRefill = now
    }

    static let initialTokens = 10.0

    /// Whether a request whose `attempts`-th attempt ended with `outcome` before its first byte
    /// reached the client may go to another replica (if the budget allows: `withdraw`). A timeout
    /// is not retried: the request may be running there still, and a second replica would do the
    /// same work again. A stale pooled connection is not a retry: it goes once more to the same
    /// replica on a fresh connection.
    public static func allows(_ outcome: AttemptOutcome, attempts: Int, settings: RetrySettings) -> Bool {
        guard attempts <= settings.retries else { return false }
        switch outcome {
        case .connectFailure, .serverError, .replicaLost, .stalled: return true
        case .success, .timeout, .brokenStream, .clientGone, .staleConnection: return false
        }
    }

    /// A routed request earns the budget its share (and time its per-second part).
    public mutating func deposit(now: Double) {
        let cap = max(Self.initialTokens, self.settings.minPerSecond * 10)
        let elapsed = max(0, now - self.lastRefill)
        self.lastRefill = now
        self.tokens = min(cap, self.tokens + self.settings.budget + elapsed * self.settings.minPerSecond)
    }

    /// Takes one retry from the budget; false when it is spent.
    public mutating func withdraw() -> Bool {
        guard self.tokens >= 1 else { return false }
        self.tokens -= 1
        return true
    }
}
