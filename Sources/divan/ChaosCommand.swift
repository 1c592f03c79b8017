import ArgumentParser
import Chaos
import DivanServer
import Foundation

extension FaultKind: ExpressibleByArgument {}

/// `divan chaos`: a real cluster under faults, checked for linearizability (docs/reliability.md).
struct ChaosCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chaos",
        abstract: "Run a real Divan cluster under faults with concurrent clients and check what they saw.",
        discussion: """
            Starts `divan server` processes (RocksDB, fsync on) whose Raft traffic goes through a \
            fault-injecting TCP relay, runs clients doing GET, SET and SET ... IFEQ over RESP against every \
            node, and a nemesis on a seeded schedule (kill -9, SIGSTOP, partitions, membership changes, nodes replaced by empty ones, bit \
            flips on disk, leader transfers). Then it heals everything, waits for recovery, reads every key through every \
            node, checks each key's history for linearizability and writes history.jsonl, nemesis.jsonl, \
            timeline.svg and report.txt to --output.
            Exit codes: 0 passed; 1 violation (not linearizable, or nodes disagree); 2 inconclusive (the \
            cluster did not start or recover, or the checker gave up).
            """)

    @Option(help: "Seconds of workload under faults.")
    var time: Double = 60

    @Option(help: "The seed of the fault schedule and the clients' choices (default: random, printed).")
    var seed: UInt64?

    @Option(help: "Server processes: 3 or 5.")
    var nodes = 5

    @Option(help: "Founding voters (nodes 1...N); the other nodes start as learners.")
    var voters = 3

    @Option(help: "Concurrent clients.")
    var clients = 8

    @Option(help: "Keys the clients share.")
    var keys = 5

    @Option(help: "Operations per second, all clients together.")
    var rate: Double = 200

    @Option(help: "Seconds a client waits for a reply before recording an unknown outcome.")
    var operationTimeout: Double = 2

    @Option(help: "Election timeout of every node, in milliseconds.")
    var electionTimeoutMs = 500

    @Option(help: "Faults to inject, comma-separated: kill, pause, partition, membership, replace, disk, transfer.")
    var faults = FaultKind.allCases.map(\.rawValue).joined(separator: ",")

    @Option(help: "Output directory (default: chaos-SEED).")
    var output: String?

    @Flag(help: "Keep the nodes' data directories even when the run passes.")
    var keepData = false

    @Flag(help: "Run every node with --unsafe-stale-reads (the harness must report a violation).")
    var unsafeStaleReads = false

    @Flag(help: "Run every node with --unsafe-no-fsync (see docs/reliability.md for what this can and cannot show).")
    var unsafeNoFsync = false

    func validate() throws {
        guard [3, 5].contains(nodes) else { throw ValidationError("--nodes must be 3 or 5") }
        guard (1...nodes).contains(voters) else { throw ValidationError("--voters must be between 1 and --nodes") }
        guard time > 0, clients > 0, keys > 0, rate > 0, operationTimeout > 0 else {
            throw ValidationError("--time, --clients, --keys, --rate and --operation-timeout must be positive")
        }
        for name in faults.split(separator: ",") where FaultKind(rawValue: String(name)) == nil {
            throw ValidationError("--faults: unknown fault '\(name)'")
        }
    }

    func run() throws {
        let seed = seed ?? UInt64.random(in: 1...999_999)
        var options = ChaosOptions(
            seed: seed, duration: time, outputDirectory: output ?? "chaos-\(seed)",
            serverExecutable: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"), freePort: freeLoopbackPort)
        options.nodes = nodes
        options.voters = voters
        options.clients = clients
        options.keys = keys
        options.rate = rate
        options.operationTimeout = operationTimeout
        options.electionTimeoutMs = electionTimeoutMs
        options.faults = faults.split(separator: ",").compactMap { FaultKind(rawValue: String($0)) }
        options.keepsData = keepData
        options.unsafeServerOptions = (unsafeStaleReads ? ["--unsafe-stale-reads"] : []) + (unsafeNoFsync ? ["--unsafe-no-fsync"] : [])

        // Ctrl-C or SIGTERM: kill every server this run started, then exit.
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let sources = [SIGINT, SIGTERM].map { number in
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                ChildProcesses.killAll()
                print("divan chaos: interrupted; every server process was killed")
                Foundation.exit(130)
            }
            source.resume()
            return source
        }
        defer { sources.forEach { $0.cancel() } }

        let (verdict, report) = try ChaosRun.run(options) { line in
            say(line)
        }
        print(report, terminator: "")
        switch verdict {
        case .passed: return
        case .violation: throw ExitCode(1)
        case .inconclusive: throw ExitCode(2)
        }
    }
}
