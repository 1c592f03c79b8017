extension RaftNode {
    enum CampaignKind { case preElection, election, transfer }

    mutating func tickElection() {
        electionElapsed += 1
        ticksSinceLeaderContact += 1
        if ticksSinceLeaderContact >= config.electionTick && leader != noNode && role.kind == .follower {
            // A leader silent for an election timeout is gone as far as clients are concerned:
            // reads fail fast with "no leader" instead of waiting on it.
            setLeader(noNode)
        }
        if isPromotable && electionElapsed >= randomizedElectionTimeout {
            electionElapsed = 0
            hup(isTransfer: false)
        }
    }

    /// Starts a campaign if this node may: it is a voter, has applied every membership change it
    /// knows of, and (with priorities) its priority reaches the target priority.
    mutating func hup(isTransfer: Bool) {
        if case .leader = role { return }
        guard isPromotable, !hasUnappliedConfigurationChanges else { return }
        if isTransfer {
            guard !membership.priority(of: id).isNeverLeader else { return }
            campaign(.transfer)
            return
        }
        guard allowsCampaign() else { return }
        campaign(config.preVote ? .preElection : .election)
    }

    var hasUnappliedConfigurationChanges: Bool {
        var index = log.applied + 1
        while index <= log.committed {
            if case .configuration = log.entry(at: index)?.payload { return true }
            index += 1
        }
        return false
    }

    /// SOFAJRaft 1.3's `allowLaunchElection`: a node below the target priority waits, and after two
    /// election timeouts without a leader lowers the target by `max(gap, target / 5)`.
    mutating func allowsCampaign() -> Bool {
        let own = membership.priority(of: id)
        if own.isNeverLeader { return false }
        if own.isDisabled { return true }
        if own < targetPriority {
            electionTimeoutsBelowTarget += 1
            if electionTimeoutsBelowTarget > 1 {
                let gap = max(max(config.decayPriorityGap, 10), targetPriority.value / 5)
                targetPriority = ElectionPriority(max(1, targetPriority.value - gap))
                electionTimeoutsBelowTarget = 0
                events.append(.targetPriorityDecayed(to: targetPriority))
            }
            if electionTimeoutsBelowTarget == 1 { return false }
        }
        return own >= targetPriority
    }

    mutating func campaign(_ kind: CampaignKind) {
        let voteTerm: UInt64
        switch kind {
        case .preElection:
            becomePreCandidate()
            voteTerm = term + 1
        case .election, .transfer:
            becomeCandidate()
            voteTerm = term
        }
        let isPreVote = kind == .preElection
        if recordVote(from: id, granted: true, isPreVote: isPreVote) { return }
        let request = Message.VoteRequest(
            isPreVote: isPreVote, lastIndex: log.lastIndex, lastTerm: log.lastTerm, isTransfer: kind == .transfer)
        for voter in Set(membership.voters).union(membership.outgoingVoters).sorted() where voter != id {
            send(Message(from: id, to: voter, term: voteTerm, payload: .voteRequest(request)), afterPersist: true)
        }
    }

    /// Records a vote and acts on the tally; true when the campaign ended.
    mutating func recordVote(from voter: NodeID, granted: Bool, isPreVote: Bool) -> Bool {
        var votes: [NodeID: Bool]
        switch role {
        case .preCandidate(let v) where isPreVote: votes = v
        case .candidate(let v) where !isPreVote: votes = v
        default: return false
        }
        if config.injectedBug == .countVoteTwice, granted, voter == id,
           let other = Set(membership.voters).union(membership.outgoingVoters).sorted().first(where: { votes[$0] == nil }) {
            votes[other] = true
        }
        if votes[voter] == nil { votes[voter] = granted }
        role = isPreVote ? .preCandidate(votes: votes) : .candidate(votes: votes)
        switch Quorum.voteResult(membership, votes) {
        case .won:
            if isPreVote { campaign(.election) } else { becomeLeader() }
            return true
        case .lost:
            becomeFollower(term: term, leader: noNode)
            return true
        case .pending:
            return false
        }
    }

    // MARK: - Role changes

    mutating func reset(term newTerm: UInt64) {
        if term != newTerm {
            term = newTerm
            vote = noNode
        }
        electionElapsed = 0
        heartbeatElapsed = 0
        ticksSinceLeaderContact = 0
        isQuiesced = false
        isLeaderUnreachable = false
        resetRandomizedElectionTimeout()
    }

    mutating func setLeader(_ newLeader: NodeID) {
        guard leader != newLeader else { return }
        leader = newLeader
        events.append(.leaderChanged(newLeader == noNode ? nil : newLeader, term: term))
        if newLeader != noNode {
            targetPriority = membership.maximumVoterPriority
            electionTimeoutsBelowTarget = 0
        }
    }

    mutating func becomeFollower(term newTerm: UInt64, leader newLeader: NodeID) {
        let previous = role.kind
        if case .leader(let state) = role { stepDownAsLeader(state) }
        if case .leaderCheckedOut = role { stepDownAsLeader(nil) }
        reset(term: newTerm)
        role = .follower
        setLeader(newLeader)
        if previous != .follower { events.append(.roleChanged(.follower, term: term)) }
    }

    /// Tells the listeners and local readers that this node no longer leads.
    private mutating func stepDownAsLeader(_ state: LeaderState?) {
        if let state {
            let local = (state.readsAwaitingTermCommit + state.queuedReads + (state.activeReadRound?.reads ?? []))
                .filter { $0.requester == id }.map(\.context)
            if !local.isEmpty { events.append(.readsDropped(contexts: local)) }
            if let target = state.transferTarget, target != leader {
                events.append(.leadershipTransferAborted(to: target))
            }
        }
        for peer in membership.allNodes where peer != id {
            events.append(.replicator(peer: peer, .destroyed))
        }
    }

    mutating func becomePreCandidate() {
        // Pre-vote changes neither term nor vote, so a partitioned node never inflates terms.
        role = .preCandidate(votes: [:])
        isQuiesced = false
        setLeader(noNode)
        events.append(.roleChanged(.preCandidate, term: term))
    }

    mutating func becomeCandidate() {
        reset(term: term + 1)
        vote = id
        role = .candidate(votes: [:])
        setLeader(noNode)
        events.append(.roleChanged(.candidate, term: term))
    }

    mutating func becomeLeader() {
        reset(term: term)
        var progress: [NodeID: Progress] = [:]
        for peer in membership.allNodes {
            progress[peer] = Progress(next: log.lastIndex + 1)
        }
        progress[id, default: Progress(next: log.lastIndex + 1)].match = log.stableIndex
        progress[id]?.state = .replicate
        role = .leader(LeaderState(progress: progress, pendingConfigurationIndex: log.lastIndex))
        setLeader(id)
        events.append(.roleChanged(.leader, term: term))
        for peer in membership.allNodes where peer != id {
            events.append(.replicator(peer: peer, .created))
        }
        // Raft §5.4.2: entries of earlier terms commit only under an entry of the leader's own term.
        log.append([Entry(term: term, index: log.lastIndex + 1, payload: .empty)])
        leading { _, state in state.hasUnsentProposals = true }
    }

    // MARK: - Votes

    mutating func handleVoteRequest(_ message: Message, _ request: Message.VoteRequest) {
        let canVote = vote == message.from
            || (vote == noNode && leader == noNode)
            || (request.isPreVote && message.term > term)
        if canVote && log.isUpToDate(lastIndex: request.lastIndex, lastTerm: request.lastTerm) {
            // A granted pre-vote carries the term the candidate asked for, so it is not taken as stale.
            reply(to: message, term: request.isPreVote ? message.term : term,
                  .voteResponse(isPreVote: request.isPreVote, granted: true))
            if !request.isPreVote {
                electionElapsed = 0
                vote = message.from
            }
        } else {
            reply(to: message, .voteResponse(isPreVote: request.isPreVote, granted: false))
        }
    }

    /// Leader stickiness (Raft thesis §4.2.3): a node that heard from a live leader within the
    /// election timeout ignores votes, unless a leader transfer asked for them.
    var isInLeaderLease: Bool {
        config.checkQuorum && leader != noNode && ticksSinceLeaderContact < config.electionTick
    }
}
