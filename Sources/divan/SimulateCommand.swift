import ArgumentParser
import Foundation
import RaftCore
import RaftSimulation

/// `divan simulate`: runs seeded cluster simulations and checks Raft's invariants after every step.
struct SimulateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Run seeded Raft cluster simulations with faults and check every invariant.",
        discussion: "A failing seed prints a one-line command that replays it with a trace.")

    @Option(help: "How many seeds to run, starting at --seed.")
    var seeds = 1

    @Option(help: "The first seed.")
    var seed: UInt64 = 1

    @Option(help: "Events per seed before the final heal-and-liveness check.")
    var steps = 2_000

    @Option(help: "Voters at the start (3, 5 or 7); by default each seed chooses.")
    var nodes: Int?

    @Option(help: "Test-only: switch on a known bug (\(InjectedBug.allCases.map(\.rawValue).joined(separator: ", "))).")
    var injectBug: String?

    @Flag(help: "Print the trace of every event (use with a single seed).")
    var trace = false

    @Option(help: "Parallel workers; defaults to the number of cores.")
    var jobs = ProcessInfo.processInfo.activeProcessorCount

    func validate() throws {
        if seeds < 1 { throw ValidationError("--seeds must be at least 1") }
        if steps < 1 { throw ValidationError("--steps must be at least 1") }
        if let nodes, ![3, 5, 7].contains(nodes) { throw ValidationError("--nodes must be 3, 5 or 7") }
        if let injectBug, InjectedBug(rawValue: injectBug) == nil {
            throw ValidationError("unknown bug '\(injectBug)'")
        }
    }

    func run() async throws {
        let bug = injectBug.flatMap(InjectedBug.init(rawValue:))
        let started = ContinuousClock.now
        let options = (0..<UInt64(seeds)).map {
            SimulationOptions(seed: seed + $0, steps: steps, voters: nodes, injectedBug: bug, isTracing: trace)
        }
        let summary = await SimulationBatch.run(options, workers: max(1, jobs)) { report in
            if trace { report.trace.forEach { print($0) } }
            if let violation = report.violation {
                print("seed \(report.options.seed): VIOLATION \(violation)")
                print("  replay: \(report.options.replayCommand)")
            }
        }
        let seconds = (ContinuousClock.now - started) / .seconds(1)
        print(summary.description(seconds: seconds))
        if summary.violations > 0 { throw ExitCode(1) }
    }
}
