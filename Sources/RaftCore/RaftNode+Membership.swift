extension RaftNode {
    /// Proposes a membership change. A change of at most one voter applies directly; a larger one
    /// goes through joint consensus, which the leader leaves by itself once the joint configuration
    /// is applied. Only one change may be pending at a time.
    @discardableResult
    public mutating func proposeConfigurationChange(_ change: ConfigurationChange) throws(ProposalError) -> UInt64 {
        guard case .leader(let state) = role else { throw .notLeader(leaderHint: leader == noNode ? nil : leader) }
        if state.pendingConfigurationIndex > log.applied {
            throw .configurationChangePending(index: state.pendingConfigurationIndex)
        }
        if let problem = Self.problem(with: change, in: membership) { throw .invalidConfigurationChange(problem) }
        let index = try proposeEntry(.configuration(change))
        leading { _, state in state.pendingConfigurationIndex = index }
        return index
    }

    /// Why `change` cannot apply to `membership`, or nil when it can.
    static func problem(with change: ConfigurationChange, in membership: Membership) -> String? {
        if change.isLeaveJoint {
            return membership.isJoint ? nil : "not in a joint configuration"
        }
        if membership.isJoint { return "the joint configuration must be left first" }
        let nodes = change.steps.map(\.node)
        if Set(nodes).count != nodes.count { return "a node appears twice" }
        if nodes.contains(noNode) { return "node id 0 is reserved" }
        for step in change.steps {
            if case .remove(let node) = step, !membership.contains(node) { return "node \(node) is not a member" }
        }
        if applying(change, to: membership).voters.isEmpty { return "no voter would remain" }
        return nil
    }

    /// The membership after `change`.
    static func applying(_ change: ConfigurationChange, to membership: Membership) -> Membership {
        var result = membership
        if change.isLeaveJoint {
            result.outgoingVoters = []
            result.learners = Array(Set(result.learners).union(result.learnersNext)).sorted()
            result.learnersNext = []
            return result
        }
        var voters = Set(membership.voters)
        var learners = Set(membership.learners)
        for step in change.steps {
            switch step {
            case .addVoter(let node, let priority):
                voters.insert(node)
                learners.remove(node)
                result.priorities[node] = priority
            case .addLearner(let node, let priority):
                voters.remove(node)
                learners.insert(node)
                result.priorities[node] = priority
            case .remove(let node):
                voters.remove(node)
                learners.remove(node)
                result.priorities[node] = nil
            }
        }
        let changedVoters = voters.symmetricDifference(membership.voters).count
        if membership.voters.isEmpty || changedVoters <= 1 {
            result.voters = voters.sorted()
            result.learners = learners.sorted()
        } else {
            // Joint consensus (Raft thesis §4.3): both the old and the new voters must agree.
            // A voter demoted to learner keeps voting in the old half until the joint state is left.
            result.outgoingVoters = membership.voters
            result.voters = voters.sorted()
            let demoted = learners.intersection(membership.voters)
            result.learnersNext = demoted.sorted()
            result.learners = learners.subtracting(demoted).sorted()
        }
        return result
    }

    /// Applies a committed membership change; called as the entry is applied.
    mutating func applyConfigurationChange(_ change: ConfigurationChange, at index: UInt64) {
        guard Self.problem(with: change, in: membership) == nil || membership.voters.isEmpty else {
            // The leader validated this change against the same membership, so this cannot happen
            // in a correct cluster; report rather than guess.
            events.append(.messageDropped(from: noNode, .malformed))
            return
        }
        membership = Self.applying(change, to: membership)
        events.append(.membershipChanged(membership, index: index))
        targetPriority = membership.maximumVoterPriority
        electionTimeoutsBelowTarget = 0
        var mustStepDown = false
        leading { node, state in
            for peer in node.membership.allNodes where state.progress[peer] == nil {
                var progress = Progress(next: node.log.lastIndex + 1)
                progress.isRecentlyActive = true
                state.progress[peer] = progress
                node.events.append(.replicator(peer: peer, .created))
            }
            for peer in state.progress.keys.sorted() where !node.membership.contains(peer) && peer != node.id {
                state.progress[peer] = nil
                node.events.append(.replicator(peer: peer, .destroyed))
                if state.transferTarget == peer {
                    state.transferTarget = nil
                    node.events.append(.leadershipTransferAborted(to: peer))
                }
            }
            if !node.membership.isVoter(node.id) {
                mustStepDown = true
                return
            }
            if node.maybeCommit(&state) { node.broadcastAppend(&state, sendIfEmpty: true) }
        }
        if mustStepDown { becomeFollower(term: term, leader: noNode) }
    }

    /// A leader in a joint configuration proposes to leave it as soon as the joint entry is applied.
    mutating func maybeLeaveJoint() {
        guard case .leader(let state) = role, membership.isJoint,
              state.pendingConfigurationIndex <= log.applied, state.transferTarget == nil else { return }
        if let index = try? proposeEntry(.configuration(.leaveJoint)) {
            leading { _, state in state.pendingConfigurationIndex = index }
        }
    }
}
