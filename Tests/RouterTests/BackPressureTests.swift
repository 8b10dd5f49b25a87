import CacheRouteTestSupport
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RouterConfig
import RoutingCore
import Admin
import CacheRouteRuntime
import DataPlane
import Discovery
import FleetState
import ReplicaProbes
import Telemetry
import Testing

/// A replica (served by `LoopbackServer` with its `Handler`) that answers `POST` with a chunked
/// body of `total` bytes, written as fast as its socket takes them; `GET /health` gets 200 (the
/// probes), anything else 404. Counts the bytes its socket accepted, and whether the streaming
/// connection was closed by the other side.
final class FloodReplica: Sendable {
    let total: Int
    let sent = NIOLockedValueBox(0)
    let streamClosed = NIOLockedValueBox(false)

    init(total: Int) {
        self.total = total
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        static let chunkBytes = 64 * 1024

        let replica: FloodReplica
        var head: [UInt8] = []
        var remaining = -1
        let chunk: ByteBuffer

        init(_ replica: FloodReplica) {
            self.replica = replica
            var chunk = ByteBuffer(string: String(Self.chunkBytes, radix: 16) + "\r\n")
            chunk.writeRepeatingByte(UInt8(ascii: "x"), count: Self.chunkBytes)
            chunk.writeString("\r\n")
            self.chunk = chunk
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard self.remaining < 0 else { return }
            self.head += Self.unwrapInboundIn(data).readableBytesView
            guard let end = self.head.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
            let line = String(decoding: self.head[..<end.lowerBound], as: UTF8.self)
            if line.hasPrefix("POST ") {
                self.remaining = self.replica.total
                context.write(Self.wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n")), promise: nil)
                self.pump(context)
                return
            }
            let status = line.hasPrefix("GET /health ") ? "200 OK" : "404 Not Found"
            self.head = []
            context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 \(status)\r\ncontent-length: 0\r\n\r\n")), promise: nil)
        }

        func channelWritabilityChanged(context: ChannelHandlerContext) {
            if context.channel.isWritable, self.remaining > 0 { self.pump(context) }
        }

        func channelInactive(context: ChannelHandlerContext) {
            if self.remaining >= 0 { self.replica.streamClosed.withLockedValue { $0 = true } }
        }

        func pump(_ context: ChannelHandlerContext) {
            while self.remaining > 0, context.channel.isWritable {
                self.remaining -= Self.chunkBytes
                // Counted when the socket took the bytes, not when they were queued in NIO.
                let bytes = self.chunk.readableBytes
                context.write(Self.wrapOutboundOut(self.chunk)).assumeIsolated().whenSuccess {
                    self.replica.sent.withLockedValue { $0 += bytes }
                }
                context.flush()
            }
            if self.remaining == 0 {
                self.remaining = -2
                context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: "0\r\n\r\n")), promise: nil)
            }
        }
    }
}

/// A client connection that reads only when told to, and only up to `readUntil` bytes (autoRead
/// off, a small receive buffer).
final class SlowReader: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let received = NIOLockedValueBox(0)
    let readUntil = NIOLockedValueBox(0)

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let count = Self.unwrapInboundIn(data).readableBytes
        self.received.withLockedValue { $0 += count }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        let more = self.received.withLockedValue { $0 } < self.readUntil.withLockedValue { $0 }
        if more, context.channel.isActive { context.read() }
    }
}

@Suite(.serialized)
struct BackPressureTests {
    /// Polls `value` until it stops changing for `quiet` seconds (or `limit` passes); returns it.
    func settle(_ value: () -> Int, quiet: Double = 0.5, limit: Double = 6) async throws -> Int {
        let end = ContinuousClock.now + .milliseconds(Int(limit * 1000))
        var last = value()
        var stableSince = ContinuousClock.now
        while ContinuousClock.now < end {
            try await Task.sleep(for: .milliseconds(50))
            let now = value()
            if now != last {
                last = now
                stableSince = ContinuousClock.now
            } else if ContinuousClock.now - stableSince >= .milliseconds(Int(quiet * 1000)) {
                break
            }
        }
        return last
    }

    @Test func aClientThatDoesNotReadStopsTheRouterReadingTheReplica() async throws {
        // 256 MiB on offer; what the path can hold without back-pressure from the router is the
        // kernel's socket buffers (here up to 32 MiB for the router's receive side, 4 MiB to send).
        let flood = FloodReplica(total: 256 << 20)
        let server = try await LoopbackServer.start { FloodReplica.Handler(flood) }
        let c = testConfiguration([ReplicaSpec(name: "flood", url: "http://127.0.0.1:\(server.port)")])
        let router = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
        do {
            try await self.stallResumeAndLeave(router: router, flood: flood)
        } catch {
            Issue.record(error)
        }
        await router.stop()
        await server.stop()
    }

    func stallResumeAndLeave(router: RouterRuntime, flood: FloodReplica) async throws {
        let reader = SlowReader()
        let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.autoRead, value: false)
            .channelOption(.socketOption(.so_rcvbuf), value: 16 * 1024)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(reader) }
            }
            .connect(host: "127.0.0.1", port: router.proxy.port)
            .get()
        try await client.writeAndFlush(ByteBuffer(string: "POST /v1/flood HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")).get()

        let stalled = try await self.settle { flood.sent.withLockedValue { $0 } }
        #expect(stalled > 0, "the replica never started answering")
        #expect(stalled < 64 << 20, "the router kept reading from the replica: \(stalled >> 20) MiB taken from it while the client read nothing")

        // Reading again resumes the flow: 16 MiB more, then the client stops reading again.
        reader.readUntil.withLockedValue { $0 = 16 << 20 }
        client.read()
        let resumed = try await self.settle({ reader.received.withLockedValue { $0 } }, quiet: 0.3, limit: 5)
        #expect(resumed >= 16 << 20)
        #expect(flood.sent.withLockedValue { $0 } > stalled)
        #expect(flood.sent.withLockedValue { $0 } < 128 << 20)

        // A client that leaves cancels the replica's answer.
        try await client.close()
        let deadline = ContinuousClock.now + .seconds(5)
        while !flood.streamClosed.withLockedValue({ $0 }), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(flood.streamClosed.withLockedValue { $0 })
    }
}
