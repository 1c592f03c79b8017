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
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
    ],
    targets: [
        .target(name: "RaftCore"),
        .target(
            name: "RaftSimulation",
            dependencies: ["RaftCore", .product(name: "HeapModule", package: "swift-collections")]
        ),
        .target(name: "Linearizability"),
        .target(
            name: "Chaos",
            dependencies: [
                "Linearizability",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
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
            name: "Raft",
            dependencies: [
                "RaftCore",
                "RaftStorage",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(name: "KVWire", dependencies: ["RaftCore"]),
        .target(
            name: "KVStore",
            dependencies: [
                "KVWire",
                "Raft",
                "RaftCore",
                "RaftStorage",
                "Checksum",
                "CRocksDB",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .systemLibrary(name: "CRocksDB", pkgConfig: "rocksdb", providers: [.apt(["librocksdb-dev"])]),
        .target(
            name: "RESP",
            dependencies: [
                "KVWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "KVClient",
            dependencies: [
                "KVWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "HotUpgrade",
            dependencies: [
                "Checksum",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "Mesh",
            dependencies: [
                "HotUpgrade",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
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
        .target(
            name: "DivanServer",
            dependencies: [
                "KVStore",
                "RESP",
                "KVWire",
                "Raft",
                "RaftCore",
                "RaftStorage",
                "RaftTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "divan",
            dependencies: [
                "RaftCore",
                "RaftSimulation",
                "Linearizability",
                "Chaos",
                "RaftStorage",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                "Mesh",
                "HotUpgrade",
                "DivanServer",
                .product(name: "SystemPackage", package: "swift-system"),
                "Raft",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(name: "RaftCoreTests", dependencies: ["RaftCore"]),
        .testTarget(
            name: "RaftTests",
            dependencies: [
                "Raft", "RaftCore", "RaftStorage", "RaftTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "RaftSimulationTests", dependencies: ["RaftSimulation", "RaftCore"]),
        .testTarget(name: "LinearizabilityTests", dependencies: ["Linearizability"]),
        .testTarget(name: "ChecksumTests", dependencies: ["Checksum"]),
        .testTarget(name: "IntegrationTests", dependencies: ["DivanServer", "KVClient", "KVWire", "DivanTestSupport"], exclude: ["Scripts"]),
        .testTarget(name: "ChaosTests", dependencies: ["DivanTestSupport"]),
        .target(name: "DivanTestSupport", path: "Tests/DivanTestSupport"),
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
        .testTarget(
            name: "RESPTests",
            dependencies: [
                "RESP",
                "KVWire",
                "KVStore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            exclude: ["Clients"]
        ),
        .testTarget(
            name: "KVStoreTests",
            dependencies: [
                "KVStore", "KVWire", "Raft", "RaftCore", "RaftStorage",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .testTarget(name: "RaftStorageTests", dependencies: ["RaftStorage", "RaftCore", "Checksum"]),
        .testTarget(
            name: "HotUpgradeTests",
            dependencies: [
                "HotUpgrade",
                "Checksum",
                "DivanTestSupport",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            exclude: ["Fixtures"]
        ),
        .testTarget(
            name: "MeshTests",
            dependencies: [
                "Mesh",
                "DivanTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["Fixtures"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
