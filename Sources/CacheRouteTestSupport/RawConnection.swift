import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A plain TCP connection for tests that need to send bytes no HTTP client would (malformed
/// heads, pipelining, slow clients) and see exactly what comes back.
public final class RawConnection: Sendable {
    let channel: any Channel
    let collector: Collector

    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received = NIOLockedValueBox<[UInt8]>([])
        let closed = NIOLockedValueBox(false)

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = Self.unwrapInboundIn(data)
            self.received.withLockedValue { $0 += buffer.readableBytesView }
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.closed.withLockedValue { $0 = true }
        }
    }

    init(channel: any Channel, collector: Collector) {
        self.channel = channel
        self.collector = collector
    }

    public static func connect(port: Int) async throws -> RawConnection {
        let collector = Collector()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        return RawConnection(channel: channel, collector: collector)
    }

    public func send(_ text: String) async throws {
        try await self.channel.writeAndFlush(ByteBuffer(string: text)).get()
    }

    public func send(_ bytes: [UInt8]) async throws {
        try await self.channel.writeAndFlush(ByteBuffer(bytes: bytes)).get()
    }

    /// Everything received so far.
    public var text: String { String(decoding: self.collector.received.withLockedValue { $0 }, as: UTF8.self) }
    public var isClosed: Bool { self.collector.closed.withLockedValue { $0 } }

    /// Waits until `predicate` holds on the received text (or the peer closed), up to `timeout`.
    @discardableResult
    public func wait(timeout: Double = 5, until predicate: (String) -> Bool) async throws -> String {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        while ContinuousClock.now < deadline {
            let text = self.text
            if predicate(text) || self.isClosed { return text }
            try await Task.sleep(for: .milliseconds(10))
        }
        return self.text
    }

    /// Waits for the peer to close, up to `timeout`; returns whether it did.
    public func waitForClose(timeout: Double = 5) async throws -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        while ContinuousClock.now < deadline {
            if self.isClosed { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return self.isClosed
    }

    public func close() async {
        try? await self.channel.close()
    }
}
