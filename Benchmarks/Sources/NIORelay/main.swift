// The floor of any SwiftNIO proxy: a TCP relay that pairs each client connection with one
// connection to a backend (round robin) and copies bytes both ways. No HTTP parsing, no routing,
// no metrics: every request still costs a read and a write on each side, through NIO's channel
// pipeline. `proxy.sh --peers nio-relay` runs it beside HAProxy and cacheroute; the rate it
// reaches bounds what a NIO-based router can reach on this machine.
//
// usage: NIORelay LISTEN_PORT BACKEND_PORT... [--threads N]
import NIOCore
import NIOConcurrencyHelpers
import NIOPosix

/// One side of a relay pair: what it reads goes to its partner's channel; it stops reading while
/// the partner cannot write (back-pressure), as a proxy must.
final class RelayHandler: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var partner: RelayHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.partner?.write(self.unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) { self.partner?.flush() }

    func channelActive(context: ChannelHandlerContext) {
        self.partner?.resumeReading()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) { self.partner?.close() }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { self.partner?.resumeReading() }
    }

    func read(context: ChannelHandlerContext) {
        if self.partner?.isWritable ?? true { context.read() } else { self.pendingRead = true }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }

    private var isWritable: Bool {
        guard let channel = self.context?.channel else { return false }
        return channel.isActive && channel.isWritable
    }
    private func write(_ buffer: ByteBuffer) { self.context?.write(NIOAny(buffer), promise: nil) }
    private func flush() { self.context?.flush() }
    private func close() { self.context?.close(promise: nil) }
    private func resumeReading() {
        guard self.pendingRead else { return }
        self.pendingRead = false
        self.context?.read()
    }
}

var arguments = Array(CommandLine.arguments.dropFirst())
var threads = 2
if let flag = arguments.firstIndex(of: "--threads"), flag + 1 < arguments.count, let n = Int(arguments[flag + 1]) {
    threads = n
    arguments.removeSubrange(flag...flag + 1)
}
guard arguments.count >= 2, let listenPort = Int(arguments[0]) else {
    print("usage: NIORelay LISTEN_PORT BACKEND_PORT... [--threads N]")
    exit(2)
}
let backends = arguments.dropFirst().compactMap { Int($0) }
let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
let counter = NIOLockedValueBox(0)

let server = try await ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 1024)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { client in
        let port = counter.withLockedValue { n in
            n += 1
            return backends[n % backends.count]
        }
        let clientSide = RelayHandler()
        let backendSide = RelayHandler()
        clientSide.partner = backendSide
        backendSide.partner = clientSide
        ClientBootstrap(group: client.eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { $0.pipeline.addHandler(backendSide) }
            .connect(host: "127.0.0.1", port: port)
            .whenFailure { _ in client.close(promise: nil) }
        return client.pipeline.addHandler(clientSide)
    }
    .bind(host: "127.0.0.1", port: listenPort)
    .get()
print("relaying 127.0.0.1:\(listenPort) to ports \(backends.map(String.init).joined(separator: ",")) on \(threads) threads")
try await server.closeFuture.get()
