/// How much of the response cache a request uses. Ordered: a route's `max_mode` caps what a
/// request may ask for.
public enum CacheMode: String, Sendable, CaseIterable, Comparable {
    /// Neither looked up nor stored.
    case off
    /// The same normalized request gets the same stored answer.
    case exact
    /// Exact first; then an earlier request that means the same, within the gates.
    case semantic

    var rank: Int {
        switch self {
        case .off: 0
        case .exact: 1
        case .semantic: 2
        }
    }

    public static func < (a: CacheMode, b: CacheMode) -> Bool { a.rank < b.rank }
}

/// Where entries live.
public enum CacheBackend: String, Sendable, CaseIterable {
    /// In this router's memory: a byte-bounded LRU.
    case memory
    /// In a Redis server every router instance shares.
    case redis
}

/// Which requests a cache route applies to; every given field must match.
public struct CacheMatch: Sendable, Equatable {
    public var model: String?
    public var tenant: String?
    /// The request path, e.g. `/v1/chat/completions`.
    public var path: String?
    /// A header with this value (name lower-case).
    public var header: (name: String, value: String)?

    public init(model: String? = nil, tenant: String? = nil, path: String? = nil, header: (name: String, value: String)? = nil) {
        self.model = model
        self.tenant = tenant
        self.path = path
        self.header = header
    }

    public static func == (a: CacheMatch, b: CacheMatch) -> Bool {
        a.model == b.model && a.tenant == b.tenant && a.path == b.path && a.header?.name == b.header?.name && a.header?.value == b.header?.value
    }
}

/// What the cache does for the requests a route matches (the first matching route wins; a
/// request no route matches gets the section's defaults).
public struct CacheRoute: Sendable, Equatable {
    public var match: CacheMatch
    /// The mode of a request that does not ask for one.
    public var mode: CacheMode
    /// The most a request may ask for: `off` excludes a workload whatever its clients send,
    /// `exact` keeps an unsafe workload out of the semantic cache.
    public var maxMode: CacheMode
    /// How long its entries live.
    public var ttlSeconds: Double?
    /// The least cosine similarity of a semantic hit.
    public var threshold: Double?
    /// Store answers sampled without a seed (`temperature > 0`, or unset).
    public var allowSampled: Bool?

    public init(
        match: CacheMatch, mode: CacheMode = .off, maxMode: CacheMode = .semantic, ttlSeconds: Double? = nil, threshold: Double? = nil,
        allowSampled: Bool? = nil
    ) {
        self.match = match
        self.mode = mode
        self.maxMode = maxMode
        self.ttlSeconds = ttlSeconds
        self.threshold = threshold
        self.allowSampled = allowSampled
    }
}

/// `cache.redis`: the shared store.
public struct RedisSettings: Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port = 6379
    /// Every key the router writes starts with this.
    public var keyPrefix = "cacheroute:"
    /// The longest a request waits for Redis before it goes on to the fleet.
    public var timeoutSeconds: Double = 0.05
    /// `AUTH` with this password (read from the file), if set.
    public var passwordFile: String?
    /// Connections to Redis (commands are pipelined on each).
    public var connections = 2

    public init() {}
}

/// `cache.semantic`: embeddings and the nearest-neighbour index.
public struct SemanticSettings: Sendable, Equatable {
    /// An OpenAI-compatible embeddings endpoint, e.g. `http://127.0.0.1:8009/v1/embeddings`.
    public var embeddingsURL: String?
    /// The `model` sent to it.
    public var model = "all-MiniLM-L6-v2"
    /// The least cosine similarity of a hit, unless a route says otherwise. Conservative.
    public var threshold: Double = 0.95
    /// The longest a request waits for its embedding before it goes on to the fleet.
    public var timeoutSeconds: Double = 0.2
    /// Embedding calls in flight at once; beyond it a request skips the semantic step.
    public var maxConcurrent = 16
    /// The varying content (last user turn or prompt) embedded at most; a longer one skips the
    /// semantic step (it is not truncated: two texts differing past the cut would look the same).
    public var maxInputBytes = 4096
    /// Vectors kept per gate (model, tenant, the rest of the request), and in all (a 384-float
    /// vector takes 1.5 KiB): the oldest go first, from the gates least recently used.
    public var maxEntriesPerScope = 4096
    public var maxVectors = 50_000
    /// Headers whose values are part of the scope (a locale, a product version).
    public var scopeHeaders: [String] = []
    /// Redis mode: how stale this router's copy of a scope's shared vectors may be.
    public var syncSeconds: Double = 1

    public init() {}
}

/// The `cache` section: the exact and semantic response caches in front of the fleet. Off by
/// default; a request or a route opts in.
public struct CacheSettings: Sendable, Equatable {
    /// The layer exists (a store is made); requests and routes then opt in.
    public var enabled = false
    /// The mode of a request no route matches and that does not ask for one.
    public var defaultMode: CacheMode = .off
    /// The most a request no route matches may ask for.
    public var maxMode: CacheMode = .semantic
    public var backend: CacheBackend = .memory
    /// The memory store's bound (entries and their keys).
    public var maxBytes = 256 << 20
    /// A larger answer is not stored.
    public var maxEntryBytes = 1 << 20
    public var ttlSeconds: Double = 600
    /// Store answers sampled without a seed (a fresh sample was probably wanted).
    public var allowSampled = false
    /// Seconds between the events of a replayed stream (0: all at once).
    public var streamPacingSeconds: Double = 0
    public var routes: [CacheRoute] = []
    public var redis = RedisSettings()
    public var semantic = SemanticSettings()

    public init() {}

    /// The first route `request` matches.
    public func route(model: String?, tenant: String, path: String, header: (String) -> String?) -> CacheRoute? {
        self.routes.first { r in
            let m = r.match
            if let want = m.model, want != model { return false }
            if let want = m.tenant, want != tenant { return false }
            if let want = m.path, want != path { return false }
            if let h = m.header, header(h.name) != h.value { return false }
            return true
        }
    }
}
