import RaftCore
import Testing

@testable import RaftSimulation

/// The simulator is the property test of the Raft core: every seed checks every invariant after every step.
@Suite struct SimulationTests {
    @Test func fiveHundredSeedsOfTwoThousandStepsFindNoViolation() async {
        let options = (1...500).map { SimulationOptions(seed: UInt64($0), steps: 2_000) }
        let batch = await SimulationBatch.run(options, workers: 4)
        #expect(batch.violations == 0, """
            seeds \(batch.failedSeeds) violate an invariant; replay one with:
            \(SimulationOptions(seed: batch.failedSeeds.first ?? 0).replayCommand)
            """)
        #expect(batch.seeds == 500)
        #expect(batch.counts.elections >= 500, "too few elections for the faults to mean anything")
        #expect(batch.counts.readsChecked > 10_000)
        #expect(batch.counts.writesAcknowledged > 10_000)
    }

    @Test func theSimulatedUpStoryChecksEveryStep() {
        var lines: [String] = []
        let succeeded = ClusterDemo(seed: 1) { lines.append($0) }.run()
        #expect(succeeded, "\(lines.joined(separator: "\n"))")
        #expect(lines.contains { $0.contains("killing node") })
        #expect(lines.last?.contains("no acknowledged write was lost") == true)
    }

    @Test func aSeedReplaysExactly() {
        let options = SimulationOptions(seed: 4242, steps: 1_500, isTracing: true)
        let first = Simulation.run(options)
        let second = Simulation.run(options)
        #expect(!first.trace.isEmpty)
        #expect(first.trace == second.trace)
        #expect(first.counts == second.counts)
    }

    /// Each deliberate bug must be caught within 200 seeds, or the checks prove nothing.
    @Test(arguments: InjectedBug.allCases)
    func aKnownBugIsCaught(_ bug: InjectedBug) async {
        // Committing an old term's entry by counting, and skipping the read round, only bite after
        // several elections in a row (Raft's Figure 8; a deposed leader still serving): longer runs.
        let steps = bug == .countVoteTwice ? 2_000 : 10_000
        let voters: Int? = bug == .commitEarlierTermByCounting ? 3 : nil
        var caught: (seed: UInt64, violation: Violation)?
        var seed: UInt64 = 1
        while caught == nil && seed <= 200 {
            let options = (seed..<min(seed + 8, 201)).map {
                SimulationOptions(seed: $0, steps: steps, voters: voters, injectedBug: bug)
            }
            let reports = await withTaskGroup(of: SimulationReport.self) { group in
                for option in options { group.addTask { await SimulationBatch.runOffThePool(option) } }
                return await group.reduce(into: []) { $0.append($1) }
            }
            if let failed = reports.filter({ !$0.passed }).min(by: { $0.options.seed < $1.options.seed }) {
                caught = (failed.options.seed, failed.violation!)
            }
            seed += UInt64(options.count)
        }
        #expect(caught != nil, "\(bug) survived 200 seeds")
        if let caught { print("\(bug) caught at seed \(caught.seed): \(caught.violation)") }
    }
}

/// The checks themselves, fed with hand-made violating histories: each must fire.
@Suite struct InvariantCheckerTests {
    func leaderNode(_ id: NodeID) -> SimulatedNode { SimulatedNode(id: id) }

    @Test func twoLeadersInOneTermAreCaught() throws {
        var checker = InvariantChecker()
        try checker.becameLeader(leaderNode(1), term: 5, at: 0, step: 1)
        #expect(throws: Violation.self) { try checker.becameLeader(leaderNode(2), term: 5, at: 1, step: 2) }
        try checker.becameLeader(leaderNode(2), term: 6, at: 2, step: 3)
    }

    @Test func differentEntriesAppliedAtOneIndexAreCaught() throws {
        var checker = InvariantChecker()
        let node = leaderNode(1)
        try checker.applied(Entry(term: 2, index: 7, payload: .normal([1])), on: node, at: 0, step: 1)
        try checker.applied(Entry(term: 2, index: 7, payload: .normal([1])), on: leaderNode(2), at: 1, step: 2)
        #expect(throws: Violation.self) {
            try checker.applied(Entry(term: 3, index: 7, payload: .normal([2])), on: leaderNode(3), at: 2, step: 3)
        }
    }

    @Test func aStaleReadIsCaught() throws {
        var checker = InvariantChecker()
        let write = ClientOperation(id: 1, kind: .write(key: 1, node: 1, index: 10), started: 0, floor: 0)
        try checker.operationEnded(write, outcome: .written(order: 10), at: 5, step: 1)
        // A read that starts after the write completed must see it, or something newer.
        let read = ClientOperation(id: 2, kind: .read(key: 1), started: 6, floor: checker.floor(for: 1))
        #expect(throws: Violation.self) { try checker.operationEnded(read, outcome: .read(order: 9), at: 7, step: 2) }
        let concurrent = ClientOperation(id: 3, kind: .read(key: 2), started: 6, floor: checker.floor(for: 2))
        try checker.operationEnded(concurrent, outcome: .read(order: 0), at: 8, step: 3)
    }

    @Test func readsNeverGoBackInTime() throws {
        var checker = InvariantChecker()
        let first = ClientOperation(id: 1, kind: .read(key: 1), started: 0, floor: checker.floor(for: 1))
        try checker.operationEnded(first, outcome: .read(order: 12), at: 3, step: 1)
        // The first read saw index 12 before this one began: seeing index 11 now is not linearizable.
        let second = ClientOperation(id: 2, kind: .read(key: 1), started: 4, floor: checker.floor(for: 1))
        #expect(throws: Violation.self) { try checker.operationEnded(second, outcome: .read(order: 11), at: 5, step: 2) }
    }

    @Test func unknownAndFailedWritesDoNotRaiseTheFloor() throws {
        var checker = InvariantChecker()
        let lost = ClientOperation(id: 1, kind: .write(key: 1, node: 1, index: 3), started: 0, floor: 0)
        try checker.operationEnded(lost, outcome: .unknown, at: 1, step: 1)
        let failed = ClientOperation(id: 2, kind: .write(key: 1, node: 1, index: 4), started: 0, floor: 0)
        try checker.operationEnded(failed, outcome: .failed, at: 1, step: 2)
        #expect(checker.floor(for: 1) == 0)
    }
}
