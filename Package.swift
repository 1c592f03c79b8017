// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Divan",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "divan", targets: ["divan"]),
        .library(name: "RaftCore", targets: ["RaftCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        .target(name: "RaftCore"),
        .target(
            name: "RaftSimulation",
            dependencies: ["RaftCore", .product(name: "HeapModule", package: "swift-collections")]
        ),
        .target(name: "Linearizability"),
        .executableTarget(
            name: "divan",
            dependencies: [
                "RaftCore",
                "RaftSimulation",
                "Linearizability",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "RaftCoreTests", dependencies: ["RaftCore"]),
        .testTarget(name: "RaftSimulationTests", dependencies: ["RaftSimulation", "RaftCore"]),
        .testTarget(name: "LinearizabilityTests", dependencies: ["Linearizability"]),
    ],
    swiftLanguageModes: [.v6]
)
