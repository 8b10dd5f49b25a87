import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Limits every HTTP listener applies.
public struct HTTPServerLimits: Sendable, Equatable {
    /// Largest request head (request line + headers); a larger one is refused (431).
    public var maxHeaderBytes: Int
    /// Open connections at most; more are closed as they arrive.
    public var maxConnections: Int

    public init(maxHeaderBytes: Int = 64 << 10, maxConnections: Int = 10_000) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxConnections = maxConnections
    }
}

/// An HTTP/1.1 listener on SwiftNIO.
///
/// With the `.http1` codec each connection gets NIO's server pipeline (request decoding with the header limit, response
/// encoding, pipelining assistance, error handling) followed by the handlers `handlers` makes.
/// The handlers stay on the connection's event loop: no task or loop hop per request.
///
/// `shutdown(gracefulWithin:)` stops accepting, asks every connection to close once its current
/// response is done (NIO's quiescing), waits up to the deadline, then closes what is left.
public final class HTTPServer: Sendable {
    public let channel: any Channel
    let connections: ConnectionRegistry
    let logger: Logger

    /// The port actually bound (useful with port 0).
    public var port: Int { self.channel.localAddress?.port ?? 0 }

    /// Connections open now.
    public var connectionCount: Int { self.connections.count }

    init(channel: any Channel, connections: ConnectionRegistry, logger: Logger) {
        self.channel = channel
        self.connections = connections
        self.logger = logger
    }

    /// What sits between the socket and a connection's handlers.
    public enum Codec: Sendable {
        /// NIO's HTTP/1.1 server pipeline: handlers see `HTTPServerRequestPart`s.
        case http1
        /// Nothing: handlers see the bytes and speak HTTP themselves (the proxy's data plane).
        /// They must honour `ChannelShouldQuiesceEvent` for graceful shutdown.
        case bytes
    }

    /// Binds a listener. `handlers` runs on each new connection's event loop and returns the
    /// handlers to put after the codec. With `tls`, every connection starts with a TLS handshake
    /// (the context current when it is accepted; see `ServerTLS.reload`).
    public static func bind(
        group: any EventLoopGroup,
        host: String,
        port: Int,
        limits: HTTPServerLimits = HTTPServerLimits(),
        codec: Codec = .http1,
        tls: ServerTLS? = nil,
        logger: Logger,
        handlers: @escaping @Sendable (any Channel) throws -> [any ChannelHandler]
    ) async throws -> HTTPServer {
        let registry = ConnectionRegistry(limit: limits.maxConnections)
        var configured = NIOHTTPDecoderLimitConfiguration()
        configured.maxHeaderFieldSize = limits.maxHeaderBytes
        configured.maxHeaderListSize = limits.maxHeaderBytes
        let decoderLimits = configured
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelOption(.allowRemoteHalfClosure, value: false)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Tracked without a handler, so that no read passes through one more hop;
                    // beyond the limit the connection is closed at once.
                    guard registry.add(channel) else { throw ConnectionLimitReached() }
                    channel.closeFuture.whenComplete { _ in registry.remove(channel) }
                    let sync = channel.pipeline.syncOperations
                    if let tls { try sync.addHandler(NIOSSLServerHandler(context: tls.context)) }
                    if case .http1 = codec {
                        try sync.configureHTTPServerPipeline(
                            withPipeliningAssistance: true,
                            withErrorHandling: true,
                            withOutboundHeaderValidation: false,
                            withEncoderConfiguration: .init(),
                            withDecoderLimitConfiguration: decoderLimits
                        )
                    }
                    try sync.addHandlers(try handlers(channel))
                }
            }
            .bind(host: host, port: port)
            .get()
        return HTTPServer(channel: channel, connections: registry, logger: logger)
    }

    /// Stops accepting and drains: connections close after their current response; whatever is
    /// still open after `seconds` is closed.
    public func shutdown(gracefulWithin seconds: Double) async {
        try? await self.channel.close()
        for child in self.connections.all {
            child.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        let deadline = NIODeadline.now() + .nanoseconds(Int64(seconds * 1e9))
        while self.connections.count > 0, NIODeadline.now() < deadline {
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        let left = self.connections.all
        if !left.isEmpty {
            self.logger.warning("drain deadline reached; closing open connections", metadata: ["connections": "\(left.count)"])
        }
        for child in left { child.close(promise: nil) }
    }
}

/// The open connections of a listener.
final class ConnectionRegistry: Sendable {
    let limit: Int
    private let channels = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])

    init(limit: Int) {
        self.limit = limit
    }

    var count: Int { self.channels.withLockedValue { $0.count } }
    var all: [any Channel] { self.channels.withLockedValue { Array($0.values) } }

    /// Adds a connection; false when the limit is reached.
    func add(_ channel: any Channel) -> Bool {
        self.channels.withLockedValue { channels in
            guard channels.count < self.limit else { return false }
            channels[ObjectIdentifier(channel)] = channel
            return true
        }
    }

    func remove(_ channel: any Channel) {
        _ = self.channels.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }
}

/// Thrown by the connection initializer beyond `maxConnections`: NIO closes the new connection.
struct ConnectionLimitReached: Error {}
