/// The response cache's counters, as `/metrics` shows them.
public struct CacheStats: Sendable, Equatable {
    /// Requests by what the cache did: hit_exact, hit_semantic, miss, bypass.
    public var results: [String: Int] = [:]
    /// Answers stored.
    public var stores = 0
    /// Answers not stored, by reason (`AnswerRefusal`, no_store).
    public var refused: [String: Int] = [:]
    /// Entries the memory store dropped for room.
    public var evictions = 0
    /// The memory store's size (entries, keys and bookkeeping), and its entry count.
    public var bytes = 0
    public var entries = 0
    /// Redis commands that failed or timed out.
    public var redisErrors = 0
    /// Stored entries found corrupt (deleted, taken as misses).
    public var corrupt = 0
    /// Embedding calls: failures (error, timeout, over budget) and the latency histogram.
    public var embeddingErrors = 0
    public var embeddingBuckets: [Int] = Array(repeating: 0, count: CacheStats.embeddingBounds.count)
    public var embeddingCount = 0
    public var embeddingSum = 0.0
    /// Vectors in this router's semantic index.
    public var vectors = 0

    public static let embeddingBounds: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]

    public init() {}

    public mutating func observeEmbedding(seconds: Double) {
        self.embeddingCount += 1
        self.embeddingSum += seconds
        for (i, bound) in Self.embeddingBounds.enumerated() where seconds <= bound { self.embeddingBuckets[i] += 1 }
    }
}
