import Atomics
import FastJSON
import FleetState
import HTTPTransport
import Logging
import NIOConcurrencyHelpers
import NIOHTTP1
import NIOPosix
import PrometheusText
import RouterConfig
import RoutingCore
import ServiceLifecycle

/// Active probes: every replica on `health.interval`, `GET /health` (with consecutive
/// failure/success thresholds in the core's health state machine) and `GET /metrics` (queue
/// depth, KV usage, prefix-cache counters, KV capacity), plus `GET /v1/models` for replicas that
/// list no models. One task per replica: a slow replica never delays another's probe, and
/// nothing here holds the routing lock longer than a state update.
public final class ProbeService: Service, Sendable {
    let state: RouterState
    let client: HTTPClient
    let logger: Logger
    let readyFlag = ManagedAtomic(false)
    /// Replicas probed at least once since start (readiness waits for all of the first fleet).
    let probedOnce = NIOLockedValueBox(Set<String>())

    public init(state: RouterState, logger: Logger, client: HTTPClient = HTTPClient(group: MultiThreadedEventLoopGroup.singleton)) {
        self.state = state
        self.logger = logger
        self.client = client
    }

    /// True once every replica has been probed once (`/readyz`).
    public var isReady: Bool { self.readyFlag.load(ordering: .relaxed) }

    public func run() async throws {
        // One loop per replica, started and stopped as the fleet changes.
        var tasks: [String: (url: ReplicaURL, task: Task<Void, Never>)] = [:]
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            let report = self.state.replicaReport()
            let wanted = Dictionary(report.map { ($0.spec.name, $0) }, uniquingKeysWith: { a, _ in a })
            for (name, entry) in tasks where wanted[name]?.endpoint.url != entry.url {
                entry.task.cancel()
                tasks[name] = nil
            }
            for (name, r) in wanted where tasks[name] == nil {
                guard let url = r.endpoint.url else { continue }
                let engine = r.spec.engine
                let listsModels = !r.spec.models.isEmpty
                tasks[name] = (url, Task { await self.probeLoop(name: name, url: url, engine: engine, listsModels: listsModels) })
            }
            if report.isEmpty { self.readyFlag.store(true, ordering: .relaxed) }
            try? await Task.sleep(for: .milliseconds(250))
        }
        for (_, entry) in tasks { entry.task.cancel() }
    }

    func probeLoop(name: String, url: ReplicaURL, engine: Engine, listsModels: Bool) async {
        var hits = HitRatioTracker()
        var round = 0
        // Spread the first probes a little so a big fleet is not probed in one burst.
        try? await Task.sleep(for: .milliseconds(Int.random(in: 0...50)))
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            let settings = self.state.config.health
            await self.probeOnce(name: name, url: url, engine: engine, settings: settings, hits: &hits, models: !listsModels && round % 15 == 0)
            round += 1
            self.markProbed(name)
            try? await Task.sleep(for: .milliseconds(Int(settings.interval * 1000)))
        }
    }

    func markProbed(_ name: String) {
        guard !self.readyFlag.load(ordering: .relaxed) else { return }
        let all = Set(self.state.fleet.replicas.map(\.name))
        let done = self.probedOnce.withLockedValue { probed -> Bool in
            probed.insert(name)
            return all.isSubset(of: probed)
        }
        if done {
            self.readyFlag.store(true, ordering: .relaxed)
            self.logger.info("first probe round done", metadata: ["replicas": "\(all.count)", "routable": "\(self.state.fleet.routableCount)"])
        }
    }

    /// One round for one replica: health, then (when healthy) metrics and models.
    func probeOnce(name: String, url: ReplicaURL, engine: Engine, settings: ProbeSettings, hits: inout HitRatioTracker, models: Bool) async {
        let now = self.state.now()
        let health = await self.fetch(url, "/health", timeout: settings.timeout)
        let healthy: Bool
        let error: String?
        switch health {
        case .success(let r) where r.status.code == 200:
            healthy = true
            error = nil
        case .success(let r):
            healthy = false
            error = "/health answered \(r.status.code)"
        case .failure(let e):
            healthy = false
            error = "/health: \(e)"
        }
        if let changed = self.state.probe(name, success: healthy, error: error) {
            let level: Logger.Level = changed == .down ? .warning : .notice
            var metadata: Logger.Metadata = ["replica": "\(name)"]
            if let error { metadata["error"] = "\(error)" }
            self.logger.log(level: level, "replica \(changed.rawValue)", metadata: metadata)
        }
        guard healthy else {
            self.state.recordProbe(name) { p in
                p.probeFailures += 1
                p.lastError = error
                p.lastErrorAt = now
            }
            return
        }
        var signals: ReplicaSignals?
        var scrapeError: String?
        if settings.scrapeMetrics {
            switch await self.fetch(url, "/metrics", timeout: settings.metricsTimeout) {
            case .success(let r) where r.status.code == 200:
                signals = ReplicaSignals(PrometheusParser.parse(r.bodyText), engine: engine)
            case .success(let r):
                scrapeError = "/metrics answered \(r.status.code)"
            case .failure(let e):
                scrapeError = "/metrics: \(e)"
            }
        }
        var modelList: [String]?
        if models, case .success(let r) = await self.fetch(url, "/v1/models", timeout: settings.metricsTimeout), r.status.code == 200,
            let data = (try? JSONValue.parse(r.bodyBytes))?["data"]?.arrayValue
        {
            modelList = data.compactMap { $0["id"]?.stringValue }
        }
        let ratio = signals.flatMap { s in s.cacheHitRate ?? s.cacheCounters.flatMap { hits.update(queries: $0.queries, hits: $0.hits) } }
        self.state.recordProbe(name) { p in
            p.lastSuccessAt = now
            if let scrapeError {
                p.lastError = scrapeError
                p.lastErrorAt = now
            }
            if let s = signals {
                p.waiting = s.waiting
                p.running = s.running
                p.kvUsage = s.kvUsage
                p.cacheTokens = s.cacheTokens ?? p.cacheTokens
                p.cacheQueries = s.cacheCounters?.queries
                p.cacheHits = s.cacheCounters?.hits
                if let ratio { p.hitRatio = ratio }
            }
            if let modelList { p.models = modelList }
        }
        if let s = signals {
            self.state.observeLoad(name, waiting: s.waiting, running: s.running, kvUsage: s.kvUsage, cacheTokens: s.cacheTokens)
            self.state.observeCacheSignals(name, processStart: s.processStart, cacheQueries: s.cacheCounters?.queries)
        }
        if let modelList, !modelList.isEmpty { self.state.observeModels(name, models: modelList) }
    }

    func fetch(_ url: ReplicaURL, _ path: String, timeout: Double) async -> Result<HTTPClientResponse, HTTPClientError> {
        do {
            let request = self.state.access.replicaRequest(url, path: path)
            return .success(try await self.client.execute(request, timeout: timeout, maxBody: 8 << 20))
        } catch let error as HTTPClientError {
            return .failure(error)
        } catch {
            return .failure(HTTPClientError.connect("\(error)"))
        }
    }
}

