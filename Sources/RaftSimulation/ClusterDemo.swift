import RaftCore

/// A scripted story on a 3-node cluster in one process, on virtual time: an election, commits,
/// a linearizable read on a follower, the leader killed, a new election, more commits, and the old
/// leader restarting from its disk and catching up. Each step is checked, not only printed.
public final class ClusterDemo {
    /// Virtual milliseconds per tick: with 10 ticks per election timeout this is SOFAJRaft's 1,000 ms.
    static let tickMilliseconds: UInt64 = 100

    var nodes: [SimulatedNode] = []
    var inFlight: [Message] = []
    var now: UInt64 = 0
    var applied: [NodeID: [Entry]] = [:]
    var readResults: [UInt64: UInt64] = [:]
    let output: (String) -> Void

    public init(seed: UInt64, output: @escaping (String) -> Void) {
        self.output = output
        let membership = Membership(voters: [1, 2, 3])
        nodes.append(SimulatedNode(id: noNode))
        for id in NodeID(1)...3 {
            let node = SimulatedNode(id: id)
            node.disk = .bootstrap(membership)
            nodes.append(node)
            start(node, seed: seed)
        }
    }

    /// Plays the story; true when every step did what it should.
    public func run() -> Bool {
        say("3 nodes, election timeout 1000 ms, heartbeat 100 ms (virtual time)")
        guard let first = waitForLeader(within: 50) else { return fail("no leader elected") }
        say("node \(first.id) is leader of term \(first.raft!.term)")

        guard commitWrites(["x=1", "x=2", "x=3"], expectApplied: 3) else { return fail("writes did not commit") }
        let follower = nodes.dropFirst().first { $0.id != first.id }!
        guard linearizableRead(on: follower) else { return fail("follower read failed") }

        say("killing node \(first.id), the leader")
        first.raft = nil
        let killedAt = now
        guard let second = waitForLeader(within: 80) else { return fail("no new leader after the kill") }
        say("node \(second.id) is leader of term \(second.raft!.term), \((now - killedAt) * Self.tickMilliseconds) ms after the kill")
        guard commitWrites(["x=4", "x=5"], expectApplied: 2) else { return fail("writes after re-election did not commit") }

        say("restarting node \(first.id) from its disk: term \(first.disk.hardState.term), \(first.disk.entries.count) entries")
        start(first, seed: 99)
        let target = second.raft!.commitIndex
        run(ticks: 30) { first.raft!.appliedIndex >= target }
        guard first.raft!.appliedIndex >= target else { return fail("node \(first.id) did not catch up") }
        say("node \(first.id) caught up: applied index \(first.raft!.appliedIndex), following node \(first.raft!.leader)")

        let logs = nodes.dropFirst().map { applied[$0.id, default: []].filter { $0.index <= target } }
        guard logs.allSatisfy({ $0 == logs[0] }) else {
            return fail("nodes applied different entries")
        }
        for node in nodes.dropFirst() {
            let status = node.raft!.status
            say("node \(node.id): \(status.role.rawValue), term \(status.term), commit \(status.commit), applied \(status.applied)")
        }
        say("every node applied the same \(target) entries; no acknowledged write was lost")
        return true
    }

    // MARK: - Steps of the story

    func commitWrites(_ commands: [String], expectApplied count: Int) -> Bool {
        guard let leader = nodes.first(where: { $0.raft?.isLeader == true }) else { return false }
        var indexes: [UInt64] = []
        for command in commands {
            guard let index = try? leader.raft!.propose(Array(command.utf8)) else { return false }
            indexes.append(index)
        }
        drain(leader)
        let last = indexes.last!
        let live = nodes.dropFirst().filter { $0.raft != nil }
        run(ticks: 20) { live.allSatisfy { $0.raft!.appliedIndex >= last } }
        guard live.allSatisfy({ $0.raft!.appliedIndex >= last }) else { return false }
        for (command, index) in zip(commands, indexes) {
            say("committed '\(command)' at index \(index) on \(live.count) of 3 nodes")
        }
        return true
    }

    func linearizableRead(on node: SimulatedNode) -> Bool {
        let context: UInt64 = 7
        guard (try? node.raft!.readIndex(context: context)) != nil else { return false }
        drain(node)
        run(ticks: 10) { self.readResults[context] != nil }
        guard let index = readResults[context] else { return false }
        let value = applied[node.id, default: []].last { if case .normal = $0.payload { true } else { false } }
        let text = value.flatMap { if case .normal(let data) = $0.payload { String(decoding: data, as: UTF8.self) } else { nil } }
        say("linearizable read on follower \(node.id): read index \(index), value '\(text ?? "")'")
        return true
    }

    func waitForLeader(within ticks: Int) -> SimulatedNode? {
        run(ticks: ticks) { self.nodes.contains { $0.raft?.isLeader == true } }
        return nodes.first { $0.raft?.isLeader == true }
    }

    // MARK: - Machinery

    func start(_ node: SimulatedNode, seed: UInt64) {
        var config = RaftConfig(id: node.id)
        config.randomSeed = seed
        node.incarnation += 1
        node.raft = try! RaftNode(config: config, recovered: node.disk.recoveredState)
        applied[node.id] = []
        drain(node)
    }

    /// Advances virtual time tick by tick, delivering messages, until `done` holds or time runs out.
    func run(ticks: Int, until done: () -> Bool) {
        for _ in 0..<ticks {
            if done() { return }
            now += 1
            for node in nodes.dropFirst() where node.raft != nil {
                node.raft!.tick()
                drain(node)
            }
            deliverDue()
        }
    }

    func deliverDue() {
        // Loopback-like latency: every message arrives within the tick it was sent in.
        while !inFlight.isEmpty {
            let batch = inFlight
            inFlight = []
            for message in batch {
                let node = nodes[Int(message.to)]
                guard node.raft != nil else { continue }
                node.raft!.step(message)
                drain(node)
            }
        }
    }

    func drain(_ node: SimulatedNode) {
        while node.raft != nil, let ready = node.raft!.ready() {
            inFlight += ready.messages
            if let snapshot = ready.snapshot { node.disk.install(snapshot) }
            node.disk.append(ready.entries)
            if let hardState = ready.hardState { node.disk.hardState = hardState }
            inFlight += ready.messagesAfterPersist
            applied[node.id, default: []] += ready.committedEntries
            for state in ready.readStates { readResults[state.context] = state.index }
            for event in ready.events {
                if case .roleChanged(let role, let term) = event, role == .candidate {
                    say("node \(node.id) campaigns for term \(term)")
                }
            }
            node.raft!.advance(ready)
        }
    }

    func say(_ line: String) {
        let millis = now * Self.tickMilliseconds
        output("[\(millis / 1000).\(String(millis % 1000 + 1000).dropFirst()) s] \(line)")
    }

    func fail(_ reason: String) -> Bool {
        say("FAILED: \(reason)")
        return false
    }
}
