#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import FleetState
import PrometheusText
import RoutingCore

/// The per-request metric families (requests, routing decisions, time to first token, request
/// duration, observed prompt and cached tokens), counted by each thread in a shard of its own and
/// summed when Prometheus scrapes.
///
/// Every answered request touches about eight of these series. Kept as swift-prometheus counters
/// and histograms shared by the event loops, that was a read lock, four contended atomics and two
/// histogram locks per request: ~2 us of CPU each with two loops (`Benchmarks/README.md`). Here a
/// request takes the uncontended lock of its own thread's shard once; a scrape takes each shard's
/// lock briefly to add them up. `PrometheusWriter` writes the families.
///
/// Memory is bounded by the label sets, as before: routes and statuses are small sets, replicas
/// are the fleet's, and a replica's series go when it leaves (`keep(replicas:)`).
final class RequestTallies: @unchecked Sendable {
    struct RequestKey: Hashable {
        var route: String
        var replica: String
        var status: Int
    }

    struct ReplicaCounts {
        var ttft: HistogramCounts
        var duration: HistogramCounts
        var promptTokens = 0
        var cachedTokens = 0

        init(ttftBounds: [Double], durationBounds: [Double]) {
            self.ttft = HistogramCounts(bounds: ttftBounds)
            self.duration = HistogramCounts(bounds: durationBounds)
        }

        mutating func record(_ s: RequestSummary) {
            self.duration.observe(s.seconds)
            if let t = s.firstTokenSeconds { self.ttft.observe(t) }
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

    struct TenantKey: Hashable {
        var tenant: String
        var status: Int
    }

    struct Counts {
        var requests: [RequestKey: Int] = [:]
        /// Bounded by the configured tenants (the rest are `other`).
        var tenants: [TenantKey: Int] = [:]
        /// Prompt and cached tokens the replicas reported, by tenant (the same bounded labels).
        var tenantTokens: [String: (prompt: Int, cached: Int)] = [:]
        var decisions: [Tier: Int] = [:]
        var replicas: [String: ReplicaCounts] = [:]

        mutating func add(_ other: Counts) {
            for (key, n) in other.requests { self.requests[key, default: 0] += n }
            for (key, n) in other.tenants { self.tenants[key, default: 0] += n }
            for (tenant, t) in other.tenantTokens {
                let mine = self.tenantTokens[tenant] ?? (0, 0)
                self.tenantTokens[tenant] = (mine.prompt + t.prompt, mine.cached + t.cached)
            }
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

    /// Bucket bounds in seconds, without +Inf.
    let ttftBounds: [Double]
    let durationBounds: [Double]
    /// Every shard ever made (one per thread that answered a request); they hold totals.
    private let shards = AdaptiveLockedBox<[Shard]>([])
    /// This object's shard of the calling thread, unretained (`shards` keeps it alive).
    private var key = pthread_key_t()

    init(ttftBounds: [Double], durationBounds: [Double]) {
        self.ttftBounds = ttftBounds
        self.durationBounds = durationBounds
        let err = pthread_key_create(&self.key, nil)
        precondition(err == 0, "pthread_key_create failed: \(err)")
    }

    deinit {
        pthread_key_delete(self.key)
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
        let ttftBounds = self.ttftBounds
        let durationBounds = self.durationBounds
        self.shard().counts.withLockedValue { c in
            c.requests[RequestKey(route: s.route, replica: s.replica ?? "none", status: s.status), default: 0] += 1
            if let tenant = s.tenant {
                c.tenants[TenantKey(tenant: tenant, status: s.status), default: 0] += 1
                if let prompt = s.usagePromptTokens {
                    let t = c.tenantTokens[tenant] ?? (0, 0)
                    c.tenantTokens[tenant] = (t.prompt + prompt, t.cached + (s.usageCachedTokens ?? 0))
                }
            }
            if let tier = s.tier { c.decisions[tier, default: 0] += 1 }
            guard let replica = s.replica else { return }
            // Not `[replica, default: ...]`: that autoclosure's context is allocated on every call.
            if c.replicas[replica] == nil {
                c.replicas[replica] = ReplicaCounts(ttftBounds: ttftBounds, durationBounds: durationBounds)
            }
            c.replicas[replica]!.record(s)
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
        let empty = ReplicaCounts(ttftBounds: self.ttftBounds, durationBounds: self.durationBounds)
        let perReplica = replicas.sorted().map { ($0, total.replicas[$0] ?? empty) }
        var w = PrometheusWriter()
        w.family(MetricName.requests, type: "counter", help: help(MetricName.requests))
        for (key, n) in total.requests.sorted(by: { ($0.key.route, $0.key.replica, $0.key.status) < ($1.key.route, $1.key.replica, $1.key.status) }) {
            w.sample(MetricName.requests, [("route", key.route), ("replica", key.replica), ("status", String(key.status))], Double(n))
        }
        w.family(MetricName.tenantRequests, type: "counter", help: help(MetricName.tenantRequests))
        for (key, n) in total.tenants.sorted(by: { ($0.key.tenant, $0.key.status) < ($1.key.tenant, $1.key.status) }) {
            w.sample(MetricName.tenantRequests, [("tenant", key.tenant), ("status", String(key.status))], Double(n))
        }
        w.family(MetricName.tenantPromptTokens, type: "counter", help: help(MetricName.tenantPromptTokens))
        for (tenant, t) in total.tenantTokens.sorted(by: { $0.key < $1.key }) { w.sample(MetricName.tenantPromptTokens, [("tenant", tenant)], Double(t.prompt)) }
        w.family(MetricName.tenantCachedTokens, type: "counter", help: help(MetricName.tenantCachedTokens))
        for (tenant, t) in total.tenantTokens.sorted(by: { $0.key < $1.key }) { w.sample(MetricName.tenantCachedTokens, [("tenant", tenant)], Double(t.cached)) }
        w.family(MetricName.decisions, type: "counter", help: help(MetricName.decisions))
        for tier in Tier.allCases {
            w.sample(MetricName.decisions, [("tier", tier.rawValue)], Double(total.decisions[tier] ?? 0))
        }
        for (name, histogram) in [(MetricName.ttft, \ReplicaCounts.ttft), (MetricName.duration, \ReplicaCounts.duration)] {
            w.family(name, type: "histogram", help: help(name))
            for (replica, counts) in perReplica {
                let h = counts[keyPath: histogram]
                w.histogramSamples(name, labels: [("replica", replica)], bounds: h.bounds, counts: h.counts, sum: h.sum)
            }
        }
        for (name, tokens) in [(MetricName.observedPromptTokens, \ReplicaCounts.promptTokens), (MetricName.observedCachedTokens, \ReplicaCounts.cachedTokens)] {
            w.family(name, type: "counter", help: help(name))
            for (replica, counts) in perReplica { w.sample(name, [("replica", replica)], Double(counts[keyPath: tokens])) }
        }
        out.append(contentsOf: w.text.utf8)
    }
}
