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
