import Access
import CacheStore
import FleetState
import HTTPTransport
import Logging
import RoutingCore
import NIOCore
import NIOPosix
import RouterConfig
import ServiceLifecycle

/// The data-plane listener as a lifecycle `Service`: serves until graceful shutdown, then stops
/// accepting and lets in-flight requests and streams finish within `shutdown.drain_timeout`.
public final class ProxyServer: Service, Sendable {
    public let state: RouterState
    public let server: HTTPServer
    let logger: Logger
    /// Offers the router's queue to the replicas and refuses what waited too long, every 50 ms
    /// (answers that end offer it too, as they free room).
    let queueTimer: RepeatedTask

    init(state: RouterState, server: HTTPServer, logger: Logger, queueTimer: RepeatedTask) {
        self.state = state
        self.server = server
        self.logger = logger
        self.queueTimer = queueTimer
    }

    public static func start(
        state: RouterState,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        observer: any ProxyObserver,
        tls: ServerTLS? = nil,
        cache: CacheLayer? = nil,
        logger: Logger
    ) async throws -> ProxyServer {
        let config = state.config
        let loops = LoopResourceRegistry()
        let models = ModelsCache()
        let limits = HTTPServerLimits(maxHeaderBytes: config.limits.maxHeaderBytes, maxConnections: config.limits.maxConnections)
        let server = try await HTTPServer.bind(
            group: group,
            host: config.listen.host,
            port: config.listen.port,
            limits: limits,
            codec: .bytes,
            tls: tls,
            logger: logger
        ) { _ in
            [ClientConnection(state: state, loops: loops, models: models, observer: observer, cache: cache)]
        }
        let queueTimer = group.next().scheduleRepeatedTask(initialDelay: .milliseconds(50), delay: .milliseconds(50)) { _ in
            state.serveQueue()
        }
        let proxy = ProxyServer(state: state, server: server, logger: logger, queueTimer: queueTimer)
        state.observe { fleet in
            loops.fleetChanged(fleet)
        }
        logger.info(
            "serving",
            metadata: [
                "listen": "\(config.listen.host):\(server.port)", "replicas": "\(state.fleet.replicas.count)",
                "tls": "\(tls.map { "on (certificate serial \($0.serial))" } ?? "off")",
                "auth": "\(state.access.apiKeys.map { "\($0.count) keys" } ?? "off")",
            ])
        return proxy
    }

    public var port: Int { self.server.port }

    public func run() async throws {
        try? await gracefulShutdown()
        let drain = self.state.config.shutdown.drainSeconds
        self.logger.info("draining", metadata: ["connections": "\(self.server.connectionCount)", "deadline_seconds": "\(drain)"])
        await self.server.shutdown(gracefulWithin: drain)
        self.queueTimer.cancel()
        self.logger.info("stopped")
    }

    /// Stops at once (tests).
    public func stop(drain seconds: Double = 0.5) async {
        await self.server.shutdown(gracefulWithin: seconds)
        self.queueTimer.cancel()
    }
}
