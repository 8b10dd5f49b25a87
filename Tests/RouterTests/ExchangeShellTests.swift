import CacheRouteTestSupport
import FleetState
import Foundation
import HTTPTransport
import NIOCore
import NIOEmbedded
import RouterConfig
import RoutingCore
import Testing

@testable import DataPlane

/// The client connection shell on an `EmbeddedChannel`, with a transport that hands out fake
/// leases: what the machine decides reaches the right bytes and the right attempts, no sockets.
@Suite struct ExchangeShellTests {
    /// A connection to a replica that records what it was sent; the test answers through its delegate.
    final class FakeLease: UpstreamLease, @unchecked Sendable {
        let replica: String
        let reused: Bool
        var sent: String?
        var delegate: (any UpstreamDelegate)?
        var released = false
        var dropped = false
        var reading = true

        init(replica: String, reused: Bool) {
            self.replica = replica
            self.reused = reused
        }

        func send(head: ByteBuffer, body: ByteBuffer?, isHead: Bool, to delegate: any UpstreamDelegate) {
            self.sent = String(buffer: head) + (body.map { String(buffer: $0) } ?? "")
            self.delegate = delegate
        }

        func setReading(_ on: Bool) { self.reading = on }
        func release() { self.released = true }
        func drop() { self.dropped = true }

        func head(_ text: String) throws {
            self.delegate?.upstreamHead(try HTTP1HeadParser.parseHead(Array(text.utf8), kind: .response))
        }

        func body(_ text: String) {
            self.delegate?.upstreamBody(ByteBuffer(string: text))
            self.delegate?.upstreamReadComplete()
        }
    }

    /// Hands out leases in order: `failures` names replicas whose connect fails, `stale` whether
    /// the first lease of a replica comes from the pool.
    final class FakeTransport: UpstreamTransport, @unchecked Sendable {
        var leases: [FakeLease] = []
        var failures: Set<String> = []
        var reusedFirst = false

        func lease(_ endpoint: ReplicaEndpoint, fresh: Bool, settings: UpstreamPoolSettings) -> UpstreamLeaseResult {
            if self.failures.contains(endpoint.name) { return .failed(UpstreamError(description: "connection refused")) }
            let lease = FakeLease(replica: endpoint.name, reused: self.reusedFirst && !fresh)
            self.leases.append(lease)
            return .ready(lease)
        }

        func prune(keeping endpoints: [ReplicaEndpoint]) {}
    }

    struct Setup {
        let channel: EmbeddedChannel
        let transport: FakeTransport
        let state: RouterState
    }

    func setup(replicas: Int = 2, configure: (inout RouterConfiguration) -> Void = { _ in }) throws -> Setup {
        var c = RouterConfiguration()
        c.replicas = (1...replicas).map { ReplicaSpec(name: "r\($0)", url: "http://127.0.0.1:\(9000 + $0)") }
        c.logging.accessLog = false
        configure(&c)
        let state = RouterState(config: c, logger: TestSupport.logger, eventLoops: 1)
        let transport = FakeTransport()
        let registry = LoopResourceRegistry(makeTransport: { _, _ in transport })
        let connection = ClientConnection(state: state, loops: registry, models: ModelsCache(), observer: ObserverList([]))
        let channel = EmbeddedChannel(handler: connection)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return Setup(channel: channel, transport: transport, state: state)
    }

    static let body = #"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#
    static let request = "POST /v1/chat/completions HTTP/1.1\r\nhost: router\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)"

    func send(_ s: Setup, _ text: String = Self.request) throws {
        try s.channel.writeInbound(ByteBuffer(string: text))
        s.channel.embeddedEventLoop.run()
    }

    func output(_ s: Setup) throws -> String {
        s.channel.embeddedEventLoop.run()
        var text = ""
        while let buffer = try s.channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
        return text
    }

    @Test func aRequestIsRelayedAndItsConnectionGoesBack() throws {
        let s = try self.setup()
        try self.send(s)
        let lease = try #require(s.transport.leases.first)
        #expect(lease.sent?.hasPrefix("POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:900") == true)
        #expect(lease.sent?.hasSuffix(Self.body) == true)
        try lease.head("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n")
        lease.body("ok")
        lease.delegate?.upstreamEnd()
        let out = try self.output(s)
        #expect(out.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(out.contains("x-cacheroute-replica: \(lease.replica)\r\n"))
        #expect(out.hasSuffix("\r\n\r\nok"))
        #expect(lease.released && !lease.dropped)
        #expect(s.state.load(of: lease.replica)?.inFlight == 0)
    }

    @Test func aFiveHundredBeforeTheFirstByteIsRetriedElsewhere() throws {
        let s = try self.setup()
        try self.send(s)
        let first = try #require(s.transport.leases.first)
        try first.head("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
        #expect(first.dropped && s.transport.leases.count == 2)
        let second = s.transport.leases[1]
        #expect(second.replica != first.replica)
        try second.head("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        second.body("ok")
        second.delegate?.upstreamEnd()
        let out = try self.output(s)
        #expect(out.hasPrefix("HTTP/1.1 200 OK\r\n") && out.contains("x-cacheroute-replica: \(second.replica)"))
        #expect(s.state.health(of: first.replica)?.requestFailures == 1)
    }

    @Test func replicasThatCannotBeReachedGiveAnOpenAIShaped502() throws {
        let s = try self.setup()
        s.transport.failures = ["r1", "r2"]
        try self.send(s)
        let out = try self.output(s)
        #expect(out.hasPrefix("HTTP/1.1 502 Bad Gateway\r\n"))
        #expect(out.contains(#""code":"bad_gateway""#) && out.contains("after 2 attempt(s)"))
        #expect(s.state.health(of: "r1")?.requestFailures == 1 && s.state.health(of: "r2")?.requestFailures == 1)
    }

    @Test func aStalePooledConnectionGoesOnceMoreToTheSameReplica() throws {
        let s = try self.setup()
        s.transport.reusedFirst = true
        try self.send(s)
        let stale = try #require(s.transport.leases.first)
        stale.delegate?.upstreamFailed(UpstreamError.closed)
        #expect(s.transport.leases.count == 2)
        let fresh = s.transport.leases[1]
        #expect(fresh.replica == stale.replica && !fresh.reused)
        try fresh.head("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        fresh.delegate?.upstreamEnd()
        let out = try self.output(s)
        #expect(out.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(s.state.health(of: stale.replica)?.requestFailures == 0)
        #expect(s.state.load(of: stale.replica)?.inFlight == 0)
    }

    @Test func aClientThatLeavesCancelsTheReplicasWork() throws {
        let s = try self.setup()
        try self.send(s)
        let lease = try #require(s.transport.leases.first)
        try s.channel.close().wait()
        #expect(lease.dropped)
        #expect(s.state.load(of: lease.replica)?.inFlight == 0)
        #expect(s.state.health(of: lease.replica)?.requestFailures == 0)
    }

    @Test func aBrokenStreamEndsWithAnSSEErrorEventAndTheChunkedTerminator() throws {
        let s = try self.setup()
        try self.send(s)
        let lease = try #require(s.transport.leases.first)
        try lease.head("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        lease.body("data: {\"a\":1}\n\ndata: {\"partial")
        lease.delegate?.upstreamFailed(UpstreamError.closed)
        let out = try self.output(s)
        #expect(out.contains("transfer-encoding: chunked"))
        #expect(out.contains("data: {\"a\":1}\n\n"))
        #expect(!out.contains("partial"))
        #expect(out.contains(#""code":"bad_gateway""#) && out.hasSuffix("\r\n0\r\n\r\n"))
        #expect(s.channel.isActive)  // the chunked stream ended cleanly: the connection stays
        #expect(s.state.health(of: lease.replica)?.requestFailures == 1)
    }

    @Test func pipelinedRequestsWaitForTheCurrentAnswer() throws {
        let s = try self.setup()
        try self.send(s, Self.request + Self.request)
        #expect(s.transport.leases.count == 1)
        let first = s.transport.leases[0]
        try first.head("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n")
        first.body("a")
        first.delegate?.upstreamEnd()
        s.channel.embeddedEventLoop.run()
        #expect(s.transport.leases.count == 2)
        let second = s.transport.leases[1]
        try second.head("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n")
        second.body("b")
        second.delegate?.upstreamEnd()
        let out = try self.output(s)
        #expect(out.components(separatedBy: "HTTP/1.1 200 OK").count == 3)
        #expect(out.hasSuffix("b"))
    }
}
