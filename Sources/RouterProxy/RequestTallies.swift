#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Prometheus
import RoutingCore

/// The per-request metric families (requests, routing decisions, time to first token, request
/// duration, observed prompt and cached tokens), counted by each thread in a shard of its own and
/// summed when Prometheus scrapes.
///
/// Every answered request touches about eight of these series. Kept as swift-prometheus counters
/// and histograms shared by the event loops, that was a read lock, four contended atomics and two
/// histogram locks per request: ~2 us of CPU each with two loops (`Benchmarks/README.md`). Here a
/// request takes the uncontended lock of its own thread's shard once; a scrape takes each shard's
/// lock briefly to add them up. The text is what swift-prometheus writes for the same series.
///
/// Memory is bounded by the label sets, as before: routes and statuses are small sets, replicas
/// are the fleet's, and a replica's series go when it leaves (`keep(replicas:)`).
final class RequestTallies: @unchecked Sendable {
    struct RequestKey: Hashable {
        var route: String
        var replica: String
        var status: Int
    }

    /// Observations per bucket (not cumulative; the last is +Inf) and their sum.
    struct Buckets {
        var counts: [Int]
        var sumNanoseconds: Int64 = 0

        init(bounds: Int) {
            self.counts = [Int](repeating: 0, count: bounds + 1)
        }

        mutating func record(_ nanoseconds: Int64, bounds: [Int64]) {
            var i = 0
            while i < bounds.count, bounds[i] < nanoseconds { i += 1 }
            self.counts[i] += 1
            self.sumNanoseconds &+= nanoseconds
        }

        mutating func add(_ other: Buckets) {
            for i in self.counts.indices { self.counts[i] += other.counts[i] }
            self.sumNanoseconds &+= other.sumNanoseconds
        }
    }

    struct ReplicaCounts {
        var ttft: Buckets
        var duration: Buckets
        var promptTokens = 0
        var cachedTokens = 0

        init(ttftBounds: Int, durationBounds: Int) {
            self.ttft = Buckets(bounds: ttftBounds)
            self.duration = Buckets(bounds: durationBounds)
        }

        mutating func record(_ s: RequestSummary, ttftBounds: [Int64], durationBounds: [Int64]) {
            self.duration.record(Int64(s.seconds * 1e9), bounds: durationBounds)
            if let t = s.firstTokenSeconds { self.ttft.record(Int64(t * 1e9), bounds: ttftBounds) }
            if let p = s.usagePromptTokens { self.promptTokens += p }
            if let c = s.usageCachedTokens { self.cachedTokens += c }
        }

        mutating func add(_ other: ReplicaCounts) {
            self.ttft.add(other.ttft)
            self.duration.add(other.duration)
            self.promptTokens += other.promptTokens
            self.cachedTokens += other.cachedTokens
        }
    }

    struct Counts {
        var requests: [RequestKey: Int] = [:]
        var decisions: [Tier: Int] = [:]
        var replicas: [String: ReplicaCounts] = [:]

        mutating func add(_ other: Counts) {
            for (key, n) in other.requests { self.requests[key, default: 0] += n }
            for (tier, n) in other.decisions { self.decisions[tier, default: 0] += n }
            for (name, counts) in other.replicas {
                if self.replicas[name] == nil { self.replicas[name] = counts } else { self.replicas[name]!.add(counts) }
            }
        }

        mutating func keep(replicas names: Set<String>) {
            self.replicas = self.replicas.filter { names.contains($0.key) }
            self.requests = self.requests.filter { $0.key.replica == "none" || names.contains($0.key.replica) }
        }
    }

    final class Shard: Sendable {
        let counts = AdaptiveLockedBox(Counts())
    }

    let ttftBounds: [Duration]
    let durationBounds: [Duration]
    private let ttftNanoseconds: [Int64]
    private let durationNanoseconds: [Int64]
    /// Every shard ever made (one per thread that answered a request); they hold totals.
    private let shards = AdaptiveLockedBox<[Shard]>([])
    /// This object's shard of the calling thread, unretained (`shards` keeps it alive).
    private var key = pthread_key_t()

    init(ttftBounds: [Duration], durationBounds: [Duration]) {
        self.ttftBounds = ttftBounds
        self.durationBounds = durationBounds
        self.ttftNanoseconds = ttftBounds.map(Self.nanoseconds)
        self.durationNanoseconds = durationBounds.map(Self.nanoseconds)
        let err = pthread_key_create(&self.key, nil)
        precondition(err == 0, "pthread_key_create failed: \(err)")
    }

    deinit {
        pthread_key_delete(self.key)
    }

    static func nanoseconds(_ d: Duration) -> Int64 {
        d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000
    }

    private func shard() -> Shard {
        if let raw = pthread_getspecific(self.key) { return Unmanaged<Shard>.fromOpaque(raw).takeUnretainedValue() }
        let shard = Shard()
        self.shards.withLockedValue { $0.append(shard) }
        pthread_setspecific(self.key, Unmanaged.passUnretained(shard).toOpaque())
        return shard
    }

    /// Counts one answered request in the calling thread's shard.
    func record(_ s: RequestSummary) {
        let ttftBounds = self.ttftNanoseconds
        let durationBounds = self.durationNanoseconds
        self.shard().counts.withLockedValue { c in
            c.requests[RequestKey(route: s.route, replica: s.replica ?? "none", status: s.status), default: 0] += 1
            if let tier = s.tier { c.decisions[tier, default: 0] += 1 }
            guard let replica = s.replica else { return }
            // Not `[replica, default: ...]`: that autoclosure's context is allocated on every call.
            if c.replicas[replica] == nil {
                c.replicas[replica] = ReplicaCounts(ttftBounds: ttftBounds.count, durationBounds: durationBounds.count)
            }
            c.replicas[replica]!.record(s, ttftBounds: ttftBounds, durationBounds: durationBounds)
        }
    }

    /// Drops the series of replicas that left the fleet.
    func keep(replicas names: Set<String>) {
        for shard in self.shards.withLockedValue({ $0 }) {
            shard.counts.withLockedValue { $0.keep(replicas: names) }
        }
    }

    /// The sum over all shards.
    func totals() -> Counts {
        var total = Counts()
        for shard in self.shards.withLockedValue({ $0 }) {
            let counts = shard.counts.withLockedValue { $0 }
            total.add(counts)
        }
        return total
    }

    // MARK: - Exposition

    /// Writes the families for `replicas` (every replica in the fleet gets its series, zero or
    /// not) and every tier.
    func emit(into out: inout [UInt8], replicas: [String], help: (String) -> String) {
        var total = self.totals()
        total.keep(replicas: Set(replicas))
        let empty = ReplicaCounts(ttftBounds: self.ttftBounds.count, durationBounds: self.durationBounds.count)
        let perReplica = replicas.sorted().map { ($0, total.replicas[$0] ?? empty) }

        Self.family(&out, MetricName.requests, "counter", help)
        for (key, n) in total.requests.sorted(by: { ($0.key.route, $0.key.replica, $0.key.status) < ($1.key.route, $1.key.replica, $1.key.status) }) {
            Self.sample(&out, MetricName.requests, [("route", key.route), ("replica", key.replica), ("status", String(key.status))], String(n))
        }
        Self.family(&out, MetricName.decisions, "counter", help)
        for tier in [Tier.session, .group, .spill, .fallback, .pinned] {
            Self.sample(&out, MetricName.decisions, [("tier", tier.rawValue)], String(total.decisions[tier] ?? 0))
        }
        Self.family(&out, MetricName.ttft, "histogram", help)
        for (name, counts) in perReplica { Self.histogram(&out, MetricName.ttft, name, counts.ttft, self.ttftBounds) }
        Self.family(&out, MetricName.duration, "histogram", help)
        for (name, counts) in perReplica { Self.histogram(&out, MetricName.duration, name, counts.duration, self.durationBounds) }
        Self.family(&out, MetricName.observedPromptTokens, "counter", help)
        for (name, counts) in perReplica { Self.sample(&out, MetricName.observedPromptTokens, [("replica", name)], String(counts.promptTokens)) }
        Self.family(&out, MetricName.observedCachedTokens, "counter", help)
        for (name, counts) in perReplica { Self.sample(&out, MetricName.observedCachedTokens, [("replica", name)], String(counts.cachedTokens)) }
    }

    static func family(_ out: inout [UInt8], _ name: String, _ type: String, _ help: (String) -> String) {
        let text = help(name)
        if !text.isEmpty {
            out.append(contentsOf: "# HELP \(name) ".utf8)
            for byte in text.utf8 {
                if byte == UInt8(ascii: "\\") { out.append(contentsOf: #"\\"#.utf8) } else { out.append(byte) }
            }
            out.append(UInt8(ascii: "\n"))
        }
        out.append(contentsOf: "# TYPE \(name) \(type)\n".utf8)
    }

    static func sample(_ out: inout [UInt8], _ name: String, _ labels: [(String, String)], _ value: String) {
        out.append(contentsOf: name.utf8)
        if !labels.isEmpty {
            out.append(UInt8(ascii: "{"))
            for (i, (label, text)) in labels.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                out.append(contentsOf: label.utf8)
                out.append(contentsOf: "=\"".utf8)
                for byte in text.utf8 {
                    switch byte {
                    case UInt8(ascii: "\\"): out.append(contentsOf: #"\\"#.utf8)
                    case UInt8(ascii: "\""): out.append(contentsOf: #"\""#.utf8)
                    case UInt8(ascii: "\n"): out.append(contentsOf: #"\n"#.utf8)
                    default: out.append(byte)
                    }
                }
                out.append(UInt8(ascii: "\""))
            }
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: " "))
        out.append(contentsOf: value.utf8)
        out.append(UInt8(ascii: "\n"))
    }

    /// Cumulative buckets, `_sum` in seconds and `_count`, as swift-prometheus writes a duration histogram.
    static func histogram(_ out: inout [UInt8], _ name: String, _ replica: String, _ b: Buckets, _ bounds: [Duration]) {
        var cumulative = 0
        for (i, bound) in bounds.enumerated() {
            cumulative += b.counts[i]
            Self.sample(&out, name + "_bucket", [("replica", replica), ("le", bound.bucketRepresentation)], String(cumulative))
        }
        let count = cumulative + b.counts[bounds.count]
        Self.sample(&out, name + "_bucket", [("replica", replica), ("le", "+Inf")], String(count))
        Self.sample(&out, name + "_sum", [("replica", replica)], Duration.nanoseconds(b.sumNanoseconds).bucketRepresentation)
        Self.sample(&out, name + "_count", [("replica", replica)], String(count))
    }
}
