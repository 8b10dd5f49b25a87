// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "cacheroute",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "cacheroute", targets: ["cacheroute"]),
        .library(name: "RoutingCore", targets: ["RoutingCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-numerics.git", from: "1.1.1"),
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
            swiftSettings: swiftSettings,
            linkerSettings: [.linkedLibrary("m")]
        ),
        .target(
            name: "RoutingCore",
            dependencies: ["XXHash", "FastJSON", .product(name: "RealModule", package: "swift-numerics")],
            swiftSettings: swiftSettings,
            linkerSettings: [.linkedLibrary("m")]
        ),
        .executableTarget(name: "cacheroute", dependencies: ["RoutingCore"], swiftSettings: swiftSettings),
        .testTarget(name: "FastJSONTests", dependencies: ["FastJSON", "CJSONScan"], swiftSettings: swiftSettings),
        .testTarget(
            name: "RoutingCoreTests",
            dependencies: ["RoutingCore", "XXHash", "FastJSON"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
    ]
)
