// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

/// The per-request path (JSON scan, keys, placement, HTTP relay): release builds drop the
/// dynamic exclusivity checks, worth a few percent of the proxy's CPU per request (measured
/// with Benchmarks/proxy.sh). Debug builds and tests keep them.
let hotPathSettings = swiftSettings + [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

// MARK: - Dependencies

let nioCore: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")
let nioPosix: Target.Dependency = .product(name: "NIOPosix", package: "swift-nio")
let nioHTTP1: Target.Dependency = .product(name: "NIOHTTP1", package: "swift-nio")
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")
let lifecycle: Target.Dependency = .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let atomics: Target.Dependency = .product(name: "Atomics", package: "swift-atomics")
let nioConcurrency: Target.Dependency = .product(name: "NIOConcurrencyHelpers", package: "swift-nio")
let nioSSL: Target.Dependency = .product(name: "NIOSSL", package: "swift-nio-ssl")

let package = Package(
    name: "cacheroute",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "cacheroute", targets: ["cacheroute"]),
        .library(name: "RoutingCore", targets: ["RoutingCore"]),
        .library(name: "RouterConfig", targets: ["RouterConfig"]),
        .library(name: "HTTPTransport", targets: ["HTTPTransport"]),
        .library(name: "ResponseCache", targets: ["ResponseCache"]),
        .library(name: "CacheStore", targets: ["CacheStore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-numerics.git", from: "1.1.1"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // MARK: - Pure layers (no I/O, no clock, no Foundation)
        .systemLibrary(
            name: "CXXHash",
            pkgConfig: "libxxhash",
            providers: [.apt(["libxxhash-dev"]), .brew(["xxhash"])]
        ),
        .target(name: "XXHash", dependencies: ["CXXHash"], swiftSettings: swiftSettings),
        .target(name: "CJSONScan", cSettings: [.unsafeFlags(["-O3"])]),
        .target(
            name: "FastJSON",
            dependencies: ["CJSONScan"],
            swiftSettings: hotPathSettings,
            linkerSettings: [.linkedLibrary("m")]
        ),
        .target(
            name: "RoutingCore",
            dependencies: [
                "XXHash", "FastJSON", .product(name: "RealModule", package: "swift-numerics"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: hotPathSettings
        ),

        .target(
            name: "ReplicaModel",
            dependencies: ["RoutingCore", "XXHash", "FastJSON", .product(name: "DequeModule", package: "swift-collections")],
            swiftSettings: swiftSettings
        ),

        .target(
            name: "TraceReplay",
            dependencies: [
                "RoutingCore", "ReplicaModel", "FastJSON",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "RealModule", package: "swift-numerics"),
            ],
            swiftSettings: swiftSettings
        ),

        // The response caches' pure part: settings, keys, what may be stored, replay, the semantic index.
        .target(name: "ResponseCache", dependencies: ["RoutingCore", "FastJSON", "XXHash"], swiftSettings: swiftSettings),

        // API keys (SHA-256 digests, constant-time) and per-tenant limits: pure, no I/O.
        .target(name: "Access", swiftSettings: swiftSettings),

        // MARK: - Network layers
        .target(name: "PrometheusText", swiftSettings: swiftSettings),
        .target(
            name: "HTTPTransport",
            dependencies: ["Access", nioCore, nioPosix, nioHTTP1, logging, nioConcurrency, nioSSL],
            swiftSettings: hotPathSettings
        ),
        .target(
            name: "ReplicaEmulator",
            dependencies: [
                "HTTPTransport", "ReplicaModel", "PrometheusText", "FastJSON", "RoutingCore", "XXHash", nioCore, nioPosix, nioHTTP1,
                logging, lifecycle, nioConcurrency,
            ],
            swiftSettings: swiftSettings
        ),

        // The response caches' stores (memory, Redis over RESP) and embeddings client.
        .target(
            name: "CacheStore",
            dependencies: ["ResponseCache", "RoutingCore", "FastJSON", "HTTPTransport", "Access", "XXHash", nioCore, nioPosix, nioHTTP1, logging, atomics, nioConcurrency],
            swiftSettings: swiftSettings
        ),

        // MARK: - The router around the core
        // The shared state: the shell (lock, clock, listeners) around the core's FleetRouter.
        .target(
            name: "FleetState",
            dependencies: ["RoutingCore", "RouterConfig", "ResponseCache", "HTTPTransport", "Access", "XXHash", nioCore, nioHTTP1, logging, atomics, nioConcurrency],
            swiftSettings: hotPathSettings
        ),
        // The data plane: client connections, the exchange shell, upstream transport and pools.
        .target(
            name: "DataPlane",
            dependencies: [
                "FleetState", "RoutingCore", "RouterConfig", "HTTPTransport", "Access", "FastJSON", "XXHash", "ResponseCache", "CacheStore", nioCore, nioPosix,
                nioHTTP1, logging, lifecycle, nioConcurrency, .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: hotPathSettings
        ),
        // Probes and what replica metrics mean (vLLM and SGLang names).
        .target(
            name: "ReplicaProbes",
            dependencies: ["FleetState", "RoutingCore", "RouterConfig", "HTTPTransport", "PrometheusText", "FastJSON", logging, lifecycle, atomics, nioConcurrency, nioPosix],
            swiftSettings: swiftSettings
        ),
        // Replicas from DNS.
        .target(
            name: "Discovery",
            dependencies: ["FleetState", "RoutingCore", "RouterConfig", nioCore, nioPosix, logging, lifecycle, nioConcurrency],
            swiftSettings: swiftSettings
        ),
        // Metrics and the access log: the only importer of swift-prometheus.
        .target(
            name: "Telemetry",
            dependencies: [
                "FleetState", "RoutingCore", "PrometheusText", "ResponseCache", logging, nioConcurrency,
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: hotPathSettings
        ),
        // The admin listener.
        .target(
            name: "Admin",
            dependencies: ["FleetState", "Access", "ResponseCache", "CacheStore", "RoutingCore", "RouterConfig", "HTTPTransport", "FastJSON", nioCore, nioPosix, nioHTTP1, logging, lifecycle],
            swiftSettings: swiftSettings
        ),
        // Everything `serve` runs, assembled: tests and the demo start the same.
        .target(
            name: "CacheRouteRuntime",
            dependencies: [
                "Access", "HTTPTransport", "FleetState", "DataPlane", "ReplicaProbes", "Discovery", "Telemetry", "Admin", "RouterConfig", "RoutingCore",
                "ResponseCache", "CacheStore", nioCore, nioPosix,
                logging, lifecycle, .product(name: "UnixSignals", package: "swift-service-lifecycle"), nioConcurrency,
            ],
            swiftSettings: swiftSettings
        ),

        .target(
            name: "LiveLoad",
            dependencies: ["HTTPTransport", "FastJSON", "RouterConfig", "RoutingCore", "TraceReplay", "PrometheusText", "ReplicaProbes", nioCore, nioHTTP1],
            swiftSettings: swiftSettings
        ),

        // MARK: - Configuration and the command line
        .target(
            name: "RouterConfig",
            dependencies: ["RoutingCore", "FastJSON", "Access", "ResponseCache", .product(name: "Yams", package: "Yams")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "cacheroute",
            dependencies: [
                "Access", "FleetState", "RoutingCore", "RouterConfig", "FastJSON", "ReplicaModel", "TraceReplay", "ReplicaEmulator", "CacheRouteRuntime", "DataPlane", "Admin",
                "ReplicaProbes", "LiveLoad",
                "HTTPTransport", nioCore, nioPosix, .product(name: "ArgumentParser", package: "swift-argument-parser"), logging, lifecycle,
                nioConcurrency, .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        .target(
            name: "CacheRouteTestSupport",
            dependencies: ["HTTPTransport", "ReplicaEmulator", "FastJSON", nioCore, nioPosix, nioHTTP1, logging, nioConcurrency],
            swiftSettings: swiftSettings
        ),

        // MARK: - Tests
        .testTarget(name: "FastJSONTests", dependencies: ["FastJSON", "CJSONScan"], swiftSettings: swiftSettings),
        .testTarget(
            name: "RoutingCoreTests",
            dependencies: ["RoutingCore", "XXHash", "FastJSON"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ReplicaEmulatorTests",
            dependencies: ["CacheRouteTestSupport", "ReplicaEmulator", "ReplicaModel", "RoutingCore", "HTTPTransport", "PrometheusText", "FastJSON", nioCore, nioHTTP1],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "ReplicaModelTests", dependencies: ["ReplicaModel", "RoutingCore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "TraceReplayTests",
            dependencies: ["TraceReplay", "ReplicaModel", "RoutingCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RouterTests",
            dependencies: [
                "CacheRouteTestSupport", "CacheRouteRuntime", "FleetState", "DataPlane", "ReplicaProbes", "Discovery", "Telemetry", "Admin",
                "RouterConfig", "RoutingCore", "ReplicaEmulator", "ReplicaModel", "HTTPTransport", "FastJSON", "PrometheusText", "LiveLoad",
                "TraceReplay", "Access", "ResponseCache", "CacheStore", nioCore, nioPosix, nioHTTP1, logging, .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "AccessTests", dependencies: ["Access"], swiftSettings: swiftSettings),
        .testTarget(
            name: "ResponseCacheTests",
            dependencies: ["ResponseCache", "CacheStore", "RoutingCore", "FastJSON", nioCore, nioPosix],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RouterConfigTests",
            dependencies: ["RouterConfig", "RoutingCore", "Access", "ResponseCache"],
            swiftSettings: swiftSettings
        ),
    ]
)
