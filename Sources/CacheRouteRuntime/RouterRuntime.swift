import Access
import Admin
import CacheStore
import DataPlane
import Discovery
import FleetState
import HTTPTransport
import Logging
import NIOCore
import NIOPosix
import ReplicaProbes
import ResponseCache
import RouterConfig
import ServiceLifecycle
import Telemetry

/// Everything `cacheroute serve` runs, assembled once: the shared state, the data-plane
/// listener, the admin listener, the probes, config reload. Tests and the demo start the same.
public struct RouterRuntime: Sendable {
    public let state: RouterState
    public let proxy: ProxyServer
    public let admin: AdminServer?
    public let probes: ProbeService
    public let discovery: DiscoveryService
    public let metrics: RouterMetrics
    public let reload: ConfigReloadService?
    /// The listeners' certificates (reloaded with the configuration).
    public let listenerTLS: ListenerTLS
    /// The response caches (nil: `cache.enabled` is off).
    public let cache: CacheLayer?
    public var services: [any Service]

    /// - Parameters:
    ///   - accessLogger: where the access log goes (`logging.access_log`).
    ///   - admin: bind the admin listener (`admin_listen`).
    public static func start(
        config: RouterConfiguration,
        configPath: String?,
        logger: Logger,
        accessLogger: Logger = Logger(label: "cacheroute.access"),
        admin: Bool = true,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> RouterRuntime {
        let loops = group.makeIterator().reduce(0) { n, _ in n + 1 }
        let access = try AccessPolicy.load(config)
        let listenerTLS = try ListenerTLS(config)
        if config.upstream.tls.dangerouslySkipVerification {
            logger.warning(
                "upstream.tls.dangerously_skip_verification is on: replica certificates are NOT verified; anyone on the path can read and alter the traffic to https:// replicas")
        }
        let state = RouterState(config: config, logger: logger, eventLoops: loops, access: access)
        var cache: CacheLayer?
        if config.cache.enabled {
            cache = try CacheLayer(settings: config.cache, redisPassword: access.redisPassword, group: group, logger: Logger(label: "cacheroute.cache"), clock: CacheLayer.wallClock)
            logger.info(
                "response cache on",
                metadata: [
                    "store": "\(config.cache.backend.rawValue)", "default_mode": "\(config.cache.defaultMode.rawValue)",
                    "semantic": "\(config.cache.semantic.embeddingsURL ?? "no embeddings endpoint")",
                ])
        }
        var cacheStats: (@Sendable () -> CacheStats)?
        if let cache { cacheStats = { cache.stats() } }
        let metrics = RouterMetrics(state: state, cacheStats: cacheStats)
        var observers: [any ProxyObserver] = [metrics]
        if config.logging.accessLog { observers.append(AccessLog(logger: accessLogger)) }
        let probes = ProbeService(state: state, logger: Logger(label: "cacheroute.probe"))
        let proxy = try await ProxyServer.start(state: state, group: group, observer: ObserverList(observers), tls: listenerTLS.data, cache: cache, logger: logger)
        let discovery = DiscoveryService(state: state, logger: Logger(label: "cacheroute.discovery"))
        var services: [any Service] = [probes, discovery]
        var adminServer: AdminServer?
        if admin {
            do {
                adminServer = try await AdminServer.start(
                    state: state, metrics: { metrics.render() }, isReady: { probes.isReady }, group: group, tls: listenerTLS.admin, cache: cache, logger: logger)
            } catch {
                await proxy.stop(drain: 0)
                throw error
            }
            services.append(adminServer!)
        }
        var reload: ConfigReloadService?
        if let configPath {
            let service = ConfigReloadService(path: configPath, state: state, listenerTLS: listenerTLS, logger: logger) { metrics.reloaded(success: $0) }
            services.append(service)
            reload = service
        }
        services.append(proxy)
        return RouterRuntime(
            state: state, proxy: proxy, admin: adminServer, probes: probes, discovery: discovery, metrics: metrics, reload: reload, listenerTLS: listenerTLS, cache: cache, services: services
        )
    }

    /// Stops the listeners at once (tests, the demo); `serve` stops through its service group.
    public func stop(drain seconds: Double = 0.5) async {
        await self.proxy.stop(drain: seconds)
        await self.admin?.stop()
        self.cache?.shutdown()
    }
}

/// The certificates the listeners present, made from `tls` and `admin_tls`.
public struct ListenerTLS: Sendable {
    public let data: ServerTLS?
    public let admin: ServerTLS?

    /// No TLS on either listener.
    public static let none = ListenerTLS(data: nil, admin: nil)

    init(data: ServerTLS?, admin: ServerTLS?) {
        self.data = data
        self.admin = admin
    }

    public init(_ config: RouterConfiguration) throws(TLSSetupError) {
        let (data, admin) = try Self.prepare(config)
        self.init(data: data.map(ServerTLS.init), admin: admin.map(ServerTLS.init))
    }

    /// Reads the files of `config` into contexts, swapping nothing.
    static func prepare(_ config: RouterConfiguration) throws(TLSSetupError) -> (data: ServerTLS.Prepared?, admin: ServerTLS.Prepared?) {
        (
            try config.tls.map { files throws(TLSSetupError) in try ServerTLS.Prepared(files) },
            try config.adminTLS.map { files throws(TLSSetupError) in try ServerTLS.Prepared(files) }
        )
    }

    /// Checks the files of `config` make contexts, without swapping anything.
    public static func validate(_ config: RouterConfiguration) throws(TLSSetupError) {
        _ = try Self.prepare(config)
    }

    /// Swaps in the certificates `config` names, all or none (each read once); TLS turns on or off
    /// only on restart.
    func reload(_ config: RouterConfiguration) throws(TLSSetupError) {
        let (data, admin) = try Self.prepare(config)
        if let listener = self.data, let data { listener.install(data) }
        if let listener = self.admin, let admin { listener.install(admin) }
    }
}
