/// Thresholds for active probes and passive outlier detection.
public struct HealthSettings: Sendable, Equatable {
    /// Consecutive failed probes that take an up replica down.
    public var failureThreshold: Int
    /// Consecutive successful probes that bring a down replica back.
    public var successThreshold: Int
    /// Consecutive failed requests (connect errors, 5xx, timeouts) that eject a replica (0: off).
    public var ejectAfterFailures: Int
    /// First ejection length in seconds; doubles with each ejection in a row, up to `maxEjectionSeconds`.
    public var ejectionSeconds: Double
    public var maxEjectionSeconds: Double

    public init(
        failureThreshold: Int = 3,
        successThreshold: Int = 2,
        ejectAfterFailures: Int = 5,
        ejectionSeconds: Double = 10,
        maxEjectionSeconds: Double = 300
    ) {
        self.failureThreshold = failureThreshold
        self.successThreshold = successThreshold
        self.ejectAfterFailures = ejectAfterFailures
        self.ejectionSeconds = ejectionSeconds
        self.maxEjectionSeconds = maxEjectionSeconds
    }
}

/// The health of one replica: probe state with hysteresis plus passive ejection.
///
/// A pure state machine: feed it probe results, request outcomes and the time; ask whether the
/// replica is routable. A single slow probe never takes a replica down (it takes
/// `failureThreshold` in a row), and a flapping one needs `successThreshold` good answers in a
/// row to come back.
public struct ReplicaHealth: Sendable, Equatable {
    public enum State: String, Sendable {
        /// No probe answered yet: routable (a fresh fleet must serve at once), but not "ready".
        case unknown
        case up
        case down
    }

    public private(set) var state: State = .unknown
    public private(set) var consecutiveSuccesses = 0
    public private(set) var consecutiveFailures = 0
    public private(set) var requestFailures = 0
    public private(set) var ejectedUntil: Double?
    public private(set) var ejections = 0
    /// Every ejection since start (for metrics; `ejections` counts the current run only).
    public private(set) var ejectionsTotal = 0
    public private(set) var lastError: String?
    /// Half-open: a good probe ended an ejection early; the next failed request ejects the
    /// replica again at once, the next good one closes the circuit.
    public private(set) var trial = false
    /// This run of ejections already had its early end (a failed trial waits out the next ejection).
    public private(set) var earlyEndUsed = false

    public init(state: State = .unknown) {
        self.state = state
    }

    /// Whether traffic may go to the replica at `now`.
    public func isRoutable(now: Double) -> Bool {
        guard self.state != .down else { return false }
        if let until = self.ejectedUntil, now < until { return false }
        return true
    }

    /// Feeds a probe result; returns true when the state changed. A good probe while the replica
    /// is ejected ends the ejection early, once per run of ejections, on trial (`trial`): a
    /// replica that restarted within a probe interval is back at the next probe, not when its
    /// ejection runs out.
    @discardableResult
    public mutating func probe(success: Bool, error: String? = nil, now: Double = -.infinity, settings: HealthSettings) -> Bool {
        if success, let until = self.ejectedUntil, now < until, !self.earlyEndUsed, self.state != .down {
            self.ejectedUntil = nil
            self.trial = true
            self.earlyEndUsed = true
        }
        let before = self.state
        if success {
            self.consecutiveSuccesses += 1
            self.consecutiveFailures = 0
            self.lastError = nil
            switch self.state {
            case .unknown: self.state = .up
            case .down where self.consecutiveSuccesses >= settings.successThreshold: self.state = .up
            default: break
            }
        } else {
            self.consecutiveFailures += 1
            self.consecutiveSuccesses = 0
            self.lastError = error
            switch self.state {
            case .unknown, .up:
                if self.consecutiveFailures >= settings.failureThreshold { self.state = .down }
            case .down: break
            }
        }
        if self.state == .up, before == .down {
            self.ejectedUntil = nil
            self.requestFailures = 0
        }
        return self.state != before
    }

    /// Whether a successful request would change anything (the common case is no: then the
    /// proxy skips the write).
    public func successChangesState(now: Double) -> Bool {
        self.requestFailures != 0 || self.trial || self.ejectedUntil.map { now >= $0 } == true
    }

    /// Feeds the outcome of a proxied request; returns true when this ejected the replica.
    @discardableResult
    public mutating func request(success: Bool, error: String? = nil, now: Double, settings: HealthSettings) -> Bool {
        if success {
            self.requestFailures = 0
            if let until = self.ejectedUntil, now >= until {
                self.ejectedUntil = nil
                self.ejections = 0
                self.earlyEndUsed = false
            }
            if self.trial {
                self.trial = false
                self.ejections = 0
                self.earlyEndUsed = false
            }
            return false
        }
        self.requestFailures += 1
        self.lastError = error ?? self.lastError
        // On trial, one failure is enough to eject it again.
        let limit = self.trial ? 1 : settings.ejectAfterFailures
        self.trial = false
        guard settings.ejectAfterFailures > 0, self.requestFailures >= limit else { return false }
        if let until = self.ejectedUntil, now < until { return false }
        let length = min(settings.maxEjectionSeconds, settings.ejectionSeconds * Double(1 << min(self.ejections, 20)))
        self.ejectedUntil = now + length
        self.ejections += 1
        self.ejectionsTotal += 1
        self.requestFailures = 0
        return true
    }
}
