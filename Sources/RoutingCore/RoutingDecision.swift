import XXHash

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
    /// The replica holding the stored response the request continues (Responses API).
    case stored
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
    /// Why it is not eligible, if it is not (kept as numbers, put in words only when asked: a
    /// candidate holds no references and is copied as plain bytes).
    public var ineligibility: Ineligibility?
    /// Why it is not eligible, in words.
    public var ineligibleBecause: String? { self.ineligibility?.description }
    /// The prefix index holds this conversation (beyond the shared instruction) on the replica.
    public var holdsSession: Bool
    /// The replica's prefill speed as placement used it (learned, tokens per second).
    public var prefillTokensPerSecond: Double = 0
    /// Predicted time to first token there: the prefill queued ahead, then this request's.
    public var predictedFirstTokenSeconds: Double = 0
    /// Leading blocks the index holds there, and whether it saw the session there (for `decide`).
    var cachedBlocks = 0
    var sessionSeen = false
    /// Prefill tokens queued ahead there, and its decode speed (for the cost).
    var aheadTokens = 0.0
    var decodeSecondsPerToken = 0.0

    public init(
        replica: Int,
        inGroup: Bool,
        cachedTokens: Int,
        inFlight: Int,
        cost: Double,
        eligible: Bool,
        ineligibility: Ineligibility?,
        holdsSession: Bool = false
    ) {
        self.holdsSession = holdsSession
        self.replica = replica
        self.inGroup = inGroup
        self.cachedTokens = cachedTokens
        self.inFlight = inFlight
        self.cost = cost
        self.eligible = eligible
        self.ineligibility = ineligibility
    }
}

/// Why a candidate may not take a request.
public enum Ineligibility: Sendable, Equatable, CustomStringConvertible {
    case notHealthy
    /// Its requests in flight are at the bounded-load ceiling (of `total` over `routable` replicas).
    case loadCeiling(inFlight: Int, ceiling: Int, total: Int, routable: Int)
    /// Its probes show more requests waiting than `routing.load.max_waiting`.
    case waiting(Int, limit: Int)
    /// Its probes show its KV cache fuller than `routing.load.max_kv_usage`.
    case kvUsage(Double, limit: Double)

    public var description: String {
        switch self {
        case .notHealthy: "not healthy"
        case .loadCeiling(let inFlight, let ceiling, let total, let routable):
            "in flight \(inFlight) at the load ceiling \(ceiling) (\(total) over \(routable))"
        case .waiting(let n, let limit): "\(n) requests waiting (limit \(limit))"
        case .kvUsage(let kv, let limit): "KV cache \(Int((kv * 100).rounded()))% full (limit \(Int((limit * 100).rounded()))%)"
        }
    }
}

/// Where a request goes and why.
///
/// The decision keeps the facts behind it; `reason(in:)` renders them as a sentence only when a
/// person asks (explain, logs), so the hot path formats no text.
public struct RoutingDecision: Sendable {
    /// Fleet index of the chosen replica; nil when no replica is routable (answer 503).
    public var replica: Int?
    public var tier: Tier
    /// The replicas considered, in preference order (group by session rank, then the ring).
    public var candidates: [Candidate]
    /// Members of the instruction group (after any widening); 0 without an instruction key.
    public var groupWidth: Int
    /// How the model was matched to a pool.
    public var poolMatch: FleetSnapshot.PoolMatch
    /// Estimated prompt tokens the chosen replica lacks (the prefill it will do).
    public var missTokens: Int
    /// What the placement rested on (rendered by `reason(in:)`).
    public var basis: Basis
    /// Position of the chosen replica among `candidates` (nil for fallback and no-replica decisions).
    public var chosenCandidate: Int?
    /// Whether the index held any of this conversation on some candidate.
    public var known: Bool
    /// Whether the chosen replica does not hold the conversation the index knows of.
    public var movedFromCache: Bool
    public var promptTokens: Int
    public var freshChoices: Int
    /// The session or prompt key whose ring order backs retries.
    public var ringKey: UInt64
    /// A rare path's reason in words (fallback, no replica).
    public var note: String?

    /// What a placement rested on.
    public enum Basis: Sendable, Equatable {
        case pinned(String)
        case pinnedGroupDown(String)
        case group(key: UInt64, members: Int, base: Int)
        case sessionRing
        case promptRing
        /// The replica holding a stored response (`previous_response_id`).
        case storedResponse(String)
        /// A stored response the router made for a replica that left the fleet.
        case storedResponseGone(String)
        case none
    }

    public init(
        replica: Int?,
        tier: Tier,
        note: String? = nil,
        candidates: [Candidate] = [],
        groupWidth: Int = 0,
        poolMatch: FleetSnapshot.PoolMatch = .listed,
        missTokens: Int = 0,
        basis: Basis = .none,
        chosenCandidate: Int? = nil,
        known: Bool = false,
        movedFromCache: Bool = false,
        promptTokens: Int = 0,
        freshChoices: Int = 1,
        ringKey: UInt64 = 0
    ) {
        self.replica = replica
        self.tier = tier
        self.note = note
        self.candidates = candidates
        self.groupWidth = groupWidth
        self.poolMatch = poolMatch
        self.missTokens = missTokens
        self.basis = basis
        self.chosenCandidate = chosenCandidate
        self.known = known
        self.movedFromCache = movedFromCache
        self.promptTokens = promptTokens
        self.freshChoices = freshChoices
        self.ringKey = ringKey
    }

    /// One line a person can read: the rule that decided and the facts it used.
    public func reason(in fleet: FleetSnapshot) -> String {
        func name(_ replica: Int) -> String { replica < fleet.replicas.count ? fleet.replicas[replica].name : "#\(replica)" }
        var parts: [String] = []
        switch self.basis {
        case .pinned(let group): parts.append("pinned group '\(group)'")
        case .pinnedGroupDown(let group): parts.append("pinned group '\(group)' has no healthy member; ordinary placement")
        case .group(let key, let members, let base):
            parts.append("group of \(members) for instruction key \(key.hex16)" + (members > base ? " (widened from \(base): hot prefix)" : ""))
        case .storedResponse(let id): parts.append("the replica holding response \(id)")
        case .storedResponseGone(let id): parts.append("response \(id) was made by a replica no longer in the fleet")
        case .sessionRing: parts.append("session ring position")
        case .promptRing: parts.append("prompt ring position")
        case .none: break
        }
        var text = parts.joined(separator: "; ")
        if let chosen = self.chosenCandidate, chosen < self.candidates.count {
            let pick = self.candidates[chosen]
            text += text.isEmpty ? "" : ": "
            if chosen == 0 {
                text += "first choice \(name(pick.replica))"
            } else {
                text += "\(name(pick.replica)) chosen over "
                    + self.candidates[..<chosen].map { c in
                        "\(name(c.replica)) (" + (c.ineligibleBecause ?? "est. " + String(format1: c.cost * 1000, " ms")) + ")"
                    }.joined(separator: ", ")
            }
            if self.known {
                text += "; holds \(pick.cachedTokens) of \(self.promptTokens) prompt tokens"
                if self.movedFromCache { text += " (moved away from its cache)" }
            } else {
                text += "; index knows nothing of this conversation (least cost of the first \(self.freshChoices) in hash order)"
            }
        }
        if let note = self.note {
            text += (text.isEmpty ? "" : "; ") + note
            if let replica = self.replica { text += ": least-loaded \(name(replica))" }
        }
        return text
    }

    /// Where to retry if the chosen replica fails before the first byte, in order: the other
    /// eligible candidates by cost, then the rest of the pool in ring order. Computed only when needed.
    public func retryOrder(in fleet: FleetSnapshot, model: String?) -> [Int] {
        // A stored response exists on one replica only: another one could only answer "not found".
        guard self.tier != .stored else { return [] }
        var order = self.candidates.enumerated()
            .filter { $0.element.eligible && $0.element.replica != self.replica }
            .sorted { $0.element.cost == $1.element.cost ? $0.offset < $1.offset : $0.element.cost < $1.element.cost }
            .map(\.element.replica)
        let ring = fleet.pool(for: model).pool.ring
        for r in ring.successors(of: self.ringKey, limit: ring.members.count) where r != self.replica && !order.contains(r) {
            order.append(r)
        }
        return order
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

/// A request placed on a replica, held by the caller until it ends so the load counts stay exact
/// (and so what it took can be learned from: `Router.observe`).
public struct PlacementTicket: Sendable, Equatable {
    public var replicaID: Int
    /// Estimated prompt tokens the replica lacks (its prefill).
    public var pendingTokens: Int
    public var firstByteSeen: Bool
    /// Estimated prompt tokens of the request.
    public var promptTokens: Int
    /// This router's uncached tokens on the replica still before their first token when this was sent.
    public var aheadTokens: Int
    /// When it was sent (the router's clock).
    public var sentAt: Double
    /// The replica's probes showed requests waiting when it was sent.
    public var replicaWasQueueing: Bool
    /// Prompt tokens the router expected the replica to hold (its prefix index's match), checked
    /// against what the replica reports (`CacheTruth`).
    public var predictedCachedTokens = 0
    /// False for a request that costs the replica next to nothing and teaches nothing (Anthropic
    /// `count_tokens`): it counts in no load and no service model.
    public var counted = true

    /// A ticket for a request placed without load (see `counted`).
    public static func uncounted(replicaID: Int, now: Double) -> PlacementTicket {
        var ticket = PlacementTicket(replicaID: replicaID, pendingTokens: 0, firstByteSeen: true, sentAt: now)
        ticket.counted = false
        return ticket
    }

    public init(
        replicaID: Int, pendingTokens: Int, firstByteSeen: Bool = false, promptTokens: Int = 0, aheadTokens: Int = 0, sentAt: Double = 0,
        replicaWasQueueing: Bool = false
    ) {
        self.replicaWasQueueing = replicaWasQueueing
        self.replicaID = replicaID
        self.pendingTokens = pendingTokens
        self.firstByteSeen = firstByteSeen
        self.promptTokens = promptTokens
        self.aheadTokens = aheadTokens
        self.sentAt = sentAt
    }
}
