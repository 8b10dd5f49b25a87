// swift-tools-version:6.1
// Benchmarks live outside the main package so CI never builds them. Each prints ratios against a
// baseline measured in the same run: absolute times on this shared machine mean little.
import Foundation
import PackageDescription

// A path dependency is identified by its folder name, whatever the clone is called.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "cacheroute-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .target(name: "BenchTiming"),
        .executableTarget(
            name: "DecisionBench",
            dependencies: [
                "BenchTiming",
                .product(name: "RoutingCore", package: root),
            ]
        ),
        .executableTarget(
            name: "HeadBench",
            dependencies: [
                "BenchTiming",
                .product(name: "HTTPTransport", package: root),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "NestingBench",
            dependencies: [
                "BenchTiming",
                .product(name: "RoutingCore", package: root),
            ]
        ),
        .executableTarget(
            name: "CacheMemoryBench",
            dependencies: [
                .product(name: "ResponseCache", package: root),
                .product(name: "CacheStore", package: root),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "HeadFuzz",
            dependencies: [
                .product(name: "HTTPTransport", package: root),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "NIORelay",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
    ]
)
