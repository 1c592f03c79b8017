import RaftCore

/// What one simulated run does. Everything not given here is drawn from the seed.
public struct SimulationOptions: Sendable, Hashable {
    public var seed: UInt64
    /// Events to process before the final heal-and-check phase.
    public var steps: Int
    /// Voters at the start; nil lets the seed choose 3, 5 or 7.
    public var voters: Int?
    /// Test-only: a deliberate bug in every node, to prove the checks catch it.
    public var injectedBug: InjectedBug?
    /// Keep a readable trace of every event (slower; for replaying one seed).
    public var isTracing: Bool

    public init(seed: UInt64, steps: Int = 2_000, voters: Int? = nil, injectedBug: InjectedBug? = nil, isTracing: Bool = false) {
        self.seed = seed
        self.steps = steps
        self.voters = voters
        self.injectedBug = injectedBug
        self.isTracing = isTracing
    }

    /// The one-line command that replays this run with a trace.
    public var replayCommand: String {
        var command = "swift run -c release divan simulate --seed \(seed) --steps \(steps)"
        if let voters { command += " --nodes \(voters)" }
        if let injectedBug { command += " --inject-bug \(injectedBug.rawValue)" }
        return command + " --trace"
    }
}

/// How hostile one run's world is, drawn from its seed.
struct FaultProfile: Sendable {
    var dropPercent: Int
    var duplicatePercent: Int
    var maxDelay: UInt64
    var delaySpikePercent: Int
    /// Mean time units between faults (partitions, crashes, pauses, membership changes, ...).
    var faultInterval: Int
    var crashDuringPersistPercent: Int
    var usesPriorities: Bool
    var maxEntriesPerAppend: Int
    var maxInflightMessages: Int
    /// Chance that a new leader is cut off at once, leaving its first entries on itself alone:
    /// the setting of Raft's Figure 8.
    var isolateNewLeaderPercent: Int
    /// Chance that a new leader crashes soon after its election, in the middle of replicating.
    var crashNewLeaderPercent: Int
    var heartbeatTick: Int
    var readMode: ReadMode
    /// Idle groups go quiet (`RaftConfig.quiesceWhenIdle`); lost links are then reported to the
    /// nodes, as the runtime's transport does, since a quiesced follower relies on that to wake.
    /// Drawn from its own generator, so the other draws of a seed stay what they were.
    var quiescesWhenIdle = false

    init(random: inout DeterministicRandom) {
        dropPercent = [0, 1, 3, 8][random.below(4)]
        duplicatePercent = [0, 1, 3][random.below(3)]
        maxDelay = [3, 6, 12][random.below(3)]
        delaySpikePercent = [0, 1, 4][random.below(3)]
        faultInterval = [30, 80, 200][random.below(3)]
        crashDuringPersistPercent = [0, 1, 5][random.below(3)]
        usesPriorities = random.chance(1, in: 3)
        maxEntriesPerAppend = [1, 1, 2, 16][random.below(4)]
        maxInflightMessages = [1, 2, 8][random.below(3)]
        isolateNewLeaderPercent = [0, 10, 30][random.below(3)]
        crashNewLeaderPercent = [0, 10, 30][random.below(3)]
        heartbeatTick = [1, 2][random.below(2)]
        readMode = .safe
    }
}

/// What a run found and did.
public struct SimulationReport: Sendable {
    public var options: SimulationOptions
    public var counts = SimulationCounts()
    public var violation: Violation?
    public var trace: [String] = []

    public var passed: Bool { violation == nil }
}

/// What one or many runs did: the figures `divan simulate` prints.
public struct SimulationCounts: Sendable, Hashable {
    public var steps = 0
    public var elections = 0
    /// The highest committed index seen.
    public var commits = 0
    public var writesAcknowledged = 0
    public var readsChecked = 0
    public var faults = 0

    public init() {}

    mutating func add(_ other: SimulationCounts) {
        steps += other.steps
        elections += other.elections
        commits += other.commits
        writesAcknowledged += other.writesAcknowledged
        readsChecked += other.readsChecked
        faults += other.faults
    }
}

/// A broken safety or liveness property, with the moment it was seen.
public struct Violation: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case twoLeadersInOneTerm, logMatching, leaderCompleteness, divergentApply, commitWentBack
        case appliedWentBack, lostAcknowledgedWrite, nonLinearizableRead, priorityZeroLeader, liveness
    }

    public var kind: Kind
    public var step: Int
    public var time: UInt64
    public var detail: String

    public var description: String { "\(kind.rawValue) at step \(step) (time \(time)): \(detail)" }
}
