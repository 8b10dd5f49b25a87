/// One attempt of a request on a replica: the decision behind it, the load ticket, and the
/// snapshot it was made in (the replica's index and address mean the same thing for as long as
/// the attempt lives, whatever reloads happen meanwhile).
///
/// A class: the proxy passes it around per request, and one reference is cheaper to hand on than
/// the decision and snapshot it holds. Used by one event loop at a time.
public final class Placement: @unchecked Sendable {
    public let decision: RoutingDecision
    /// Fleet index in `fleet`.
    public let replica: Int
    public var ticket: PlacementTicket
    public let fleet: FleetSnapshot

    public init(decision: RoutingDecision, replica: Int, ticket: PlacementTicket, fleet: FleetSnapshot) {
        self.decision = decision
        self.replica = replica
        self.ticket = ticket
        self.fleet = fleet
    }

    public var endpoint: ReplicaEndpoint { self.fleet.endpoints[self.replica] }
    public var replicaName: String { self.fleet.endpoints[self.replica].name }
}

/// When a streamed request whose replica has not answered is taken as stalled (`upstream.stall_*`).
public struct StallSettings: Sendable, Equatable {
    /// Times the predicted time to first token; 0: never (only `upstream.first_byte_timeout`).
    public var factor: Double
    /// Never sooner than this.
    public var minimumSeconds: Double

    public init(factor: Double = 4, minimumSeconds: Double = 5) {
        self.factor = factor
        self.minimumSeconds = minimumSeconds
    }
}

extension Placement {
    /// Seconds after which this attempt of a streamed request, without an answer, is stalled: a
    /// few times the time to first token the decision predicted for its replica (its queue and
    /// the uncached prefill at its learned speed), at least `minimumSeconds`. Nil when off.
    public func stallSeconds(_ settings: StallSettings) -> Double? {
        guard settings.factor > 0 else { return nil }
        let predicted = self.decision.candidates.first { $0.replica == self.replica }?.predictedFirstTokenSeconds ?? 0
        return max(settings.minimumSeconds, settings.factor * (predicted.isFinite ? predicted : 0))
    }
}
