/// Simple policies the simulator and benchmarks compare cacheroute against. They share the fleet,
/// load accounting and decision type with the real placement, so comparisons differ only in the choice.
public enum BaselinePolicy: String, Sendable, CaseIterable {
    case roundRobin = "round-robin"
    case random
    case leastLoaded = "least-loaded"
    /// Consistent hashing of the session key alone (HAProxy/nginx `hash ... consistent` style).
    case sessionHash = "session-hash"
}

extension Router {
    /// A decision by a baseline policy. `counter` drives round-robin and the seeded random choice.
    public func decide(
        baseline policy: BaselinePolicy,
        _ keys: Result<RequestKeys, KeyError>,
        fleet: FleetSnapshot,
        counter: UInt64
    ) -> RoutingDecision {
        let model = (try? keys.get())?.model
        let (pool, match) = fleet.pool(for: model)
        let members = pool.ring.members
        guard !members.isEmpty else {
            return RoutingDecision(replica: nil, tier: .fallback, note: "no healthy replica", poolMatch: match)
        }
        let miss = (try? keys.get())?.promptTokens(bytesPerToken: self.settings.keying.bytesPerToken) ?? 0
        switch policy {
        case .roundRobin:
            let pick = members[Int(counter % UInt64(members.count))]
            return RoutingDecision(replica: pick, tier: .fallback, note: "round-robin", poolMatch: match, missTokens: miss)
        case .random:
            let pick = members[Int(SplitMix64.mix(counter) % UInt64(members.count))]
            return RoutingDecision(replica: pick, tier: .fallback, note: "random", poolMatch: match, missTokens: miss)
        case .leastLoaded:
            var decision = self.leastLoaded(pool, fleet: fleet, note: "least-loaded", match: match)
            decision.missTokens = miss
            return decision
        case .sessionHash:
            guard let keys = try? keys.get(), let session = keys.session, let pick = pool.ring.owner(of: session.key)
            else {
                var decision = self.leastLoaded(pool, fleet: fleet, note: "no session key", match: match)
                decision.missTokens = miss
                return decision
            }
            return RoutingDecision(replica: pick, tier: .session, note: "session hash", poolMatch: match, missTokens: miss)
        }
    }
}

/// SplitMix64: a tiny deterministic mixer for seeded pseudo-random choices.
public enum SplitMix64 {
    @inline(__always)
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
