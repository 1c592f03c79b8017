import HeapModule
import RaftCore

/// A seeded, deterministic Raft cluster on virtual time, with a hostile network, crashes, pauses,
/// membership changes and clients, that checks Raft's safety properties after every step.
public final class Simulation {
    /// Virtual time units per tick; messages take a few units, so a round trip fits in a tick.
    static let tickInterval: UInt64 = 10
    static let electionTick = 6
    static let keys: [UInt8] = [1, 2, 3]

    let options: SimulationOptions
    var random: DeterministicRandom
    let profile: FaultProfile
    var nodes: [SimulatedNode] = []
    var queue = Heap<ScheduledEvent>()
    var now: UInt64 = 0
    var sequence: UInt64 = 0
    var step = 0
    /// Directed links that drop everything: `blocked[from][to]`.
    var blocked: [[Bool]]
    var isHealing = false
    var report: SimulationReport
    var checker: InvariantChecker
    var nextOperationID: UInt64 = 1

    public init(options: SimulationOptions) {
        self.options = options
        var random = DeterministicRandom(seed: options.seed)
        var profile = FaultProfile(random: &random)
        var quiescence = DeterministicRandom(seed: options.seed ^ 0x51E5_CE0F_1D1E_0001)
        profile.quiescesWhenIdle = quiescence.chance(1, in: 2)
        self.profile = profile
        let voterCount = options.voters ?? [3, 3, 5, 5, 7][random.below(5)]
        let learnerCount = random.below(2)
        let spareCount = 1 + random.below(2)
        self.random = random
        let total = voterCount + learnerCount + spareCount
        self.blocked = Array(repeating: Array(repeating: false, count: total + 1), count: total + 1)
        self.report = SimulationReport(options: options)
        self.checker = InvariantChecker()

        var priorities: [NodeID: ElectionPriority] = [:]
        if profile.usesPriorities {
            for id in 1...NodeID(voterCount) {
                priorities[id] = ElectionPriority(id == 1 ? 100 : (id == NodeID(voterCount) && voterCount > 3 ? 0 : 50))
            }
        }
        let voters = (1...NodeID(voterCount)).map { $0 }
        let learners = (0..<learnerCount).map { NodeID(voterCount + 1 + $0) }
        let membership = Membership(voters: voters, learners: learners, priorities: priorities)
        nodes.append(SimulatedNode(id: noNode))
        for id in 1...NodeID(total) {
            let isFounder = Int(id) <= voterCount + learnerCount
            let node = SimulatedNode(id: id)
            node.disk = isFounder ? .bootstrap(membership) : .empty
            nodes.append(node)
        }
        for node in nodes.dropFirst() {
            start(node)
            schedule(after: 1 + UInt64(random.below(Int(Self.tickInterval))), .tick(node.id, incarnation: node.incarnation))
        }
        schedule(after: 5, .clientOperation)
        schedule(after: UInt64(profile.faultInterval), .fault)
    }

    /// Runs the simulation to the end and reports what it found.
    public static func run(_ options: SimulationOptions) -> SimulationReport {
        let simulation = Simulation(options: options)
        simulation.run()
        return simulation.report
    }

    func run() {
        do {
            while step < options.steps, let event = queue.popMin() {
                step += 1
                now = event.time
                try handle(event.event)
            }
            try healAndCheckLiveness()
        } catch let violation as Violation {
            report.violation = violation
            trace("VIOLATION \(violation)")
        } catch {
            report.violation = Violation(kind: .liveness, step: step, time: now, detail: "\(error)")
        }
        report.counts.steps = step
    }

    // MARK: - Events

    func schedule(after delay: UInt64, _ event: SimulationEvent) {
        sequence += 1
        queue.insert(ScheduledEvent(time: now + delay, sequence: sequence, event: event))
    }

    func handle(_ event: SimulationEvent) throws {
        switch event {
        case .tick(let id, let incarnation):
            let node = nodes[Int(id)]
            guard node.incarnation == incarnation, node.raft != nil else { return }
            let drift = UInt64(random.below(3))
            schedule(after: Self.tickInterval - 1 + drift, .tick(id, incarnation: incarnation))
            if node.pausedUntil > now { return }
            node.raft!.tick()
            try drain(node)
        case .deliver(let message):
            let node = nodes[Int(message.to)]
            guard node.raft != nil else {
                if case .snapshot = message.payload { try reportSnapshot(message, success: false) }
                return
            }
            if node.pausedUntil > now {
                sequence += 1
                queue.insert(ScheduledEvent(time: node.pausedUntil + 1, sequence: sequence, event: event))
                return
            }
            trace("deliver \(message)")
            node.raft!.step(message)
            try drain(node)
            if case .snapshot = message.payload { try reportSnapshot(message, success: true) }
        case .clientOperation:
            // Once healing starts only the liveness probe writes, so a backlog cannot hide it.
            guard !isHealing else { return }
            schedule(after: 1 + UInt64(random.below(8)), .clientOperation)
            try startClientOperation()
        case .fault:
            schedule(after: 1 + UInt64(random.below(profile.faultInterval * 2)), .fault)
            if !isHealing { try injectFault() }
        case .restart(let id):
            let node = nodes[Int(id)]
            guard node.raft == nil else { return }
            start(node)
            trace("restart node \(id)")
            schedule(after: 1, .tick(id, incarnation: node.incarnation))
        case .crash(let id, let incarnation):
            let node = nodes[Int(id)]
            guard node.incarnation == incarnation, node.raft != nil, !isHealing else { return }
            try crash(node)
            schedule(after: Self.tickInterval * UInt64(3 + random.below(30)), .restart(node.id))
        case .operationTimeout(let operationID):
            try timeOut(operationID)
        case .unreachable(let id, let peer):
            let node = nodes[Int(id)]
            guard node.raft != nil else { return }
            if node.pausedUntil > now {
                schedule(after: node.pausedUntil + 1 - now, event)
                return
            }
            trace("node \(id) reports \(peer) unreachable")
            node.raft!.reportUnreachable(peer)
            try drain(node)
        }
    }

    func reportSnapshot(_ message: Message, success: Bool) throws {
        let sender = nodes[Int(message.from)]
        guard sender.raft != nil else { return }
        sender.raft!.reportSnapshot(peer: message.to, success: success)
        try drain(sender)
    }

    func start(_ node: SimulatedNode) {
        var config = RaftConfig(id: node.id)
        config.electionTick = Self.electionTick
        config.heartbeatTick = profile.heartbeatTick
        config.maxInflightMessages = profile.maxInflightMessages
        config.maxEntriesPerAppend = profile.maxEntriesPerAppend
        config.readMode = profile.readMode
        config.randomSeed = options.seed &+ node.incarnation
        config.injectedBug = options.injectedBug
        config.quiesceWhenIdle = profile.quiescesWhenIdle
        node.incarnation += 1
        node.raft = try! RaftNode(config: config, recovered: node.disk.recoveredState)
        node.stateMachine = RegisterStateMachine(snapshot: node.disk.snapshot)
        node.lastCommit = node.raft!.commitIndex
        node.lastApplied = node.raft!.appliedIndex
    }

    func crash(_ node: SimulatedNode) throws {
        node.raft = nil
        node.pausedUntil = 0
        node.readStates = []
        for operation in node.pendingOperations.values {
            try checker.operationEnded(operation, outcome: .unknown, at: now, step: step)
        }
        node.pendingOperations = [:]
        trace("crash node \(node.id)")
        reportLostLinks(nodes.dropFirst().filter { $0.id != node.id }.map { ($0.id, node.id) })
    }

    // MARK: - Processing a node's output

    /// Hands every `Ready` of a node to the simulated disk, network and state machine.
    func drain(_ node: SimulatedNode) throws {
        var rounds = 0
        while node.raft != nil, let ready = node.raft!.ready() {
            rounds += 1
            if rounds > 1_000 {
                throw Violation(kind: .liveness, step: step, time: now, detail: "node \(node.id) produces Ready rounds without end")
            }
            for message in ready.messages { transmit(message) }
            if !isHealing, !ready.entries.isEmpty || ready.hardState != nil || ready.snapshot != nil,
               random.chance(profile.crashDuringPersistPercent, in: 1000) {
                trace("crash node \(node.id) before persisting")
                try crash(node)
                schedule(after: Self.tickInterval * UInt64(3 + random.below(20)), .restart(node.id))
                return
            }
            if let snapshot = ready.snapshot {
                node.disk.install(snapshot)
                node.stateMachine = RegisterStateMachine(snapshot: snapshot)
            }
            node.disk.append(ready.entries)
            if let hardState = ready.hardState { node.disk.hardState = hardState }
            try checker.persisted(ready.entries, by: node, at: now, step: step)
            for message in ready.messagesAfterPersist { transmit(message) }
            for entry in ready.committedEntries {
                try apply(entry, on: node)
            }
            node.readStates += ready.readStates
            for event in ready.events { try observe(event, on: node) }
            node.raft!.advance(ready)
            try serveReads(on: node)
            try checker.checkProgress(of: node, among: nodes, at: now, step: step)
        }
    }

    func observe(_ event: RaftEvent, on node: SimulatedNode) throws {
        if options.isTracing { trace("node \(node.id): \(event)") }
        switch event {
        case .roleChanged(.leader, let term):
            report.counts.elections += 1
            try checker.becameLeader(node, term: term, at: now, step: step)
            if !isHealing && random.chance(profile.isolateNewLeaderPercent, in: 100) {
                isolate(node)
            } else if !isHealing && random.chance(profile.crashNewLeaderPercent, in: 100) {
                schedule(after: 1 + UInt64(random.below(Int(Self.tickInterval) * 3)), .crash(node.id, incarnation: node.incarnation))
            }
        case .readsDropped(let contexts):
            for context in contexts {
                if let operation = node.pendingOperations.removeValue(forKey: context) {
                    try checker.operationEnded(operation, outcome: .failed, at: now, step: step)
                }
            }
        default:
            break
        }
    }

    func apply(_ entry: Entry, on node: SimulatedNode) throws {
        try checker.applied(entry, on: node, at: now, step: step)
        report.counts.commits = max(report.counts.commits, Int(entry.index))
        guard case .normal(let data) = entry.payload, let command = WriteCommand(data) else {
            try finishWrites(on: node, through: entry)
            return
        }
        node.stateMachine.apply(command, at: entry.index)
        try finishWrites(on: node, through: entry)
    }

    /// A proposal at index i succeeded if its own entry is applied there, and failed if another is.
    func finishWrites(on node: SimulatedNode, through entry: Entry) throws {
        for (id, operation) in node.pendingOperations.sorted(by: { $0.key < $1.key }) {
            guard case .write(_, _, let index) = operation.kind, index == entry.index else { continue }
            node.pendingOperations[id] = nil
            if case .normal(let data) = entry.payload, WriteCommand(data)?.operationID == operation.id {
                report.counts.writesAcknowledged += 1
                try checker.operationEnded(operation, outcome: .written(order: entry.index), at: now, step: step)
            } else {
                try checker.operationEnded(operation, outcome: .failed, at: now, step: step)
            }
        }
    }

    func serveReads(on node: SimulatedNode) throws {
        guard let raft = node.raft else { return }
        var waiting: [ReadState] = []
        for state in node.readStates {
            guard raft.appliedIndex >= state.index else {
                waiting.append(state)
                continue
            }
            guard let operation = node.pendingOperations.removeValue(forKey: state.context),
                  case .read(let key) = operation.kind else { continue }
            let observed = node.stateMachine.value(of: key)
            report.counts.readsChecked += 1
            try checker.operationEnded(operation, outcome: .read(order: observed.order), at: now, step: step)
        }
        node.readStates = waiting
    }

    // MARK: - Network

    func transmit(_ message: Message) {
        let from = Int(message.from), to = Int(message.to)
        guard to < nodes.count, !blocked[from][to] else { return dropped(message) }
        if !isHealing && random.chance(profile.dropPercent, in: 100) { return dropped(message) }
        var delay = 1 + UInt64(random.below(Int(profile.maxDelay)))
        if !isHealing && random.chance(profile.delaySpikePercent, in: 100) {
            delay += UInt64(random.below(Int(Self.tickInterval) * 6))
        }
        schedule(after: delay, .deliver(message))
        if !isHealing && random.chance(profile.duplicatePercent, in: 100) {
            schedule(after: delay + UInt64(random.below(Int(Self.tickInterval) * 2)), .deliver(message))
        }
    }

    func dropped(_ message: Message) {
        // The transport notices a failed snapshot stream and says so. The sender is draining right
        // now, so its loop picks up whatever this produces.
        if case .snapshot = message.payload, nodes[Int(message.from)].raft != nil {
            nodes[Int(message.from)].raft!.reportSnapshot(peer: message.to, success: false)
        }
    }

    func trace(_ line: @autoclosure () -> String) {
        guard options.isTracing else { return }
        report.trace.append("[\(step) t=\(now)] \(line())")
    }
}

/// Something the simulation does at a moment of virtual time.
enum SimulationEvent: Sendable {
    case tick(NodeID, incarnation: UInt64)
    case deliver(Message)
    case clientOperation
    case fault
    case restart(NodeID)
    case crash(NodeID, incarnation: UInt64)
    case operationTimeout(UInt64)
    /// The transport tells a node that it lost its link to `peer`.
    case unreachable(NodeID, peer: NodeID)
}

/// An event with its time; ties break by insertion order so runs are deterministic.
struct ScheduledEvent: Comparable, Sendable {
    var time: UInt64
    var sequence: UInt64
    var event: SimulationEvent

    static func < (lhs: Self, rhs: Self) -> Bool { (lhs.time, lhs.sequence) < (rhs.time, rhs.sequence) }
    static func == (lhs: Self, rhs: Self) -> Bool { (lhs.time, lhs.sequence) == (rhs.time, rhs.sequence) }
}
