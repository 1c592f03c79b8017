extension RaftNode {
    /// Feeds a message from another node. Messages that make no sense are dropped and reported as
    /// `RaftEvent.messageDropped`; no input from the network can crash the core.
    public mutating func step(_ message: Message) {
        // No legal election reaches half of UInt64's range; such a term is garbage, and taking it
        // would make `term + 1` overflow at the next campaign.
        guard message.to == id, message.from != id, message.from != noNode, message.term <= RaftNode.largestSaneValue else {
            events.append(.messageDropped(from: message.from, .malformed))
            return
        }
        switch message.payload {
        case .snapshotChunkRequest, .snapshotChunk:
            // Snapshot streaming belongs to the runtime.
            events.append(.messageDropped(from: message.from, .unexpectedForRole))
            return
        case .quiesce, .heartbeatResponse:
            // A late heartbeat answer must not undo the quiet it preceded.
            break
        default:
            wake()
        }
        if message.term > term {
            if case .voteRequest(let request) = message.payload {
                if !request.isTransfer && isInLeaderLease { return }
                if request.isPreVote {
                    handleVoteRequest(message, request)
                    return
                }
                becomeFollower(term: message.term, leader: noNode)
            } else if case .voteResponse(isPreVote: true, granted: true) = message.payload {
                // Our own pre-vote term echoed back: not a newer term.
            } else {
                switch message.payload {
                case .append, .heartbeat, .snapshot, .quiesce: becomeFollower(term: message.term, leader: message.from)
                default: becomeFollower(term: message.term, leader: noNode)
                }
            }
        } else if message.term < term {
            switch message.payload {
            case .append, .heartbeat, .quiesce:
                // Tell a deposed leader the new term, or it would never step down with check-quorum on.
                if config.checkQuorum || config.preVote {
                    reply(to: message, .appendResponse(.init(index: 0, isRejected: true)))
                }
            case .voteRequest(let request) where request.isPreVote:
                reply(to: message, .voteResponse(isPreVote: true, granted: false))
            case .proposal(let id, _):
                reply(to: message, .proposalDropped(id: id))
            case .proposalDropped(let id):
                events.append(.forwardedProposalDropped(id: id))
            default:
                break
            }
            events.append(.messageDropped(from: message.from, .staleTerm))
            return
        }

        if case .voteRequest(let request) = message.payload {
            handleVoteRequest(message, request)
            return
        }
        switch role {
        case .leader, .leaderCheckedOut: stepLeader(message)
        case .preCandidate, .candidate: stepCandidate(message)
        case .follower: stepFollower(message)
        }
    }

    mutating func stepCandidate(_ message: Message) {
        switch message.payload {
        case .voteResponse(let isPreVote, let granted):
            _ = recordVote(from: message.from, granted: granted, isPreVote: isPreVote)
        case .append, .heartbeat, .snapshot, .quiesce:
            becomeFollower(term: message.term, leader: message.from)
            stepFollower(message)
        case .proposal(let id, _):
            reply(to: message, .proposalDropped(id: id))
        case .proposalDropped(let id):
            events.append(.forwardedProposalDropped(id: id))
        case .readIndexRequest, .readIndexResponse, .timeoutNow, .appendResponse, .heartbeatResponse, .voteRequest,
             .snapshotChunkRequest, .snapshotChunk:
            events.append(.messageDropped(from: message.from, .unexpectedForRole))
        }
    }

    mutating func stepFollower(_ message: Message) {
        switch message.payload {
        case .append(let append):
            electionElapsed = 0
            ticksSinceLeaderContact = 0
            isLeaderUnreachable = false
            setLeader(message.from)
            handleAppend(message, append)
        case .heartbeat(let commit, let readRound):
            electionElapsed = 0
            ticksSinceLeaderContact = 0
            isLeaderUnreachable = false
            setLeader(message.from)
            log.commit(to: min(commit, log.lastIndex))
            reply(to: message, .heartbeatResponse(readRound: readRound))
        case .quiesce(let commit):
            electionElapsed = 0
            ticksSinceLeaderContact = 0
            setLeader(message.from)
            log.commit(to: min(commit, log.lastIndex))
            // Only a follower holding exactly the leader's log may go quiet; anything else waits for
            // its timer, whose campaign wakes the leader.
            if config.quiesceWhenIdle && log.lastIndex == commit && !isLeaderUnreachable { isQuiesced = true }
        case .snapshot(let snapshot):
            electionElapsed = 0
            ticksSinceLeaderContact = 0
            setLeader(message.from)
            handleSnapshot(message, snapshot)
        case .timeoutNow:
            hup(isTransfer: true)
        case .readIndexResponse(let context, let index):
            guard message.from == leader else {
                events.append(.messageDropped(from: message.from, .unexpectedForRole))
                return
            }
            readStates.append(ReadState(index: index, context: context))
        case .proposal(let id, _):
            reply(to: message, .proposalDropped(id: id))
        case .proposalDropped(let id):
            events.append(.forwardedProposalDropped(id: id))
        case .readIndexRequest, .appendResponse, .heartbeatResponse, .voteResponse, .voteRequest,
             .snapshotChunkRequest, .snapshotChunk:
            events.append(.messageDropped(from: message.from, .unexpectedForRole))
        }
    }

    mutating func handleAppend(_ message: Message, _ append: Message.Append) {
        guard isWellFormed(append, term: message.term) else {
            events.append(.messageDropped(from: message.from, .malformed))
            return
        }
        if append.previousIndex < log.committed {
            reply(to: message, .appendResponse(.init(index: log.committed)))
            return
        }
        if let lastNew = log.maybeAppend(
            previousIndex: append.previousIndex, previousTerm: append.previousTerm, entries: append.entries)
        {
            log.commit(to: min(append.commit, lastNew))
            reply(to: message, .appendResponse(.init(index: lastNew)))
        } else {
            let hint = log.largestIndex(atOrBelow: min(append.previousIndex, log.lastIndex), withTermAtMost: append.previousTerm)
            reply(to: message, .appendResponse(.init(
                index: append.previousIndex, isRejected: true, hintIndex: hint, hintTerm: log.term(at: hint) ?? 0)))
        }
    }

    /// Entries must follow `previousIndex` one by one, in terms that never decrease and never pass the sender's.
    func isWellFormed(_ append: Message.Append, term senderTerm: UInt64) -> Bool {
        guard append.previousIndex <= RaftNode.largestSaneValue - UInt64(append.entries.count),
              append.commit <= RaftNode.largestSaneValue else { return false }
        var expectedIndex = append.previousIndex + 1
        var lastTerm = append.previousTerm
        for entry in append.entries {
            if entry.index != expectedIndex || entry.term < lastTerm || entry.term > senderTerm { return false }
            expectedIndex += 1
            lastTerm = entry.term
        }
        return append.previousTerm <= senderTerm
    }

    mutating func handleSnapshot(_ message: Message, _ snapshot: Snapshot) {
        let metadata = snapshot.metadata
        guard metadata.term <= message.term, metadata.term > 0, metadata.index > 0,
              metadata.index <= RaftNode.largestSaneValue else {
            events.append(.messageDropped(from: message.from, .malformed))
            return
        }
        if metadata.index <= log.committed {
            reply(to: message, .appendResponse(.init(index: log.committed)))
            return
        }
        if log.matchesTerm(metadata.index, metadata.term) {
            // We already hold the snapshot's last entry: by log matching, everything before it too.
            log.commit(to: metadata.index)
            reply(to: message, .appendResponse(.init(index: log.committed)))
            return
        }
        log.restore(snapshot)
        membership = metadata.membership
        events.append(.membershipChanged(membership, index: metadata.index))
        reply(to: message, .appendResponse(.init(index: log.lastIndex)))
    }
}
