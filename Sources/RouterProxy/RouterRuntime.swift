import Logging
import NIOCore
import NIOPosix
import RouterConfig
import ServiceLifecycle

/// Everything `cacheroute serve` runs, assembled once: the shared state, the data-plane listener
/// and the services around it. Tests and the demo start the same thing.
public struct RouterRuntime: Sendable {
    public let state: RouterState
    public let proxy: ProxyServer
    public let reload: ConfigReloadService?
    public var services: [any Service]

    public static func start(
        config: RouterConfiguration,
        configPath: String?,
        logger: Logger,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> RouterRuntime {
        let loops = group.makeIterator().reduce(0) { n, _ in n + 1 }
        let state = RouterState(config: config, logger: logger, eventLoops: loops)
        var observers: [any ProxyObserver] = []
        if config.logging.accessLog { observers.append(AccessLog(logger: Logger(label: "cacheroute.access"))) }
        let proxy = try await ProxyServer.start(state: state, group: group, observer: ObserverList(observers), logger: logger)
        var services: [any Service] = []
        var reload: ConfigReloadService?
        if let configPath {
            let service = ConfigReloadService(path: configPath, state: state, logger: logger)
            services.append(service)
            reload = service
        }
        services.append(proxy)
        return RouterRuntime(state: state, proxy: proxy, reload: reload, services: services)
    }
}
