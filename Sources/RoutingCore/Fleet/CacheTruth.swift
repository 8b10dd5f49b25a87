/// Why the router forgot what it thought a replica's prefix cache held.
public enum CacheResetReason: String, Sendable, CaseIterable {
    /// `process_start_time_seconds` changed: the replica restarted.
    case restart
    /// Its prefix-cache counters went backwards: a new engine behind the same address.
    case countersReset = "counters_reset"
    /// It came back after its probes took it down: it may have restarted unseen.
    case healthFlap = "health_flap"
    /// Several answers in a row where the router predicted a hit and the replica reported
    /// (almost) nothing cached: it lost its cache (`/reset_prefix_cache`, a restart between probes).
    case mispredictions
}

/// One answer the router expected to be served from the replica's cache that was not.
public struct Misprediction: Sendable, Equatable {
    /// The router's clock.
    public var at: Double
    /// Prompt tokens the router predicted cached, in the replica's tokens.
    public var predictedTokens: Int
    /// Cached tokens the replica reported.
    public var reportedTokens: Int
    public var promptTokens: Int
}

/// The router's predictions of each replica's prefix cache checked against what the replica
/// reports: predicted and reported cached tokens per replica (the same answers), the last
/// mispredictions, and the signals that the replica's cache is gone (restart, counters going
/// backwards, a health flap, a run of mispredictions). Pure: the router's clock comes in.
public struct CacheTruth: Sendable {
    public struct Replica: Sendable, Equatable {
        /// Cumulative, over answers whose usage reported cached tokens.
        public var predictedTokens = 0
        public var reportedTokens = 0
        public var answers = 0
        /// Mispredictions in a row (a good prediction ends the run).
        public var run = 0
        public var recent: [Misprediction] = []
        /// Resets by reason.
        public var resets: [CacheResetReason: Int] = [:]
        var processStart: Double?
        var cacheQueries: Double?
        var wasDown = false

        public init() {}
    }

    /// Mispredictions kept per replica.
    public static let recentLimit = 16
    /// Mispredictions in a row that mean the replica lost its cache.
    public static let runLimit = 3

    public private(set) var replicas: [Int: Replica] = [:]

    public init() {}

    /// An answer's usage: `predicted` (in the router's estimated tokens, of `estimatedPrompt`)
    /// against the replica's `reportedCached` of `reportedPrompt`. Returns a reason to forget the
    /// replica's entries when this ends a run of mispredictions.
    public mutating func answered(replicaID id: Int, predicted: Int, estimatedPrompt: Int, reportedPrompt: Int?, reportedCached: Int, now: Double) -> CacheResetReason? {
        // The router counts tokens by bytes; the replica by its tokenizer: scale to the replica's.
        var scaled = predicted
        if let prompt = reportedPrompt, prompt > 0, estimatedPrompt > 0 {
            scaled = Int((Double(predicted) * Double(prompt) / Double(estimatedPrompt)).rounded())
        }
        let prompt = reportedPrompt ?? estimatedPrompt
        // In place: one lookup, no copy of the replica's lists.
        return Self.modify(&self.replicas, id) { r -> CacheResetReason? in
            r.predictedTokens += scaled
            r.reportedTokens += reportedCached
            r.answers += 1
            // A miss worth noting: at least a quarter of the prompt and 64 tokens expected, under a
            // quarter of that came back.
            guard scaled >= 64, scaled * 4 >= prompt, reportedCached * 4 < scaled else {
                if scaled > 0, reportedCached * 2 >= scaled { r.run = 0 }
                return nil
            }
            r.recent.append(Misprediction(at: now, predictedTokens: scaled, reportedTokens: reportedCached, promptTokens: prompt))
            if r.recent.count > Self.recentLimit { r.recent.removeFirst(r.recent.count - Self.recentLimit) }
            r.run += 1
            guard r.run >= Self.runLimit else { return nil }
            r.run = 0
            r.resets[.mispredictions, default: 0] += 1
            return .mispredictions
        }
    }

    static func modify<R>(_ replicas: inout [Int: Replica], _ id: Int, _ body: (inout Replica) -> R) -> R {
        body(&replicas[id, default: Replica()])
    }

    /// What a `/metrics` scrape says: the process start time and the prefix-cache query counter.
    public mutating func probed(replicaID id: Int, processStart: Double?, cacheQueries: Double?) -> CacheResetReason? {
        var r = self.replicas[id] ?? Replica()
        defer { self.replicas[id] = r }
        var reason: CacheResetReason?
        if let start = processStart {
            if let last = r.processStart, abs(last - start) > 0.5 { reason = .restart }
            r.processStart = start
        }
        if let queries = cacheQueries {
            if reason == nil, let last = r.cacheQueries, queries < last { reason = .countersReset }
            r.cacheQueries = queries
        }
        if let reason {
            r.run = 0
            r.resets[reason, default: 0] += 1
            // Seen restarted while down: coming back up is not a second reason.
            r.wasDown = false
        }
        return reason
    }

    /// A health transition: back up after being down is a reason to forget.
    public mutating func health(replicaID id: Int, up: Bool) -> CacheResetReason? {
        var r = self.replicas[id] ?? Replica()
        defer { self.replicas[id] = r }
        if !up {
            r.wasDown = true
            return nil
        }
        guard r.wasDown else { return nil }
        r.wasDown = false
        r.run = 0
        r.resets[.healthFlap, default: 0] += 1
        return .healthFlap
    }

    /// Drops replicas that left the fleet.
    public mutating func retain(replicaIDs ids: Set<Int>) {
        self.replicas = self.replicas.filter { ids.contains($0.key) }
    }
}
