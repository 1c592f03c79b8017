import ArgumentParser
import RaftSimulation

/// `divan up`: shows a local 3-node Divan cluster at work.
struct UpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start a local 3-node cluster and show it working.",
        discussion: """
            Today the cluster runs in this one process on virtual time, with the real Raft core: it elects \
            a leader, commits writes, serves a linearizable read on a follower, loses its leader, elects \
            another, and brings the old leader back. Real processes with disks and sockets arrive with the \
            Raft runtime.
            """)

    @Option(help: "The seed of every random choice (election timeouts).")
    var seed: UInt64 = 1

    func run() throws {
        print("divan up: a 3-node Raft cluster in one process (simulated network and disks)")
        let demo = ClusterDemo(seed: seed) { print($0) }
        guard demo.run() else { throw ExitCode.failure }
    }
}
