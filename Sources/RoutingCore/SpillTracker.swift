import RealModule

/// How a hot instruction prefix spreads onto more replicas.
public struct SpillSettings: Sendable, Equatable {
    /// Request rate one group member should carry for one prefix; above `rate > rps * width` the group widens.
    public var rpsPerReplica: Double
    /// Time constant of the decaying rate estimate, in seconds.
    public var rateWindowSeconds: Double
    /// The group narrows by one member only when the rate falls below `narrowBelow * rps * (width - 1)`.
    public var narrowBelow: Double
    /// Minimum time a width holds before it may narrow again.
    public var holdSeconds: Double
    /// Most instruction keys tracked at once (the least active are dropped beyond it).
    public var maxTrackedKeys: Int

    public init(
        rpsPerReplica: Double = 8,
        rateWindowSeconds: Double = 10,
        narrowBelow: Double = 0.7,
        holdSeconds: Double = 30,
        maxTrackedKeys: Int = 16384
    ) {
        self.rpsPerReplica = rpsPerReplica
        self.rateWindowSeconds = rateWindowSeconds
        self.narrowBelow = narrowBelow
        self.holdSeconds = holdSeconds
        self.maxTrackedKeys = maxTrackedKeys
    }
}

/// Per-instruction-key request rates (exponentially decaying) and the group width each key has
/// earned, widened at once when the rate passes the threshold and narrowed one step at a time,
/// with hysteresis and a hold time, when it falls. Memory is bounded by `maxTrackedKeys`.
public struct SpillTracker: Sendable {
    public var settings: SpillSettings

    struct Entry: Sendable {
        /// Decayed rate (requests per second) as of `updated`.
        var rate: Double
        var updated: Double
        /// Current extra width beyond the base group size (0: not spilled).
        var width: Int
        var widthSince: Double
    }

    var entries: [UInt64: Entry] = [:]
    /// Times a group widened (a hot prefix got another replica), for metrics.
    public private(set) var widenings = 0

    public init(settings: SpillSettings = SpillSettings()) {
        self.settings = settings
    }

    /// Prefixes whose group is wider than `base` now.
    public func widenedKeys(base: Int) -> Int {
        self.entries.values.reduce(0) { $0 + ($1.width > base ? 1 : 0) }
    }

    /// Number of keys tracked now (never above `maxTrackedKeys`).
    public var trackedKeys: Int { self.entries.count }

    func decayed(_ entry: Entry, now: Double) -> Double {
        let dt = max(0, now - entry.updated)
        return entry.rate * Double.exp(-dt / self.settings.rateWindowSeconds)
    }

    /// The current rate estimate of `key`, in requests per second.
    public func rate(of key: UInt64, now: Double) -> Double {
        guard let entry = self.entries[key] else { return 0 }
        return self.decayed(entry, now: now)
    }

    /// The group width `key` should have now (at least `base`, at most `poolSize`), without recording a request.
    public func width(of key: UInt64, base: Int, poolSize: Int, now: Double) -> Int {
        guard let entry = self.entries[key] else { return min(base, poolSize) }
        let (width, _) = self.nextWidth(entry, rate: self.decayed(entry, now: now), base: base, poolSize: poolSize, now: now)
        return width
    }

    /// Records one request for `key` at `now` and returns the group width to use.
    public mutating func record(_ key: UInt64, base: Int, poolSize: Int, now: Double) -> Int {
        var entry: Entry
        if let existing = self.entries[key] {
            entry = existing
        } else {
            if self.entries.count >= self.settings.maxTrackedKeys { self.shed(now: now) }
            entry = Entry(rate: 0, updated: now, width: min(base, poolSize), widthSince: now)
        }
        entry.rate = self.decayed(entry, now: now) + 1 / self.settings.rateWindowSeconds
        entry.updated = now
        let (width, changed) = self.nextWidth(entry, rate: entry.rate, base: base, poolSize: poolSize, now: now)
        if changed {
            if width > entry.width { self.widenings += 1 }
            entry.width = width
            entry.widthSince = now
        }
        self.entries[key] = entry
        return width
    }

    func nextWidth(_ entry: Entry, rate: Double, base: Int, poolSize: Int, now: Double) -> (Int, Bool) {
        let base = min(base, poolSize)
        let current = min(max(entry.width, base), poolSize)
        let rps = self.settings.rpsPerReplica
        let wanted = min(poolSize, max(base, Int((rate / rps).rounded(.up))))
        if wanted > current { return (wanted, true) }
        if current > base, now - entry.widthSince >= self.settings.holdSeconds,
            rate < self.settings.narrowBelow * rps * Double(current - 1)
        {
            return (current - 1, true)
        }
        return (current, current != entry.width)
    }

    /// Makes room: drops keys whose rate decayed to almost nothing, then, if still full, the least active half.
    mutating func shed(now: Double) {
        let floor = 0.05 / self.settings.rateWindowSeconds
        self.entries = self.entries.filter { self.decayed($0.value, now: now) >= floor }
        guard self.entries.count >= self.settings.maxTrackedKeys else { return }
        let rates = self.entries.map { ($0.key, self.decayed($0.value, now: now)) }.sorted { $0.1 > $1.1 }
        let keep = Set(rates.prefix(self.settings.maxTrackedKeys / 2).map(\.0))
        self.entries = self.entries.filter { keep.contains($0.key) }
    }
}
