// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Divan",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "divan", targets: ["divan"]),
        .library(name: "RaftCore", targets: ["RaftCore"]),
        .library(name: "RaftStorage", targets: ["RaftStorage"]),
        .library(name: "Checksum", targets: ["Checksum"]),
        .library(name: "RaftTransport", targets: ["RaftTransport"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        .target(name: "RaftCore"),
        .target(
            name: "RaftSimulation",
            dependencies: ["RaftCore", .product(name: "HeapModule", package: "swift-collections")]
        ),
        .target(name: "Linearizability"),
        .target(name: "Checksum"),
        .target(
            name: "RaftStorage",
            dependencies: [
                "RaftCore",
                "Checksum",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .target(
            name: "RaftTransport",
            dependencies: [
                "RaftCore",
                "Checksum",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "divan",
            dependencies: [
                "RaftCore",
                "RaftSimulation",
                "Linearizability",
                "RaftStorage",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        .testTarget(name: "RaftCoreTests", dependencies: ["RaftCore"]),
        .testTarget(name: "RaftSimulationTests", dependencies: ["RaftSimulation", "RaftCore"]),
        .testTarget(name: "LinearizabilityTests", dependencies: ["Linearizability"]),
        .testTarget(name: "ChecksumTests", dependencies: ["Checksum"]),
        .testTarget(name: "RaftStorageTests", dependencies: ["RaftStorage", "RaftCore", "Checksum"]),
        .testTarget(
            name: "RaftTransportTests",
            dependencies: [
                "RaftTransport",
                "RaftCore",
                "Checksum",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
