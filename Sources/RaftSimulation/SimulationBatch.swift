import RaftCore

/// Runs many seeds in parallel and adds up what they found.
public struct SimulationBatch: Sendable {
    public var seeds = 0
    public var steps = 0
    public var elections = 0
    public var commits = 0
    public var writesAcknowledged = 0
    public var readsChecked = 0
    public var faults = 0
    public var violations = 0
    /// The seeds that failed, in ascending order.
    public var failedSeeds: [UInt64] = []

    public init() {}

    mutating func add(_ report: SimulationReport) {
        seeds += 1
        steps += report.steps
        elections += report.elections
        commits += report.commits
        writesAcknowledged += report.writesAcknowledged
        readsChecked += report.readsChecked
        faults += report.faults
        if report.violation != nil {
            violations += 1
            failedSeeds.append(report.options.seed)
            failedSeeds.sort()
        }
    }

    /// Runs every option set on `workers` concurrent tasks; `onReport` sees each report as it ends.
    public static func run(
        _ options: [SimulationOptions], workers: Int, onReport: @Sendable (SimulationReport) -> Void = { _ in }
    ) async -> SimulationBatch {
        var batch = SimulationBatch()
        await withTaskGroup(of: SimulationReport.self) { group in
            var pending = options[...]
            for _ in 0..<min(workers, options.count) {
                let next = pending.removeFirst()
                group.addTask { Simulation.run(next) }
            }
            for await report in group {
                onReport(report)
                batch.add(report)
                if let next = pending.popFirst() {
                    group.addTask { Simulation.run(next) }
                }
            }
        }
        return batch
    }

    public func description(seconds: Double) -> String {
        let rate = seconds > 0 ? Int(Double(steps) / seconds) : 0
        return """
            seeds: \(seeds)  steps: \(steps)  elections: \(elections)  commits: \(commits)  \
            writes acknowledged: \(writesAcknowledged)  reads checked: \(readsChecked)  faults: \(faults)  \
            violations: \(violations)\(failedSeeds.isEmpty ? "" : " (seeds \(failedSeeds.prefix(20).map(String.init).joined(separator: ", ")))")  \
            time: \((seconds * 10).rounded() / 10) s  steps/s: \(rate)
            """
    }
}
