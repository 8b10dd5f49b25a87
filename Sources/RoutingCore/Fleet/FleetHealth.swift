/// The health of every replica by name: active probes with hysteresis, passive ejection from
/// request outcomes, and when the next ejection ends (a rebuild of the snapshot is due then).
///
/// Pure: outcomes, probe results and the time go in; whether routability changed comes out.
public struct FleetHealth: Sendable {
    public var settings: HealthSettings
    public private(set) var replicas: [String: ReplicaHealth] = [:]
    /// The earliest time an ejection in force ends.
    public private(set) var nextEjectionEnd: Double?

    public init(settings: HealthSettings = HealthSettings()) {
        self.settings = settings
    }

    public subscript(name: String) -> ReplicaHealth? { self.replicas[name] }

    /// Whether `name` may receive traffic at `now` (a replica not known yet may).
    public func isRoutable(_ name: String, now: Double) -> Bool {
        self.replicas[name]?.isRoutable(now: now) ?? true
    }

    /// Keeps the health of `names` (new ones start unknown) and forgets the rest.
    public mutating func retain(_ names: [String], now: Double) {
        var kept: [String: ReplicaHealth] = [:]
        kept.reserveCapacity(names.count)
        for name in names { kept[name] = self.replicas[name] ?? ReplicaHealth() }
        self.replicas = kept
        self.advanceEjections(now: now)
    }

    /// Feeds a request's outcome on `name`; true when it ejected the replica (routability changed).
    public mutating func record(_ outcome: AttemptOutcome, on name: String, now: Double) -> Bool {
        guard var h = self.replicas[name] else { return false }
        switch outcome {
        case .success:
            // Read first: usually nothing changes, and a write to the dictionary costs more.
            guard h.successChangesState(now: now) else { return false }
            h.request(success: true, now: now, settings: self.settings)
            self.replicas[name] = h
            return false
        case .clientGone, .staleConnection, .replicaLost:
            return false
        case .connectFailure, .serverError, .timeout, .brokenStream, .stalled:
            let ejected = h.request(success: false, error: outcome.kind, now: now, settings: self.settings)
            self.replicas[name] = h
            if ejected, let until = h.ejectedUntil { self.nextEjectionEnd = min(self.nextEjectionEnd ?? until, until) }
            return ejected
        }
    }

    /// Feeds a probe result. Returns the new state when it changed, and whether routability changed.
    public mutating func probe(_ name: String, success: Bool, error: String?, now: Double) -> (state: ReplicaHealth.State?, routabilityChanged: Bool) {
        guard var h = self.replicas[name] else { return (nil, false) }
        let before = h.isRoutable(now: now)
        let changed = h.probe(success: success, error: error, now: now, settings: self.settings)
        self.replicas[name] = h
        let routability = h.isRoutable(now: now) != before
        if changed || routability { self.nextEjectionEnd = self.replicas.values.compactMap(\.ejectedUntil).filter { $0 > now }.min() }
        return (changed ? h.state : nil, routability)
    }

    /// Whether an ejection has ended by `now` (a rebuild is due).
    public func ejectionEnded(now: Double) -> Bool {
        self.nextEjectionEnd.map { now >= $0 } ?? false
    }

    /// Moves the next ejection end past `now` (after the rebuild it called for).
    public mutating func advanceEjections(now: Double) {
        self.nextEjectionEnd = self.replicas.values.compactMap(\.ejectedUntil).filter { $0 > now }.min()
    }
}
