/// Settings of placement: groups, load, probe ceilings, spill, pinned groups.
public struct PlacementSettings: Sendable, Equatable {
    /// Members of a shared-instruction group before any spill widening (k).
    public var groupSize: Int
    /// Ring points per unit of weight.
    public var vnodesPerWeight: Int
    /// Most replicas examined per request (the group first, then ring successors).
    public var maxCandidates: Int
    /// Bounded-load safety ceiling: a replica is ineligible at `inFlight >= max(floor, ceil(c * (total + 1) / n))`.
    public var loadFactor: Double
    /// The ceiling never goes below this: an engine batching hundreds of sequences is not
    /// overloaded by a handful (its real queueing shows in the cost instead).
    public var ceilingFloor: Int
    /// Where the index knows nothing of a request, the least costly of the first this-many
    /// eligible candidates in hash order wins (1: pure hash order, every router instance agrees).
    public var freshChoices: Int
    /// ... but the first in hash order keeps it unless another is cheaper by more than this many
    /// seconds, so router instances with similar load views agree on fresh prefixes.
    public var freshSlack: Double
    /// ... or by more than this fraction of its own cost (learned speeds differ a little between
    /// equal replicas; such differences must not pull every fresh prefix to one of them).
    public var freshTolerance: Double
    /// Prefill speed a replica is assumed to have until the router has learned its own (tokens per second).
    public var prefillTokensPerSecond: Double
    /// Decode speed a replica is assumed to have until learned (seconds per output token).
    public var decodeSecondsPerToken: Double
    /// Whether each replica's speed is learned from the requests it serves (else the seeds stay).
    public var learnSpeed: Bool
    /// KV-cache usage by running requests a replica is kept under when the router queues (the
    /// rest holds cached prefixes): its learned concurrency limit follows it.
    public var targetKVUsage: Double
    /// Seconds a request in flight adds to a newcomer's wait beyond its queued prefill (decode interference).
    public var secondsPerInFlight: Double
    /// How much more a cache miss weighs than the same time spent waiting: a miss also scatters the
    /// conversation's cache, so its next turns miss or duplicate blocks.
    public var missWeight: Double
    /// Probe ceiling: a replica with more waiting requests than this is ineligible (nil: off).
    public var maxWaiting: Int?
    /// Probe ceiling: a replica with KV usage above this is ineligible (nil: off).
    public var maxKVUsage: Double?
    /// KV capacity assumed for a replica whose capacity is neither configured nor probed.
    public var defaultCacheTokens: Int
    public var spill: SpillSettings
    public var pinned: [PinnedGroup]

    public init(
        groupSize: Int = 1,
        vnodesPerWeight: Int = 256,
        maxCandidates: Int = 8,
        loadFactor: Double = 3,
        ceilingFloor: Int = 4,
        freshChoices: Int = 4,
        freshSlack: Double = 0,
        freshTolerance: Double = 0,
        prefillTokensPerSecond: Double = 16000,
        decodeSecondsPerToken: Double = 0.02,
        learnSpeed: Bool = true,
        targetKVUsage: Double = 0.6,
        secondsPerInFlight: Double = 0.05,
        missWeight: Double = 32,
        maxWaiting: Int? = nil,
        maxKVUsage: Double? = nil,
        defaultCacheTokens: Int = 500_000,
        spill: SpillSettings = SpillSettings(),
        pinned: [PinnedGroup] = []
    ) {
        self.groupSize = groupSize
        self.vnodesPerWeight = vnodesPerWeight
        self.maxCandidates = maxCandidates
        self.loadFactor = loadFactor
        self.ceilingFloor = ceilingFloor
        self.freshChoices = freshChoices
        self.freshSlack = freshSlack
        self.freshTolerance = freshTolerance
        self.prefillTokensPerSecond = prefillTokensPerSecond
        self.decodeSecondsPerToken = decodeSecondsPerToken
        self.learnSpeed = learnSpeed
        self.targetKVUsage = targetKVUsage
        self.secondsPerInFlight = secondsPerInFlight
        self.missWeight = missWeight
        self.maxWaiting = maxWaiting
        self.maxKVUsage = maxKVUsage
        self.defaultCacheTokens = defaultCacheTokens
        self.spill = spill
        self.pinned = pinned
    }
}

extension PlacementSettings {
    /// How the service model learns, from these settings.
    public var service: ServiceModelSettings {
        ServiceModelSettings(
            prefillTokensPerSecond: self.prefillTokensPerSecond,
            decodeSecondsPerToken: self.decodeSecondsPerToken,
            learningRate: self.learnSpeed ? 0.05 : 0,
            targetKVUsage: self.targetKVUsage
        )
    }
}

/// An explicit group: requests that match go to these replicas (session affinity still applies inside).
public struct PinnedGroup: Sendable, Equatable {
    public var name: String
    /// Replica names.
    public var replicas: [String]
    /// Match when this header has exactly this value (name lower-case).
    public var header: (name: String, value: String)?
    /// Match when the prompt's first text starts with these canonical bytes.
    public var prefix: [UInt8]?
    /// Match only requests for this model (nil: any).
    public var model: String?

    public init(
        name: String,
        replicas: [String],
        header: (name: String, value: String)? = nil,
        prefix: [UInt8]? = nil,
        model: String? = nil
    ) {
        self.name = name
        self.replicas = replicas
        self.header = header.map { ($0.name.lowercased(), $0.value) }
        self.prefix = prefix
        self.model = model
    }

    public static func == (a: PinnedGroup, b: PinnedGroup) -> Bool {
        a.name == b.name && a.replicas == b.replicas && a.header?.name == b.header?.name
            && a.header?.value == b.header?.value && a.prefix == b.prefix && a.model == b.model
    }

    /// Whether a request matches (every given condition must hold; a rule with none never matches).
    public func matches(_ keys: RequestKeys, header lookup: (String) -> String?) -> Bool {
        guard self.header != nil || self.prefix != nil else { return false }
        if let model = self.model, keys.model != model { return false }
        if let header = self.header, lookup(header.name) != header.value { return false }
        if let prefix = self.prefix, !keys.leadingText.starts(with: prefix) { return false }
        return true
    }
}

/// All the settings the routing core needs.
public struct RoutingSettings: Sendable, Equatable {
    public var keying: KeyingRules
    public var placement: PlacementSettings

    public init(keying: KeyingRules = KeyingRules(), placement: PlacementSettings = PlacementSettings()) {
        self.keying = keying
        self.placement = placement
    }

    /// Tokens in one block of the prefix index.
    public var tokensPerBlock: Int { max(1, self.keying.blockBytes / max(1, self.keying.bytesPerToken)) }
}
