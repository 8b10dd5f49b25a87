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
let metrics: Target.Dependency = .product(name: "Metrics", package: "swift-metrics")
let lifecycle: Target.Dependency = .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let atomics: Target.Dependency = .product(name: "Atomics", package: "swift-atomics")

let package = Package(
    name: "cacheroute",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "cacheroute", targets: ["cacheroute"]),
        .library(name: "RoutingCore", targets: ["RoutingCore"]),
        .library(name: "RouterConfig", targets: ["RouterConfig"]),
        .library(name: "HTTPTransport", targets: ["HTTPTransport"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-numerics.git", from: "1.1.1"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
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
            dependencies: ["XXHash", "FastJSON", .product(name: "RealModule", package: "swift-numerics")],
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

        // MARK: - Network layers
        .target(name: "PrometheusText", dependencies: ["RoutingCore"], swiftSettings: swiftSettings),
        .target(
            name: "HTTPTransport",
            dependencies: [nioCore, nioPosix, nioHTTP1, logging, .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            swiftSettings: hotPathSettings
        ),
        .target(
            name: "Discovery",
            dependencies: [nioCore, nioPosix, .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ReplicaEmulator",
            dependencies: [
                "HTTPTransport", "ReplicaModel", "PrometheusText", "FastJSON", "RoutingCore", "XXHash", nioCore, nioPosix, nioHTTP1,
                logging, lifecycle, .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),

        .target(
            name: "RouterProxy",
            dependencies: [
                "RoutingCore", "RouterConfig", "HTTPTransport", "FastJSON", "PrometheusText", "Discovery", "XXHash", nioCore, nioPosix, nioHTTP1, logging,
                lifecycle, atomics,
                metrics, .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: hotPathSettings
        ),

        .target(
            name: "LiveLoad",
            dependencies: ["HTTPTransport", "FastJSON", "RouterConfig", "RoutingCore", "TraceReplay", "PrometheusText", nioCore, nioHTTP1],
            swiftSettings: swiftSettings
        ),

        // MARK: - Configuration and the command line
        .target(
            name: "RouterConfig",
            dependencies: ["RoutingCore", "FastJSON", .product(name: "Yams", package: "Yams")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "cacheroute",
            dependencies: [
                "RoutingCore", "RouterConfig", "FastJSON", "ReplicaModel", "TraceReplay", "ReplicaEmulator", "RouterProxy", "LiveLoad",
                "HTTPTransport", nioCore, nioPosix, metrics, .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"), logging, lifecycle,
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        .target(
            name: "CacheRouteTestSupport",
            dependencies: [
                "HTTPTransport", "ReplicaEmulator", "FastJSON", nioCore, nioPosix, nioHTTP1, logging,
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
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
            name: "RouterProxyTests",
            dependencies: [
                "CacheRouteTestSupport", "RouterProxy", "RouterConfig", "RoutingCore", "ReplicaEmulator", "ReplicaModel", "HTTPTransport", "FastJSON",
                "PrometheusText", "LiveLoad", "TraceReplay", "Discovery", nioCore, nioPosix, nioHTTP1, logging,
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RouterConfigTests",
            dependencies: ["RouterConfig", "RoutingCore"],
            swiftSettings: swiftSettings
        ),
    ]
)
