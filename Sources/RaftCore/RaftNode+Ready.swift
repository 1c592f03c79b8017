extension RaftNode {
    /// True when `ready()` has something to hand out and no earlier `Ready` is outstanding.
    public var hasReady: Bool {
        guard outstandingReady == nil else { return false }
        if case .leader(let state) = role, state.hasUnsentProposals || state.needsReadRound { return true }
        return hardState != persistedHardState || !log.unstableEntries.isEmpty || log.pendingSnapshot != nil
            || !outbox.isEmpty || !outboxAfterPersist.isEmpty || !log.unappliedCommittedEntries.isEmpty
            || !readStates.isEmpty || !events.isEmpty
    }

    /// Collects everything this node produced since the last `Ready`. Returns nil when there is
    /// nothing, or when the previous `Ready` has not been advanced yet.
    public mutating func ready() -> Ready? {
        guard outstandingReady == nil else { return nil }
        // Proposals made since the last round go out together, one append per follower.
        leading { node, state in
            if state.hasUnsentProposals {
                state.hasUnsentProposals = false
                node.broadcastAppend(&state, sendIfEmpty: false)
            }
            if state.needsReadRound {
                state.needsReadRound = false
                if state.activeReadRound == nil && !state.queuedReads.isEmpty { node.startReadRound(&state) }
            }
        }
        guard hasReady else { return nil }
        let state = hardState
        let snapshot = log.pendingSnapshot
        let committed = snapshot == nil ? Array(log.unappliedCommittedEntries) : []
        readySequence += 1
        outstandingReady = readySequence
        let ready = Ready(
            hardState: state == persistedHardState ? nil : state,
            entries: Array(log.unstableEntries),
            snapshot: snapshot,
            messages: outbox,
            messagesAfterPersist: outboxAfterPersist,
            committedEntries: committed,
            readStates: readStates,
            events: events,
            sequence: readySequence)
        persistedHardState = state
        outbox = []
        outboxAfterPersist = []
        readStates = []
        events = []
        return ready
    }

    /// Acknowledges that a `Ready` was persisted, sent and applied.
    public mutating func advance(_ ready: consuming Ready) {
        guard ready.sequence == outstandingReady else {
            events.append(.messageDropped(from: noNode, .malformed))
            return
        }
        outstandingReady = nil
        if let snapshot = ready.snapshot {
            log.snapshotPersisted(index: snapshot.metadata.index)
            if snapshot.metadata.index > (latestSnapshot?.metadata.index ?? 0) { latestSnapshot = snapshot }
        }
        if let last = ready.entries.last, log.matchesTerm(last.index, last.term) {
            log.stableIndex = max(log.stableIndex, last.index)
        }
        for entry in ready.committedEntries where entry.index == log.applied + 1 {
            log.applied = entry.index
            if case .configuration(let change) = entry.payload {
                applyConfigurationChange(change, at: entry.index)
            }
        }
        leading { node, state in
            // The leader counts itself only for what it has persisted, so a commit never rests on
            // an entry that a leader crash could lose.
            state.progress[node.id]?.match = node.log.stableIndex
            if node.maybeCommit(&state) { node.broadcastAppend(&state, sendIfEmpty: true) }
        }
        maybeLeaveJoint()
    }

    // MARK: - Snapshots

    /// The metadata a snapshot of the state machine as applied right now must carry.
    public var snapshotMetadata: SnapshotMetadata {
        SnapshotMetadata(index: log.applied, term: log.term(at: log.applied) ?? log.snapshotTerm, membership: membership)
    }

    /// Records a snapshot the application took (at an index it has applied) and drops the log it
    /// covers. Followers that need those entries get the snapshot instead. False when the
    /// snapshot is older than the current one or ahead of what is applied.
    @discardableResult
    public mutating func compact(_ snapshot: Snapshot) -> Bool {
        let metadata = snapshot.metadata
        guard metadata.index <= log.applied, metadata.index > log.snapshotIndex,
              log.term(at: metadata.index) == metadata.term else { return false }
        latestSnapshot = snapshot
        log.compact(through: metadata.index)
        return true
    }

    // MARK: - Status

    /// A point-in-time view of the node, for status pages and tests.
    public var status: RaftStatus {
        var followers: [NodeID: RaftStatus.Follower] = [:]
        if case .leader(let state) = role {
            for (peer, progress) in state.progress where peer != id {
                followers[peer] = .init(
                    match: progress.match, next: progress.next, state: progress.state, isOnline: progress.isOnline)
            }
        }
        return RaftStatus(
            id: id, role: role.kind, term: term, leader: leader == noNode ? nil : leader, commit: log.committed,
            applied: log.applied, lastIndex: log.lastIndex, firstIndex: log.firstIndex, membership: membership,
            followers: followers, isQuiesced: isQuiesced)
    }
}

/// A snapshot of a node's state for humans and tests.
public struct RaftStatus: Sendable, Hashable {
    /// The leader's view of one follower.
    public struct Follower: Sendable, Hashable {
        public var match: UInt64
        public var next: UInt64
        public var state: ReplicationState
        public var isOnline: Bool
    }

    public var id: NodeID
    public var role: RaftRole
    public var term: UInt64
    public var leader: NodeID?
    public var commit: UInt64
    public var applied: UInt64
    public var lastIndex: UInt64
    public var firstIndex: UInt64
    public var membership: Membership
    public var followers: [NodeID: Follower]
    /// Quiet while idle: no election timer, no heartbeats (`RaftConfig.quiesceWhenIdle`).
    public var isQuiesced: Bool
}
