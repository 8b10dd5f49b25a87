import HTTPTransport
import Logging
import NIOCore
import NIOPosix
import ReplicaModel
import RoutingCore
import ServiceLifecycle

/// An emulated replica listening on a port, as a lifecycle `Service`.
public final class EmulatorServer: Service, Sendable {
    public let replica: EmulatedReplica
    public let server: HTTPServer
    let logger: Logger

    init(replica: EmulatedReplica, server: HTTPServer, logger: Logger) {
        self.replica = replica
        self.server = server
        self.logger = logger
    }

    /// Binds and starts serving at once (the engine steps on one of the group's event loops).
    public static func start(
        settings: EmulatorSettings,
        host: String = "127.0.0.1",
        port: Int,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        tls: ServerTLS? = nil,
        logger: Logger
    ) async throws -> EmulatorServer {
        let replica = EmulatedReplica(settings: settings, engineLoop: group.any())
        let server = try await HTTPServer.bind(group: group, host: host, port: port, tls: tls, logger: logger) { _ in
            [EmulatorHandler(replica: replica)]
        }
        logger.info(
            "emulated replica ready",
            metadata: [
                "name": "\(settings.name)", "port": "\(server.port)", "engine": "\(settings.engine.rawValue)",
                "model": "\(settings.model)", "mode": "\(settings.instant ? "instant" : "timed x\(settings.timing.speed)")",
            ]
        )
        return EmulatorServer(replica: replica, server: server, logger: logger)
    }

    public var port: Int { self.server.port }

    /// Serves until graceful shutdown, then drains.
    public func run() async throws {
        try? await gracefulShutdown()
        await self.server.shutdown(gracefulWithin: 5)
    }

    /// Stops at once (tests).
    public func stop() async {
        await self.server.shutdown(gracefulWithin: 0.5)
    }
}
