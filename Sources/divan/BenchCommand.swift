import ArgumentParser

/// `divan bench …`: measurements that print figures (not tests).
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks that print figures for docs/benchmarks.md.",
        subcommands: [BenchWAL.self, BenchRaft.self, BenchIdleGroups.self, BenchNode.self, BenchKV.self, BenchMesh.self, BenchUpgrade.self]
    )
}
