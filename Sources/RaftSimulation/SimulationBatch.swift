import Dispatch
import RaftCore

/// Runs many seeds in parallel and adds up what they found.
public struct SimulationBatch: Sendable {
    public var seeds = 0
    public var counts = SimulationCounts()
    public var violations = 0
    /// The seeds that failed, in ascending order.
    public var failedSeeds: [UInt64] = []

    public init() {}

    mutating func add(_ report: SimulationReport) {
        seeds += 1
        counts.add(report.counts)
        if report.violation != nil {
            violations += 1
            failedSeeds.append(report.options.seed)
            failedSeeds.sort()
        }
    }

    /// Runs every option set on `workers` threads; `onReport` sees each report as it ends.
    public static func run(
        _ options: [SimulationOptions], workers: Int, onReport: @Sendable (SimulationReport) -> Void = { _ in }
    ) async -> SimulationBatch {
        var batch = SimulationBatch()
        await withTaskGroup(of: SimulationReport.self) { group in
            var pending = options[...]
            for _ in 0..<min(workers, options.count) {
                let next = pending.removeFirst()
                group.addTask { await runOffThePool(next) }
            }
            for await report in group {
                onReport(report)
                batch.add(report)
                if let next = pending.popFirst() {
                    group.addTask { await runOffThePool(next) }
                }
            }
        }
        return batch
    }

    /// Runs one simulation on a Dispatch thread: seconds of CPU-bound work must not occupy the
    /// cooperative pool, whose few threads everything async in the process shares.
    public static func runOffThePool(_ options: SimulationOptions) async -> SimulationReport {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: Simulation.run(options)) }
        }
    }

    public func description(seconds: Double) -> String {
        let rate = seconds > 0 ? Int(Double(counts.steps) / seconds) : 0
        return """
            seeds: \(seeds)  steps: \(counts.steps)  elections: \(counts.elections)  commits: \(counts.commits)  \
            writes acknowledged: \(counts.writesAcknowledged)  reads checked: \(counts.readsChecked)  faults: \(counts.faults)  \
            violations: \(violations)\(failedSeeds.isEmpty ? "" : " (seeds \(failedSeeds.prefix(20).map(String.init).joined(separator: ", ")))")  \
            time: \((seconds * 10).rounded() / 10) s  steps/s: \(rate)
            """
    }
}
