import NIOConcurrencyHelpers
import NIOCore
import FleetState
import RoutingCore

/// What the connections of one event loop share: the upstream transport, the deferred flushes,
/// request ids, reused head buffers and the deadline sweeper. Confined to its loop.
final class LoopResources: @unchecked Sendable {
    let loop: any EventLoop
    /// The loop's deferred flushes (upstream requests and client responses).
    let flushes: FlushBatch
    /// Connections to replicas.
    let transport: any UpstreamTransport
    /// Ids for requests that come without a usable `X-Request-Id`.
    var requestIDs = RequestIDGenerator()
    /// Keyed requests on this loop, for the prefix diagnostics' sampling.
    var keyedRequests = 0
    /// The loop's head buffers, reused once written.
    let buffers = BufferRecycler()
    /// One timer for every deadline of the loop's connections.
    let sweeper: DeadlineSweeper
    /// Replicas of the fleet out of rotation now (down or ejected): a request still waiting on
    /// one goes elsewhere at the next sweep.
    var unroutable: Set<String> = []

    init(loop: any EventLoop, makeTransport: (any EventLoop, FlushBatch) -> any UpstreamTransport) {
        self.loop = loop
        self.flushes = FlushBatch(loop: loop)
        self.transport = makeTransport(loop, self.flushes)
        self.sweeper = DeadlineSweeper(loop: loop)
    }
}

/// The resources of every event loop the proxy runs on, made on first use.
final class LoopResourceRegistry: Sendable {
    private let loops = NIOLockedValueBox<[ObjectIdentifier: LoopResources]>([:])
    /// Makes each loop's transport (the pooled HTTP/1.1 one unless a test gives another).
    let makeTransport: @Sendable (any EventLoop, FlushBatch) -> any UpstreamTransport

    init(makeTransport: @escaping @Sendable (any EventLoop, FlushBatch) -> any UpstreamTransport = { UpstreamPool(loop: $0, flushes: $1) }) {
        self.makeTransport = makeTransport
    }

    func resources(for loop: any EventLoop) -> LoopResources {
        self.loops.withLockedValue { loops in
            if let r = loops[ObjectIdentifier(loop)] { return r }
            let r = LoopResources(loop: loop, makeTransport: self.makeTransport)
            loops[ObjectIdentifier(loop)] = r
            // The sweeper also expires the transport's idle connections.
            loop.execute {
                if let owner = r.transport as? any DeadlineOwner { r.sweeper.register(owner) }
            }
            return r
        }
    }

    /// A new fleet snapshot: idle connections to replicas that left are closed, and every loop
    /// learns which replicas are out of rotation.
    func fleetChanged(_ fleet: FleetSnapshot) {
        let endpoints = fleet.endpoints
        let unroutable = Set(fleet.replicas.indices.filter { !fleet.routable[$0] }.map { fleet.replicas[$0].name })
        for r in self.loops.withLockedValue({ Array($0.values) }) {
            r.loop.execute {
                r.transport.prune(keeping: endpoints)
                r.unroutable = unroutable
            }
        }
    }
}
