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
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
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
        .target(name: "Raft", dependencies: ["RaftCore", "RaftStorage"]),
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
        .testTarget(name: "RaftTests", dependencies: ["Raft", "RaftCore", "RaftStorage"]),
        .testTarget(name: "RaftSimulationTests", dependencies: ["RaftSimulation", "RaftCore"]),
        .testTarget(name: "LinearizabilityTests", dependencies: ["Linearizability"]),
        .testTarget(name: "ChecksumTests", dependencies: ["Checksum"]),
        .testTarget(name: "RaftStorageTests", dependencies: ["RaftStorage", "RaftCore", "Checksum"]),
    ],
    swiftLanguageModes: [.v6]
)
