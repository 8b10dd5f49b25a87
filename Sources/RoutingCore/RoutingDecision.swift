/// What made a routing decision: the tiers of the routing model.
public enum Tier: String, Sendable, CaseIterable {
    /// Tier 1: the shared-instruction group chose the replica (no session preference, or load moved it within the group).
    case group
    /// Tier 2: the session's own top-ranked replica.
    case session
    /// Outside the base group: a hot prefix widened its group, or the preferred replicas were ineligible.
    case spill
    /// No usable keys, or no candidate eligible: the least-loaded replica.
    case fallback
    /// An explicit pinned group from the configuration.
    case pinned
}

/// One replica considered for a request, in preference order, with what the router knew of it.
public struct Candidate: Sendable, Equatable {
    /// Fleet index.
    public var replica: Int
    /// Member of the request's (possibly widened) group, or of the pinned group.
    public var inGroup: Bool
    /// Tokens of the prompt the prefix index believes the replica holds.
    public var cachedTokens: Int
    public var inFlight: Int
    /// Estimated seconds: prefill of the missing tokens plus the queued prefill ahead of it.
    public var cost: Double
    public var eligible: Bool
    /// Why it is not eligible, if it is not.
    public var ineligibleBecause: String?

    public init(
        replica: Int,
        inGroup: Bool,
        cachedTokens: Int,
        inFlight: Int,
        cost: Double,
        eligible: Bool,
        ineligibleBecause: String?
    ) {
        self.replica = replica
        self.inGroup = inGroup
        self.cachedTokens = cachedTokens
        self.inFlight = inFlight
        self.cost = cost
        self.eligible = eligible
        self.ineligibleBecause = ineligibleBecause
    }
}

/// Where a request goes and why.
public struct RoutingDecision: Sendable {
    /// Fleet index of the chosen replica; nil when no replica is routable (answer 503).
    public var replica: Int?
    public var tier: Tier
    /// One line a person can read: the rule that decided and the facts it used.
    public var reason: String
    /// The replicas considered, in preference order (group by session rank, then the ring).
    public var candidates: [Candidate]
    /// Where to retry if the chosen replica fails before the first byte, in order.
    public var retryOrder: [Int]
    /// Members of the instruction group (after any widening); 0 without an instruction key.
    public var groupWidth: Int
    /// How the model was matched to a pool.
    public var poolMatch: FleetSnapshot.PoolMatch
    /// Estimated prompt tokens the chosen replica lacks (the prefill it will do).
    public var missTokens: Int

    public init(
        replica: Int?,
        tier: Tier,
        reason: String,
        candidates: [Candidate] = [],
        retryOrder: [Int] = [],
        groupWidth: Int = 0,
        poolMatch: FleetSnapshot.PoolMatch = .listed,
        missTokens: Int = 0
    ) {
        self.replica = replica
        self.tier = tier
        self.reason = reason
        self.candidates = candidates
        self.retryOrder = retryOrder
        self.groupWidth = groupWidth
        self.poolMatch = poolMatch
        self.missTokens = missTokens
    }
}

/// The load the router knows of one replica: its own counts, plus the latest probed signals.
public struct ReplicaLoad: Sendable, Equatable {
    /// Requests this router has in flight to the replica.
    public var inFlight: Int = 0
    /// Estimated uncached prompt tokens of those requests still waiting for their first byte.
    public var pendingPrefillTokens: Int = 0
    /// `num_requests_waiting` from the last probe.
    public var probedWaiting: Int?
    /// `num_requests_running` from the last probe.
    public var probedRunning: Int?
    /// KV-cache usage (0-1) from the last probe.
    public var kvUsage: Double?

    public init(
        inFlight: Int = 0,
        pendingPrefillTokens: Int = 0,
        probedWaiting: Int? = nil,
        probedRunning: Int? = nil,
        kvUsage: Double? = nil
    ) {
        self.inFlight = inFlight
        self.pendingPrefillTokens = pendingPrefillTokens
        self.probedWaiting = probedWaiting
        self.probedRunning = probedRunning
        self.kvUsage = kvUsage
    }
}

/// A request placed on a replica, held by the caller until it ends so the load counts stay exact.
public struct PlacementTicket: Sendable, Equatable {
    public var replicaID: Int
    public var pendingTokens: Int
    public var firstByteSeen: Bool

    public init(replicaID: Int, pendingTokens: Int, firstByteSeen: Bool = false) {
        self.replicaID = replicaID
        self.pendingTokens = pendingTokens
        self.firstByteSeen = firstByteSeen
    }
}
