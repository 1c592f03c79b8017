import RaftCore

extension Simulation {
    var liveNodes: [SimulatedNode] { nodes.dropFirst().filter { $0.raft != nil } }

    /// The live node that believes it leads the newest term, if any.
    var currentLeader: SimulatedNode? {
        liveNodes.filter { $0.raft!.isLeader }.max { $0.raft!.term < $1.raft!.term }
    }

    // MARK: - Clients

    func startClientOperation() throws {
        let key = Self.keys[random.below(Self.keys.count)]
        let id = nextOperationID
        nextOperationID += 1
        if random.chance(1, in: 2) {
            // Writes go to the leader most of the time, as a client that follows leader hints would.
            let target = random.chance(4, in: 5) ? currentLeader : nodes[1 + random.below(nodes.count - 1)]
            guard let node = target, node.raft != nil, node.pausedUntil <= now else { return }
            guard let index = try? node.raft!.propose(WriteCommand(key: key, operationID: id).encoded) else { return }
            node.pendingOperations[id] = ClientOperation(
                id: id, kind: .write(key: key, node: node.id, index: index), started: now, floor: 0)
            schedule(after: Self.tickInterval * 60, .operationTimeout(id))
            trace("client write \(id) key \(key) proposed at node \(node.id) index \(index)")
            try drain(node)
        } else {
            // Reads go to any node, followers and learners included.
            let node = nodes[1 + random.below(nodes.count - 1)]
            guard node.raft != nil, node.pausedUntil <= now else { return }
            guard (try? node.raft!.readIndex(context: id)) != nil else { return }
            node.pendingOperations[id] = ClientOperation(id: id, kind: .read(key: key), started: now, floor: checker.floor(for: key))
            schedule(after: Self.tickInterval * 30, .operationTimeout(id))
            trace("client read \(id) key \(key) at node \(node.id)")
            try drain(node)
        }
    }

    func timeOut(_ operationID: UInt64) throws {
        for node in nodes {
            guard let operation = node.pendingOperations.removeValue(forKey: operationID) else { continue }
            try checker.operationEnded(operation, outcome: .unknown, at: now, step: step)
            trace("client operation \(operationID) timed out at node \(node.id)")
        }
    }

    // MARK: - Faults

    func injectFault() throws {
        report.counts.faults += 1
        let all = Array(nodes.dropFirst())
        switch random.below(11) {
        case 0:
            guard let node = pickVictim() else { return }
            isolate(node)
        case 1:
            let from = all[random.below(all.count)], to = all[random.below(all.count)]
            blocked[Int(from.id)][Int(to.id)] = true
            trace("one-way partition: \(from.id) ↛ \(to.id)")
            reportLostLinks([(from.id, to.id), (to.id, from.id)])
        case 2:
            let side = all.filter { _ in random.chance(1, in: 2) }.map(\.id)
            var lost: [(NodeID, NodeID)] = []
            for a in all {
                for b in all where side.contains(a.id) != side.contains(b.id) {
                    blocked[Int(a.id)][Int(b.id)] = true
                    lost.append((a.id, b.id))
                }
            }
            trace("partition: \(side) | rest")
            reportLostLinks(lost)
        case 3, 4:
            healPartitions()
        case 5:
            guard let node = pickVictim() else { return }
            try crash(node)
            schedule(after: Self.tickInterval * UInt64(3 + random.below(30)), .restart(node.id))
        case 6:
            guard let node = pickVictim() else { return }
            node.pausedUntil = now + Self.tickInterval * UInt64(1 + random.below(40))
            trace("pause node \(node.id) until \(node.pausedUntil)")
        case 7, 8:
            try changeMembership()
        case 9:
            guard let leader = currentLeader else { return }
            let voters = leader.raft!.membership.voters.filter { $0 != leader.id }
            guard let target = voters.randomElement(using: &random) else { return }
            trace("transfer leadership \(leader.id) → \(target)")
            try? leader.raft!.transferLeadership(to: target)
            try drain(leader)
        default:
            try takeSnapshot()
        }
    }

    /// Faults hit the leader half of the time: that is where Raft's hard cases live.
    func pickVictim() -> SimulatedNode? {
        if random.chance(1, in: 2), let leader = currentLeader { return leader }
        return liveNodes.randomElement(using: &random)
    }

    func isolate(_ node: SimulatedNode) {
        for other in nodes.dropFirst() where other.id != node.id {
            blocked[Int(node.id)][Int(other.id)] = true
            blocked[Int(other.id)][Int(node.id)] = true
        }
        trace("partition: node \(node.id) isolated")
        reportLostLinks(nodes.dropFirst().filter { $0.id != node.id }.flatMap { [($0.id, node.id), (node.id, $0.id)] })
    }

    /// With quiescence on, each `(node, peer)` link's loss reaches `node` as "peer unreachable" a
    /// few ticks later: at once for a crash (the socket closes), within an election timeout for a
    /// silent partition (the transport's keepalive). Without quiescence nothing changes, so those
    /// seeds replay as before.
    func reportLostLinks(_ links: [(node: NodeID, peer: NodeID)]) {
        guard profile.quiescesWhenIdle else { return }
        for link in links {
            schedule(after: Self.tickInterval * 3, .unreachable(link.node, peer: link.peer))
        }
    }

    /// True when the most up-to-date log belongs to voters that may never lead.
    var isPriorityZeroStalemate: Bool {
        func position(_ node: SimulatedNode) -> (UInt64, UInt64) {
            (node.raft!.term(at: node.raft!.lastIndex) ?? 0, node.raft!.lastIndex)
        }
        let voters = liveNodes.filter { $0.raft!.isPromotable }
        guard let newest = voters.map(position).max(by: <) else { return false }
        return voters.filter { position($0) == newest }
            .allSatisfy { $0.raft!.membership.priority(of: $0.id).isNeverLeader }
    }

    func healPartitions() {
        for i in blocked.indices {
            for j in blocked[i].indices { blocked[i][j] = false }
        }
        trace("heal partitions")
    }

    func changeMembership() throws {
        guard let leader = currentLeader else { return }
        let membership = leader.raft!.membership
        guard !membership.isJoint else { return }
        let priority = profile.usesPriorities ? ElectionPriority(50) : .disabled
        let outsiders = nodes.dropFirst().map(\.id).filter { !membership.contains($0) }
        var options: [ConfigurationChange] = []
        if let node = outsiders.randomElement(using: &random) { options.append(.init([.addLearner(node)])) }
        if let node = membership.learners.randomElement(using: &random) {
            options.append(.init([.addVoter(node, priority: priority)]))
            if let voter = membership.voters.randomElement(using: &random) {
                options.append(.init([.addVoter(node, priority: priority), .remove(voter)]))
            }
        }
        if membership.voters.count > 3, let voter = membership.voters.randomElement(using: &random) {
            options.append(.init([.remove(voter)]))
            options.append(.init([.addLearner(voter)]))
        }
        if membership.voters.count > 3, membership.learners.count >= 2 {
            let pair = membership.voters.shuffled(using: &random).prefix(2)
            options.append(.init(pair.map { .remove($0) } + membership.learners.prefix(2).map { .addVoter($0, priority: priority) }))
        }
        guard let change = options.randomElement(using: &random) else { return }
        trace("membership change \(change.steps) proposed at leader \(leader.id)")
        _ = try? leader.raft!.proposeConfigurationChange(change)
        try drain(leader)
    }

    func takeSnapshot() throws {
        guard let node = liveNodes.randomElement(using: &random), let raft = node.raft,
              raft.appliedIndex >= raft.firstIndex + 2 else { return }
        let snapshot = Snapshot(metadata: raft.snapshotMetadata, data: node.stateMachine.snapshotData)
        if node.raft!.compact(snapshot) {
            node.disk.compact(snapshot)
            trace("node \(node.id) snapshot at \(snapshot.metadata.index)")
        }
    }

    // MARK: - Liveness

    /// Heals every fault, then demands that a leader appears and a new write commits in bounded time.
    func healAndCheckLiveness() throws {
        isHealing = true
        healPartitions()
        for node in nodes.dropFirst() {
            node.pausedUntil = 0
            if node.raft == nil {
                start(node)
                schedule(after: 1, .tick(node.id, incarnation: node.incarnation))
            }
        }
        let deadline = now + Self.tickInterval * 400
        var probe: (id: UInt64, proposed: UInt64)?
        while let event = queue.popMin() {
            guard event.time <= deadline else { break }
            now = event.time
            step += 1
            try handle(event.event)
            if let probe, checker.isAcknowledged(probe.id) { return }
            // A probe proposed to a leader that was then deposed (or removed) may never resolve: retry.
            let isStale = probe.map { now - $0.proposed > Self.tickInterval * UInt64(Self.electionTick) * 3 } ?? true
            guard isStale, let leader = currentLeader else { continue }
            let id = nextOperationID
            nextOperationID += 1
            guard let index = try? leader.raft!.propose(WriteCommand(key: Self.keys[0], operationID: id).encoded) else { continue }
            leader.pendingOperations[id] = ClientOperation(
                id: id, kind: .write(key: Self.keys[0], node: leader.id, index: index), started: now, floor: 0)
            probe = (id, now)
            try drain(leader)
        }
        if isPriorityZeroStalemate {
            // Documented limitation shared with SOFAJRaft: when only a priority-0 voter holds the
            // newest log, no node may both win its vote and lead. Not a Raft safety matter.
            trace("liveness waived: only a priority-0 voter holds the newest log")
            return
        }
        let roles = liveNodes.map { "\($0.id):\($0.raft!.currentRole.rawValue)/t\($0.raft!.term)" }.joined(separator: " ")
        throw Violation(kind: .liveness, step: step, time: now, detail:
            "no write committed within 400 ticks after healing every fault; nodes: \(roles)")
    }
}
