import RealModule

/// What the router has learned of one replica's speed: how fast it prefills the tokens it lacks,
/// how long each output token takes, and how many requests it runs at once before it queues.
public struct ServiceEstimate: Sendable, Equatable {
    /// Uncached prompt tokens per second, under the replica's recent load.
    public var prefillTokensPerSecond: Double
    /// Seconds per output token (inter-token latency) under its recent concurrency; the first
    /// token costs one such step beyond its prefill.
    public var decodeSecondsPerToken: Double
    /// Requests it runs at once when it starts to queue (probed running when waiting > 0);
    /// nil until it has been seen queueing.
    public var concurrencyLimit: Double?
    /// Uncached prompt tokens of a typical request there (decayed mean): what one request its
    /// probes report waiting stands for.
    public var meanMissTokens: Double = 1024
    /// Observations behind the prefill and decode figures (0: the configured seeds).
    public var prefillSamples = 0
    public var decodeSamples = 0

    public init(prefillTokensPerSecond: Double, decodeSecondsPerToken: Double, concurrencyLimit: Double? = nil) {
        self.prefillTokensPerSecond = prefillTokensPerSecond
        self.decodeSecondsPerToken = decodeSecondsPerToken
        self.concurrencyLimit = concurrencyLimit
    }

    /// The speeds learned from observations (nil: still the seed).
    var learnedPrefill: Double? { self.prefillSamples > 0 ? self.prefillTokensPerSecond : nil }
    var learnedDecode: Double? { self.decodeSamples > 0 ? self.decodeSecondsPerToken : nil }

    /// Seconds to prefill `tokens` it lacks and produce the first token.
    @inline(__always)
    public func firstTokenSeconds(missTokens: Int) -> Double {
        Double(missTokens) / self.prefillTokensPerSecond + self.decodeSecondsPerToken
    }
}

/// How the service model learns.
public struct ServiceModelSettings: Sendable, Equatable {
    /// The prefill speed a replica starts from (`routing.load.prefill_tokens_per_second`).
    public var prefillTokensPerSecond: Double
    /// The decode speed a replica starts from (`routing.load.decode_seconds_per_token`).
    public var decodeSecondsPerToken: Double
    /// Weight of a new observation (0: never learn, the seeds stay).
    public var learningRate: Double
    /// One observation moves an estimate by at most this factor (robust to outliers: a request
    /// stuck behind something the router cannot see moves it a little, not to its own value).
    public var maxStep: Double
    /// Prefill observations with less work than this many tokens are too noisy to learn from.
    public var minWorkTokens: Int
    /// Prefill speeds within this fraction of the fleet's mean count as the mean: equal replicas
    /// under different loads learn speeds a little apart, and such differences must not pull
    /// conversations away from their caches; a replica twice as fast is well outside it.
    public var speedTolerance: Double
    /// KV-cache usage by running requests a replica should stay under, leaving the rest for
    /// cached prefixes (1: no limit but a full cache).
    public var targetKVUsage: Double

    public init(
        prefillTokensPerSecond: Double = 16000,
        decodeSecondsPerToken: Double = 0.02,
        learningRate: Double = 0.05,
        maxStep: Double = 2,
        minWorkTokens: Int = 1024,
        speedTolerance: Double = 0.25,
        targetKVUsage: Double = 0.9
    ) {
        self.targetKVUsage = targetKVUsage
        self.speedTolerance = speedTolerance
        self.prefillTokensPerSecond = prefillTokensPerSecond
        self.decodeSecondsPerToken = decodeSecondsPerToken
        self.learningRate = learningRate
        self.maxStep = maxStep
        self.minWorkTokens = minWorkTokens
    }
}

/// One finished request, as the router saw it: what the replica had to prefill, how long it took.
public struct ServiceObservation: Sendable, Equatable {
    /// Prompt tokens the replica did not have cached (its reported `cached_tokens` when it says so,
    /// else the router's estimate).
    public var missTokens: Int
    /// The replica reported requests waiting (it was queueing) when this one was sent: its first
    /// token then waited for more than the prefill ahead of it, and says nothing of its speed.
    public var replicaWasQueueing: Bool = false
    /// Uncached tokens of this router's requests on the replica still before their first token
    /// when this one was sent (the prefill queued ahead of it, as far as this router knows).
    public var aheadTokens: Int
    /// Seconds from sending to the first token; nil when the answer came whole (not streamed):
    /// then the prefill is the duration less the decode.
    public var firstTokenSeconds: Double?
    /// Seconds from sending to the end of the answer.
    public var seconds: Double
    /// Output tokens, when the answer said (`usage.completion_tokens`).
    public var outputTokens: Int?

    public init(missTokens: Int, replicaWasQueueing: Bool = false, aheadTokens: Int, firstTokenSeconds: Double?, seconds: Double, outputTokens: Int?) {
        self.missTokens = missTokens
        self.replicaWasQueueing = replicaWasQueueing
        self.aheadTokens = aheadTokens
        self.firstTokenSeconds = firstTokenSeconds
        self.seconds = seconds
        self.outputTokens = outputTokens
    }
}

/// Each replica's service speed, learned online from the requests it served and its probes.
///
/// Decayed estimates in log space with a clipped step: a replica twice as fast as the seed is
/// found within a few dozen requests, and one outlier (a request queued behind work of another
/// router) moves the estimate by at most `maxStep`'s share. Bounded: one entry per replica.
/// Pure: the proxy and the simulator feed it the same observations.
public struct ServiceModel: Sendable {
    public var settings: ServiceModelSettings
    var replicas = ReplicaTable<ServiceEstimate>()
    /// The prefill and decode speeds learned from observations, summed over the replicas that
    /// have them (for their means).
    var prefillMean = LearnedMean()
    var decodeMean = LearnedMean()

    /// A mean kept up to date as its members change.
    struct LearnedMean: Sendable {
        var sum = 0.0
        var count = 0

        func value(or seed: Double) -> Double { self.count > 0 ? self.sum / Double(self.count) : seed }

        /// A member went from `before` (nil: not a member) to `after`.
        mutating func update(from before: Double?, to after: Double?) {
            if let before {
                self.sum -= before
                self.count -= 1
            }
            if let after {
                self.sum += after
                self.count += 1
            }
        }
    }

    public init(settings: ServiceModelSettings = ServiceModelSettings()) {
        self.settings = settings
    }

    var seed: ServiceEstimate {
        ServiceEstimate(prefillTokensPerSecond: self.settings.prefillTokensPerSecond, decodeSecondsPerToken: self.settings.decodeSecondsPerToken)
    }

    /// The mean prefill speed learned over the replicas that served something (the seed before any did).
    public var meanPrefillTokensPerSecond: Double {
        self.prefillMean.value(or: self.settings.prefillTokensPerSecond)
    }

    /// The mean decode speed learned likewise.
    public var meanDecodeSecondsPerToken: Double {
        self.decodeMean.value(or: self.settings.decodeSecondsPerToken)
    }

    /// What is known of replica `id`, as placement uses it: a replica not learned yet is taken to
    /// be as fast as the others have proved (the seeds only while none has: a seed far off would
    /// make a new replica look too slow to ever be tried, or so fast that it draws everything), one
    /// with fewer than `warmupSamples` answers at least that fast, and a speed within
    /// `speedTolerance` of the mean is the mean.
    @inline(__always)
    public func estimate(replicaID id: Int) -> ServiceEstimate {
        let prefill = self.meanPrefillTokensPerSecond
        let decode = self.meanDecodeSecondsPerToken
        let tolerance = self.settings.speedTolerance
        guard var e = self.replicas[id] else {
            var seed = self.seed
            seed.prefillTokensPerSecond = prefill
            seed.decodeSecondsPerToken = decode
            return seed
        }
        // Until a replica has shown a few answers it is taken at its best: at least as fast as the
        // fleet (a bad start, such as a first request behind a cold engine, would otherwise keep
        // it from the traffic that corrects it).
        let warm = Self.warmupSamples
        if e.prefillSamples < warm || abs(e.prefillTokensPerSecond / prefill - 1) < tolerance {
            e.prefillTokensPerSecond = max(prefill, e.prefillSamples < warm ? e.prefillTokensPerSecond : prefill)
        }
        if e.decodeSamples < warm || abs(e.decodeSecondsPerToken / decode - 1) < tolerance {
            e.decodeSecondsPerToken = min(decode, e.decodeSamples < warm ? e.decodeSecondsPerToken : decode)
        }
        return e
    }

    /// What was learned of replica `id`, as learned (reports).
    public func learned(replicaID id: Int) -> ServiceEstimate? {
        self.replicas[id]
    }

    /// Learns from one finished request on replica `id`.
    public mutating func observe(replicaID id: Int, _ o: ServiceObservation) {
        let s = self.settings
        guard s.learningRate > 0, o.seconds.isFinite, o.seconds >= 0 else { return }
        // The first observations of a replica count fully (see `step`); later ones at the learning rate.
        let seed = self.seed
        let before = self.replicas[id]
        defer {
            // Keep the means over learned speeds (a replica joins one with its first sample of it).
            let after = self.replicas[id]
            self.prefillMean.update(from: before?.learnedPrefill, to: after?.learnedPrefill)
            self.decodeMean.update(from: before?.learnedDecode, to: after?.learnedDecode)
        }
        self.replicas.modify(id, default: { seed }) { e in
            // Decode first: the prefill of a whole (non-streamed) answer is its duration less it.
            if let first = o.firstTokenSeconds, let out = o.outputTokens, out > 1, o.seconds > first {
                let sample = (o.seconds - first) / Double(out - 1)
                e.decodeSecondsPerToken = Self.step(e.decodeSecondsPerToken, toward: sample, samples: e.decodeSamples, s)
                e.decodeSamples += 1
            }
            e.meanMissTokens += s.learningRate * (Double(o.missTokens) - e.meanMissTokens)
            let work = o.missTokens + o.aheadTokens
            guard work >= s.minWorkTokens, !o.replicaWasQueueing else { return }
            var first = o.firstTokenSeconds
            if first == nil, let out = o.outputTokens { first = o.seconds - Double(max(0, out - 1)) * e.decodeSecondsPerToken }
            guard let first else { return }
            let prefill = first - e.decodeSecondsPerToken
            guard prefill > 1e-4 else { return }
            e.prefillTokensPerSecond = Self.step(e.prefillTokensPerSecond, toward: Double(work) / prefill, samples: e.prefillSamples, s)
            e.prefillSamples += 1
        }
    }

    /// Observations of a replica before its estimate is a clipped, decayed average: until then it
    /// is the geometric mean of what it showed (the seed, possibly far off, has no say at all).
    static let warmupSamples = 5

    /// Moves `value` toward `sample` in log space. The first `warmupSamples` observations make the
    /// geometric mean of the samples, whatever the seed (a seed 60x off, an H100's figure for a
    /// CPU replica, is left at the first answer); later ones move it by at most the clipped step,
    /// at a weight of 1/(n+1) until that comes down to the learning rate.
    static func step(_ value: Double, toward sample: Double, samples: Int, _ s: ServiceModelSettings) -> Double {
        guard sample > 0, sample.isFinite else { return value }
        if samples == 0 { return sample }
        if samples < Self.warmupSamples {
            return Double.exp((Double(samples) * Double.log(value) + Double.log(sample)) / Double(samples + 1))
        }
        let bound = Double.log(max(1.000001, s.maxStep))
        let delta = min(bound, max(-bound, Double.log(sample / value)))
        let weight = max(s.learningRate, 1 / Double(samples + 1))
        return value * Double.exp(weight * delta)
    }

    /// Learns how many requests replica `id` should run at once: the running count at which its
    /// probes show it queueing (`waiting > 0`), or filling its KV cache past `targetKVUsage` with
    /// running requests (then nothing is left for cached prefixes, and they are evicted between
    /// turns); the limit moves toward it. Running at or past the limit with neither raises it (the
    /// replica took more than thought), so a limit learned in a bad moment recovers.
    public mutating func observeProbe(replicaID id: Int, running: Int?, waiting: Int?, kvUsage: Double?) {
        guard let running, running > 0 else { return }
        let r = Double(running)
        let target = self.settings.targetKVUsage
        var full: Double?
        if let waiting, waiting > 0 { full = r }
        if let kv = kvUsage, kv > target { full = min(full ?? r, r * target / kv) }
        let seed = self.seed
        guard let full else {
            guard let limit = self.replicas[id]?.concurrencyLimit, r >= limit else { return }
            self.replicas.modify(id, default: { seed }) { e in e.concurrencyLimit = max(limit + 1, r * 1.1) }
            return
        }
        let rate = max(0.2, self.settings.learningRate)
        self.replicas.modify(id, default: { seed }) { e in
            e.concurrencyLimit = max(1, e.concurrencyLimit.map { $0 + rate * (full - $0) } ?? full)
        }
    }

    /// Forgets replicas not in `ids` (they left the fleet).
    mutating func retain(replicaIDs ids: Set<Int>) {
        self.replicas.removeAll { id, _ in !ids.contains(id) }
        self.prefillMean = LearnedMean()
        self.decodeMean = LearnedMean()
        for e in self.replicas.allValues {
            self.prefillMean.update(from: nil, to: e.learnedPrefill)
            self.decodeMean.update(from: nil, to: e.learnedDecode)
        }
    }
}
