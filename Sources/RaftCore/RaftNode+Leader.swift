extension RaftNode {
    mutating func tickLeader() {
        leading { _, state in state.leaderTicks += 1 }
        heartbeatElapsed += 1
        electionElapsed += 1
        var hasLostQuorum = false
        if electionElapsed >= config.electionTick {
            electionElapsed = 0
            leading { node, state in
                hasLostQuorum = !node.checkQuorumRound(&state) && node.config.checkQuorum
                if let target = state.transferTarget {
                    state.transferTarget = nil
                    node.events.append(.leadershipTransferAborted(to: target))
                }
            }
        }
        if hasLostQuorum {
            becomeFollower(term: term, leader: noNode)
            return
        }
        if heartbeatElapsed >= config.heartbeatTick {
            heartbeatElapsed = 0
            leading { node, state in
                node.maybeTransferToHigherPriority(&state)
                if !node.maybeQuiesce(&state) { node.broadcastHeartbeat(&state) }
            }
        }
    }

    /// Marks followers that stayed silent for an election timeout offline, and tells whether a
    /// quorum was heard from.
    mutating func checkQuorumRound(_ state: inout LeaderState) -> Bool {
        var active: Set<NodeID> = [id]
        for peer in state.progress.keys.sorted() where peer != id {
            if state.progress[peer]!.isRecentlyActive {
                active.insert(peer)
            } else if state.progress[peer]!.isOnline {
                state.progress[peer]!.isOnline = false
                events.append(.replicator(peer: peer, .offline))
            }
            state.progress[peer]!.isRecentlyActive = false
        }
        return Quorum.hasQuorum(membership) { active.contains($0) }
    }

    mutating func stepLeader(_ message: Message) {
        guard case .leader = role else { return }
        if case .readIndexRequest(let context) = message.payload {
            guard membership.contains(message.from) else {
                events.append(.messageDropped(from: message.from, .unknownSender))
                return
            }
            leading { node, state in
                node.handleLeaderRead(PendingRead(context: context, requester: message.from), &state)
            }
            return
        }
        leading { node, state in
            guard state.progress[message.from] != nil else {
                node.events.append(.messageDropped(from: message.from, .unknownSender))
                return
            }
            switch message.payload {
            case .appendResponse(let response):
                node.markActive(message.from, &state)
                node.handleAppendResponse(from: message.from, response, &state)
            case .heartbeatResponse(let round):
                node.markActive(message.from, &state)
                node.handleHeartbeatResponse(from: message.from, round: round, &state)
            case .append, .heartbeat, .snapshot, .quiesce:
                // Two leaders in one term would break Raft; never act on it, only report it.
                node.events.append(.messageDropped(from: message.from, .unexpectedForRole))
            case .voteResponse:
                break  // a late answer from the election this node already won
            case .proposal(let id, let data):
                // Same checks as a local proposal; one that fails is dropped, as etcd drops MsgProp,
                // and the sender is told so that it can retry at once instead of waiting in doubt.
                guard node.membership.contains(message.from), data.count <= node.config.maxProposalBytes,
                      state.transferTarget == nil else {
                    node.reply(to: message, .proposalDropped(id: id))
                    return
                }
                let index = node.log.lastIndex + 1
                node.log.append([Entry(term: node.term, index: index, payload: .normal(data))])
                state.hasUnsentProposals = true
            case .timeoutNow, .readIndexResponse, .readIndexRequest, .voteRequest, .proposalDropped, .snapshotChunkRequest, .snapshotChunk:
                node.events.append(.messageDropped(from: message.from, .unexpectedForRole))
            }
        }
    }

    /// Goes quiet when nothing is in flight and every follower holds the whole log, committed and
    /// applied here: then heartbeats would only say what everyone knows. True when it did.
    mutating func maybeQuiesce(_ state: inout LeaderState) -> Bool {
        guard config.quiesceWhenIdle, log.committed == log.lastIndex, log.applied == log.committed,
              log.term(at: log.committed) == term, !membership.isJoint, state.transferTarget == nil,
              !state.hasUnsentProposals, !state.needsReadRound, state.activeReadRound == nil,
              state.queuedReads.isEmpty, state.readsAwaitingTermCommit.isEmpty,
              state.progress.values.allSatisfy({
                  $0.match == log.lastIndex && $0.state == .replicate && $0.inflight.isEmpty && $0.isOnline
              })
        else { return false }
        for peer in state.progress.keys.sorted() where peer != id {
            send(Message(from: id, to: peer, term: term, payload: .quiesce(commit: log.committed)), afterPersist: false)
        }
        isQuiesced = true
        return true
    }

    mutating func markActive(_ peer: NodeID, _ state: inout LeaderState) {
        state.progress[peer]!.isRecentlyActive = true
        if !state.progress[peer]!.isOnline {
            state.progress[peer]!.isOnline = true
            events.append(.replicator(peer: peer, .online))
        }
    }

    mutating func handleAppendResponse(from peer: NodeID, _ response: Message.AppendResponse, _ state: inout LeaderState) {
        if response.isRejected {
            if response.index == 0 && response.hintIndex == 0 && response.hintTerm == 0 { return }
            var hint = min(response.hintIndex, log.lastIndex)
            if response.hintTerm > 0 {
                hint = log.largestIndex(atOrBelow: response.hintIndex, withTermAtMost: response.hintTerm)
            }
            let wasReplicating = state.progress[peer]!.state == .replicate
            if state.progress[peer]!.maybeDecrease(rejected: response.index, hint: hint) {
                if wasReplicating {
                    state.progress[peer]!.becomeProbe()
                    events.append(.replicator(peer: peer, .stateChanged(.probe)))
                }
                sendAppend(to: peer, &state)
            }
            return
        }
        guard response.index <= log.lastIndex else {
            events.append(.messageDropped(from: peer, .indexOutOfRange))
            return
        }
        let wasPaused = state.progress[peer]!.isPaused(window: config.maxInflightMessages)
        guard state.progress[peer]!.maybeUpdate(response.index) else {
            if wasPaused { sendAppend(to: peer, &state) }
            return
        }
        switch state.progress[peer]!.state {
        case .probe:
            state.progress[peer]!.becomeReplicate()
            events.append(.replicator(peer: peer, .stateChanged(.replicate)))
        case .snapshot(let index) where state.progress[peer]!.match >= index:
            state.progress[peer]!.becomeProbe()
            events.append(.replicator(peer: peer, .stateChanged(.probe)))
        case .snapshot, .replicate:
            break
        }
        if maybeCommit(&state) {
            broadcastAppend(&state, sendIfEmpty: true)
        } else {
            while sendAppend(to: peer, &state, sendIfEmpty: false) {}
        }
        if state.transferTarget == peer && state.progress[peer]!.match == log.lastIndex {
            send(Message(from: id, to: peer, term: term, payload: .timeoutNow), afterPersist: false)
        }
    }

    mutating func handleHeartbeatResponse(from peer: NodeID, round: UInt64, _ state: inout LeaderState) {
        state.progress[peer]!.isProbeSent = false
        // A full window whose appends were lost would stall forever; free one slot so the next append
        // goes out and either succeeds or is rejected back into probing.
        if state.progress[peer]!.state == .replicate,
           state.progress[peer]!.inflight.count >= config.maxInflightMessages {
            state.progress[peer]!.inflight.removeFirst()
        }
        if state.progress[peer]!.match < log.lastIndex { sendAppend(to: peer, &state) }
        if round > state.progress[peer]!.ackedReadRound {
            state.progress[peer]!.ackedReadRound = round
            maybeCompleteReadRound(&state)
        }
    }

    /// Commits the highest index a quorum holds, but only by counting an entry of this term (§5.4.2).
    mutating func maybeCommit(_ state: inout LeaderState) -> Bool {
        let index = Quorum.committedIndex(membership) { state.progress[$0]?.match ?? 0 }
        guard index > log.committed, index != .max else { return false }
        if log.term(at: index) != term && config.injectedBug != .commitEarlierTermByCounting { return false }
        let wasCommittedInTerm = log.term(at: log.committed) == term
        log.commit(to: index)
        if !wasCommittedInTerm && log.term(at: log.committed) == term && !state.readsAwaitingTermCommit.isEmpty {
            let waiting = state.readsAwaitingTermCommit
            state.readsAwaitingTermCommit = []
            for read in waiting { handleLeaderRead(read, &state) }
        }
        return true
    }

    /// Sends the next append (or snapshot) to `peer` if its window allows; true when entries went out.
    @discardableResult
    mutating func sendAppend(to peer: NodeID, _ state: inout LeaderState, sendIfEmpty: Bool = true) -> Bool {
        guard peer != id, var progress = state.progress[peer],
              !progress.isPaused(window: config.maxInflightMessages) else { return false }
        let previousIndex = progress.next - 1
        guard let previousTerm = log.term(at: previousIndex),
              let entries = log.entries(from: progress.next, maxCount: config.maxEntriesPerAppend, maxBytes: config.maxBytesPerAppend)
        else {
            guard progress.isRecentlyActive || progress.isOnline, let snapshot = latestSnapshot else { return false }
            progress.becomeSnapshot(index: snapshot.metadata.index)
            state.progress[peer] = progress
            events.append(.replicator(peer: peer, .stateChanged(progress.state)))
            send(Message(from: id, to: peer, term: term, payload: .snapshot(snapshot)), afterPersist: false)
            return false
        }
        if entries.isEmpty && !sendIfEmpty { return false }
        let commit = log.committed
        send(Message(from: id, to: peer, term: term, payload: .append(.init(
            previousIndex: previousIndex, previousTerm: previousTerm, entries: entries, commit: commit))),
             afterPersist: false)
        switch progress.state {
        case .replicate:
            if let last = entries.last {
                progress.next = last.index + 1
                progress.inflight.append(last.index)
            }
        case .probe:
            progress.isProbeSent = true
        case .snapshot:
            break
        }
        state.progress[peer] = progress
        return !entries.isEmpty
    }

    mutating func broadcastAppend(_ state: inout LeaderState, sendIfEmpty: Bool) {
        for peer in state.progress.keys.sorted() where peer != id {
            if sendAppend(to: peer, &state, sendIfEmpty: sendIfEmpty) {
                while sendAppend(to: peer, &state, sendIfEmpty: false) {}
            }
        }
    }

    mutating func broadcastHeartbeat(_ state: inout LeaderState) {
        state.lastReadRound += 1
        let round = state.lastReadRound
        state.roundSentAt.append((round, state.leaderTicks))
        // Rounds older than two election timeouts can no longer hold a lease up.
        let horizon = state.leaderTicks > UInt64(2 * config.electionTick) ? state.leaderTicks - UInt64(2 * config.electionTick) : 0
        if let firstKept = state.roundSentAt.firstIndex(where: { $0.tick >= horizon }), firstKept > 0 {
            state.roundSentAt.removeFirst(firstKept)
        }
        for peer in state.progress.keys.sorted() where peer != id {
            // A follower may only learn a commit index up to what it is known to hold.
            let commit = min(state.progress[peer]!.match, log.committed)
            send(Message(from: id, to: peer, term: term, payload: .heartbeat(commit: commit, readRound: round)),
                 afterPersist: false)
        }
    }

    // MARK: - Reads

    mutating func handleLeaderRead(_ read: PendingRead, _ state: inout LeaderState) {
        guard log.term(at: log.committed) == term else {
            // A new leader does not know its commit index until it commits an entry of its own term.
            state.readsAwaitingTermCommit.append(read)
            return
        }
        if config.injectedBug == .readWithoutHeartbeatRound || Quorum.hasQuorum(membership, { $0 == id })
            || (config.readMode == .leaseBased && hasLease(state))
        {
            answer(read, index: log.committed)
            return
        }
        state.queuedReads.append(read)
        if state.activeReadRound == nil { state.needsReadRound = true }
    }

    /// The leader lease: a quorum answered heartbeats sent less than 90% of an election timeout ago.
    /// Those followers ignore votes for a full election timeout after hearing from this leader, so
    /// no other leader can exist yet, as long as clocks tick at about the same rate.
    func hasLease(_ state: LeaderState) -> Bool {
        func contact(_ peer: NodeID) -> UInt64 {
            if peer == id { return state.leaderTicks + 1 }
            guard let acked = state.progress[peer]?.ackedReadRound, acked > 0,
                  let sent = state.roundSentAt.last(where: { $0.round <= acked }) else { return 0 }
            return sent.tick + 1
        }
        let start = Quorum.committedIndex(membership, contact)
        let leaseTicks = UInt64(max(1, config.electionTick * 9 / 10))
        return start > 0 && state.leaderTicks + 1 - start < leaseTicks
    }

    /// Starts a confirmation round for every queued read: once a quorum answers a heartbeat sent
    /// after this moment, the leader knows no newer leader existed when the reads arrived.
    mutating func startReadRound(_ state: inout LeaderState) {
        let round = state.lastReadRound + 1
        state.activeReadRound = (round, log.committed, state.queuedReads)
        state.queuedReads = []
        state.progress[id]?.ackedReadRound = round
        broadcastHeartbeat(&state)
    }

    mutating func maybeCompleteReadRound(_ state: inout LeaderState) {
        guard let active = state.activeReadRound else { return }
        let confirmed = Quorum.hasQuorum(membership) { ($0 == id) || (state.progress[$0]?.ackedReadRound ?? 0) >= active.round }
        guard confirmed else { return }
        state.activeReadRound = nil
        for read in active.reads { answer(read, index: active.index) }
        if !state.queuedReads.isEmpty { state.needsReadRound = true }
    }

    mutating func answer(_ read: PendingRead, index: UInt64) {
        if read.requester == id {
            readStates.append(ReadState(index: index, context: read.context))
        } else {
            send(Message(from: id, to: read.requester, term: term,
                         payload: .readIndexResponse(context: read.context, index: index)), afterPersist: false)
        }
    }

    // MARK: - Leadership transfer

    /// Hands leadership to `target`: the leader catches it up, then tells it to campaign at once.
    /// Proposals fail fast while the transfer runs; it is abandoned after an election timeout.
    public mutating func transferLeadership(to target: NodeID) throws(ProposalError) {
        guard case .leader = role else { throw .notLeader(leaderHint: leader == noNode ? nil : leader) }
        if target == id { return }
        guard membership.voters.contains(target) else {
            throw .invalidTransferTarget(target, "not a voter of the current configuration")
        }
        guard !membership.priority(of: target).isNeverLeader else {
            throw .invalidTransferTarget(target, "its priority is 0: it never leads")
        }
        leading { node, state in node.startTransfer(to: target, &state) }
    }

    mutating func startTransfer(to target: NodeID, _ state: inout LeaderState) {
        if state.transferTarget == target { return }
        if let previous = state.transferTarget { events.append(.leadershipTransferAborted(to: previous)) }
        state.transferTarget = target
        electionElapsed = 0
        events.append(.leadershipTransferStarted(to: target))
        if state.progress[target]?.match == log.lastIndex {
            send(Message(from: id, to: target, term: term, payload: .timeoutNow), afterPersist: false)
        } else {
            sendAppend(to: target, &state)
        }
    }

    /// Beyond SOFAJRaft: hand leadership back to a caught-up, healthy voter of higher priority.
    mutating func maybeTransferToHigherPriority(_ state: inout LeaderState) {
        let own = membership.priority(of: id)
        guard config.transferToHigherPriority, !own.isDisabled, state.transferTarget == nil,
              log.term(at: log.committed) == term else { return }
        let candidates = membership.voters.filter { peer in
            guard peer != id, let progress = state.progress[peer] else { return false }
            return membership.priority(of: peer) > own && progress.state == .replicate
                && progress.isRecentlyActive && progress.match == log.lastIndex
        }
        guard let best = candidates.max(by: {
            (membership.priority(of: $0), $1) < (membership.priority(of: $1), $0)
        }) else { return }
        startTransfer(to: best, &state)
    }
}
