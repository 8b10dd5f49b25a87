/// A tenant's limits: requests and prompt tokens per second, each a token bucket that holds
/// `burstSeconds` of its rate.
public struct TenantLimit: Sendable, Equatable {
    public var requestsPerSecond: Double?
    public var promptTokensPerSecond: Double?
    public var burstSeconds: Double

    public init(requestsPerSecond: Double? = nil, promptTokensPerSecond: Double? = nil, burstSeconds: Double = 2) {
        self.requestsPerSecond = requestsPerSecond
        self.promptTokensPerSecond = promptTokensPerSecond
        self.burstSeconds = burstSeconds
    }

    public var isUnlimited: Bool { self.requestsPerSecond == nil && self.promptTokensPerSecond == nil }
}

/// Which limit a request went over.
public enum LimitExceeded: String, Sendable, Equatable, CaseIterable {
    case requests
    case promptTokens = "prompt_tokens"
}

/// Per-tenant token buckets. Pure (time passed in) and bounded: at most `capacity` tenants are
/// tracked; beyond it, the buckets that are full again (tenants idle long enough that forgetting
/// them changes nothing) are dropped, then the least recently used, down to 90 % of it.
public struct TenantLimiter: Sendable {
    struct Bucket: Sendable {
        var requests: Double
        var tokens: Double
        var at: Double
    }

    public var limits: [String: TenantLimit]
    public var defaultLimit: TenantLimit
    public let capacity: Int
    var buckets: [String: Bucket] = [:]

    public init(limits: [String: TenantLimit] = [:], defaultLimit: TenantLimit = TenantLimit(), capacity: Int = 10_000) {
        self.limits = limits
        self.defaultLimit = defaultLimit
        self.capacity = max(1, capacity)
    }

    public func limit(of tenant: String) -> TenantLimit { self.limits[tenant] ?? self.defaultLimit }

    /// Tenants tracked now.
    public var tracked: Int { self.buckets.count }

    /// Takes one request of `promptTokens` for `tenant` at `now` (seconds), or says which limit it
    /// is over and in how many seconds it would fit.
    public mutating func admit(tenant: String, promptTokens: Int, now: Double) -> (exceeded: LimitExceeded, retryAfter: Double)? {
        let limit = self.limit(of: tenant)
        guard !limit.isUnlimited else { return nil }
        let requestCap = (limit.requestsPerSecond ?? 0) * max(limit.burstSeconds, 1e-9)
        let tokenCap = (limit.promptTokensPerSecond ?? 0) * max(limit.burstSeconds, 1e-9)
        var b = self.buckets[tenant] ?? Bucket(requests: max(1, requestCap), tokens: max(1, tokenCap), at: now)
        let elapsed = max(0, now - b.at)
        b.at = now
        if let rate = limit.requestsPerSecond { b.requests = min(max(1, requestCap), b.requests + elapsed * rate) }
        if let rate = limit.promptTokensPerSecond { b.tokens = min(max(1, tokenCap), b.tokens + elapsed * rate) }
        defer { self.store(tenant, b, now: now) }
        if let rate = limit.requestsPerSecond, b.requests < 1 {
            return (.requests, (1 - b.requests) / rate)
        }
        // A prompt larger than the whole bucket goes when the bucket is full (else it never could).
        let need = min(Double(promptTokens), max(1, tokenCap))
        if let rate = limit.promptTokensPerSecond, b.tokens < need {
            return (.promptTokens, (need - b.tokens) / rate)
        }
        if limit.requestsPerSecond != nil { b.requests -= 1 }
        if limit.promptTokensPerSecond != nil { b.tokens -= need }
        return nil
    }

    mutating func store(_ tenant: String, _ bucket: Bucket, now: Double) {
        self.buckets[tenant] = bucket
        guard self.buckets.count > self.capacity else { return }
        // Evicted in a batch, down to 90 % of the capacity, so that the scan is paid once per
        // tenth of the capacity of new tenants, not on every request: first the buckets that
        // would be full by now (forgetting them changes nothing), then the least recently used.
        let target = self.capacity - self.capacity / 10
        for (name, b) in self.buckets where name != tenant && self.isFull(name, b, now: now) { self.buckets[name] = nil }
        guard self.buckets.count > target else { return }
        let oldest = self.buckets.filter { $0.key != tenant }.sorted { $0.value.at < $1.value.at }.prefix(self.buckets.count - target)
        for (name, _) in oldest { self.buckets[name] = nil }
    }

    func isFull(_ name: String, _ b: Bucket, now: Double) -> Bool {
        let limit = self.limit(of: name)
        let elapsed = now - b.at
        let requestsFull = limit.requestsPerSecond.map { b.requests + elapsed * $0 >= $0 * limit.burstSeconds } ?? true
        let tokensFull = limit.promptTokensPerSecond.map { b.tokens + elapsed * $0 >= $0 * limit.burstSeconds } ?? true
        return requestsFull && tokensFull
    }
}
