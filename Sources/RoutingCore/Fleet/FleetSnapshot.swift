import XXHash

/// The inference engine a replica runs; decides which metric names and endpoints it has.
public enum Engine: String, Sendable, CaseIterable, Codable {
    case vllm
    case sglang
}

/// One configured replica, as the routing core sees it.
public struct ReplicaSpec: Sendable, Hashable {
    /// Unique name: the identity on the ring and in metrics.
    public var name: String
    /// Base URL (`http://host:port`), opaque to the core.
    public var url: String
    /// Relative share of keys (virtual nodes on the ring, rendezvous weight).
    public var weight: Double
    /// Models it serves; empty means any model.
    public var models: [String]
    public var engine: Engine
    /// KV-cache capacity in tokens, when known (config or probe); sizes its slice of the prefix index.
    public var cacheTokens: Int?

    public init(
        name: String,
        url: String,
        weight: Double = 1,
        models: [String] = [],
        engine: Engine = .vllm,
        cacheTokens: Int? = nil
    ) {
        self.name = name
        self.url = url
        self.weight = weight
        self.models = models
        self.engine = engine
        self.cacheTokens = cacheTokens
    }
}

/// Membership, parsed addresses, routability and rings as one immutable value, rebuilt and
/// swapped whole so they never disagree. A change (reload, discovery, a health transition) builds
/// a new one; a request keeps the snapshot it was routed with until it ends, so a fleet index it
/// holds always means the same replica and address. Immutable, so a class behaves as a value:
/// passing it on per request is one reference count instead of one per array it holds.
public final class FleetSnapshot: Sendable {
    /// Every replica, routable or not. Positions are "fleet indices".
    public let replicas: [ReplicaSpec]
    /// Each replica's parsed address and the bytes written for it (same positions).
    public let endpoints: [ReplicaEndpoint]
    /// Stable identity of each replica across snapshots (same name, same id), for per-replica state.
    public let ids: [Int]
    /// Whether each replica may receive traffic (health up and not ejected).
    public let routable: [Bool]
    /// XXH3 of each name: the rendezvous seed.
    public let nameSeeds: [UInt64]
    /// Pools by model name; a pool holds the replicas listing the model plus those serving any model.
    let pools: [String: Pool]
    /// Replicas that serve any model (used for unknown and unnamed models).
    let anyModel: Pool
    /// Every routable replica (the last resort for a model nobody lists).
    let everyone: Pool
    /// The id to give the next new name.
    public let nextID: Int
    /// Fleet index by the tag stored-response ids carry (`StoredResponseID`).
    let byResponseTag: [Substring: Int]

    /// A set of replicas and the ring over its routable members.
    public final class Pool: Sendable {
        public let members: [Int]
        public let ring: HashRing

        init(members: [Int], ring: HashRing) {
            self.members = members
            self.ring = ring
        }
    }

    /// Builds a snapshot. Ids and endpoints carry over from `previous` by name (an endpoint only
    /// while its URL stays). A replica whose URL cannot be parsed is never routable.
    public init(replicas: [ReplicaSpec], routable: [Bool]? = nil, vnodesPerWeight: Int = 256, previous: FleetSnapshot? = nil) {
        self.replicas = replicas
        var previousEndpoints: [String: ReplicaEndpoint] = [:]
        if let previous {
            for (i, r) in previous.replicas.enumerated() { previousEndpoints[r.name] = previous.endpoints[i] }
        }
        let endpoints = replicas.map { spec in
            if let old = previousEndpoints[spec.name], old.urlText == spec.url { return old }
            return ReplicaEndpoint(name: spec.name, url: spec.url)
        }
        self.endpoints = endpoints
        var flags = routable ?? [Bool](repeating: true, count: replicas.count)
        precondition(flags.count == replicas.count, "one health flag per replica")
        for i in flags.indices where endpoints[i].url == nil { flags[i] = false }
        let routable = flags
        self.routable = routable
        var nextID = previous?.nextID ?? 0
        var previousIDs: [String: Int] = [:]
        if let previous {
            for (i, r) in previous.replicas.enumerated() { previousIDs[r.name] = previous.ids[i] }
        }
        var ids: [Int] = []
        for r in replicas {
            if let id = previousIDs[r.name] {
                ids.append(id)
            } else {
                ids.append(nextID)
                nextID += 1
            }
        }
        self.ids = ids
        self.nextID = nextID
        var tags: [Substring: Int] = [:]
        for (i, e) in endpoints.enumerated() { tags[Substring(e.responseTag)] = i }
        self.byResponseTag = tags
        self.nameSeeds = replicas.map { XXH3.hash($0.name) }

        func pool(_ members: [Int]) -> Pool {
            let up = members.filter { routable[$0] }
            return Pool(
                members: members,
                ring: HashRing(
                    members: up.map { ($0, replicas[$0].name, replicas[$0].weight) },
                    vnodesPerWeight: vnodesPerWeight
                )
            )
        }
        let anyModelMembers = replicas.indices.filter { replicas[$0].models.isEmpty }
        var byModel: [String: [Int]] = [:]
        for (i, r) in replicas.enumerated() {
            for m in r.models { byModel[m, default: []].append(i) }
        }
        var pools: [String: Pool] = [:]
        for (model, members) in byModel {
            pools[model] = pool((members + anyModelMembers).sorted())
        }
        self.pools = pools
        self.anyModel = pool(anyModelMembers)
        self.everyone = pool(Array(replicas.indices))
    }

    /// The pool for a model and how it was chosen.
    public func pool(for model: String?) -> (pool: Pool, match: PoolMatch) {
        if let model, let pool = self.pools[model] { return (pool, .listed) }
        if !self.anyModel.members.isEmpty { return (self.anyModel, model == nil ? .unnamed : .anyModel) }
        return (self.everyone, .nobodyLists)
    }

    /// How a request's model was matched to a pool.
    public enum PoolMatch: Sendable, Equatable {
        /// Replicas list this model.
        case listed
        /// No model in the request: replicas that serve any model.
        case unnamed
        /// Not listed anywhere: replicas that serve any model.
        case anyModel
        /// Nobody lists it and no replica serves any model: every replica (the replica will answer 404).
        case nobodyLists
    }

    /// The fleet index of the replica that holds the stored response `id` (nil: an id the
    /// router did not make, or made for a replica no longer in the fleet).
    public func replica(holdingResponse id: some StringProtocol) -> Int? {
        StoredResponseID.tag(of: id).flatMap { self.byResponseTag[$0] }
    }

    /// Whether `id` is one of the router's stored-response ids.
    public static func isRouterResponseID(_ id: some StringProtocol) -> Bool {
        StoredResponseID.tag(of: id) != nil
    }

    /// Fleet index of a replica by name.
    public func index(of name: String) -> Int? {
        self.replicas.firstIndex { $0.name == name }
    }

    /// Number of routable replicas.
    public var routableCount: Int { self.routable.lazy.filter { $0 }.count }

    /// A copy with different routability, keeping ids (a health change).
    public func with(routable: [Bool], vnodesPerWeight: Int) -> FleetSnapshot {
        FleetSnapshot(replicas: self.replicas, routable: routable, vnodesPerWeight: vnodesPerWeight, previous: self)
    }
}
