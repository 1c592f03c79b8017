/// One member of a Raft group, as a pure, deterministic state machine.
///
/// It reads no clock, does no I/O and starts no thread: the runtime feeds it ticks, messages and
/// proposals, and collects what to persist, send and apply through `ready()` and `advance(_:)`.
/// The same configuration, seed and inputs always produce the same outputs.
public struct RaftNode: Sendable {
    public let id: NodeID
    let config: RaftConfig
    public internal(set) var term: UInt64
    /// Whom this node voted for in `term`, or `noNode`.
    public internal(set) var vote: NodeID
    /// The leader of `term` as far as this node knows, or `noNode`.
    public internal(set) var leader: NodeID
    /// The membership as of the last applied entry.
    public internal(set) var membership: Membership
    var log: RaftLog
    var role: RoleState = .follower
    var electionElapsed = 0
    /// Ticks since a follower last heard from its leader; drives leader stickiness, and is kept apart
    /// from `electionElapsed` because nodes that may not campaign (priority) still time out.
    var ticksSinceLeaderContact = 0
    var heartbeatElapsed = 0
    var randomizedElectionTimeout = 0
    var random: DeterministicRandom
    /// SOFAJRaft's target priority: a node campaigns only when its own priority reaches it.
    var targetPriority: ElectionPriority
    var electionTimeoutsBelowTarget = 0
    /// Quiesced: no election timer, no heartbeats, until something wakes the node (`quiesceWhenIdle`).
    public internal(set) var isQuiesced = false
    /// A follower was told its leader is unreachable and has not heard from it since: a `quiesce`
    /// still on its way from that leader must not put it back to sleep.
    var isLeaderUnreachable = false
    /// The newest snapshot this node holds, sent to followers whose next entry is compacted away.
    var latestSnapshot: Snapshot?

    var outbox: [Message] = []
    var outboxAfterPersist: [Message] = []
    var readStates: [ReadState] = []
    var events: [RaftEvent] = []
    var persistedHardState: HardState
    var readySequence: UInt64 = 0
    var outstandingReady: UInt64?

    /// Creates a node from what its storage recovered. Use `RecoveredState.bootstrap` for the founding
    /// members of a new group and `RecoveredState.empty` for a node that joins one.
    public init(config: RaftConfig, recovered: RecoveredState) throws(RaftConfigError) {
        try config.validate()
        self.id = config.id
        self.config = config
        self.term = recovered.hardState.term
        self.vote = recovered.hardState.vote
        self.leader = noNode
        self.membership = recovered.snapshot?.metadata.membership ?? .empty
        let snapshotIndex = recovered.snapshot?.metadata.index ?? 0
        let entries = recovered.entries.filter { $0.index > snapshotIndex }
        for (offset, entry) in entries.enumerated() where entry.index != snapshotIndex + 1 + UInt64(offset) {
            throw .invalid("recovered log is not contiguous at index \(entry.index)")
        }
        self.log = RaftLog(
            snapshotIndex: snapshotIndex, snapshotTerm: recovered.snapshot?.metadata.term ?? 0,
            entries: entries, committed: 0)
        log.commit(to: max(recovered.hardState.commit, snapshotIndex))
        self.random = DeterministicRandom(seed: config.randomSeed ^ (config.id &* 0x9E37_79B9_7F4A_7C15))
        self.latestSnapshot = recovered.snapshot
        self.targetPriority = membership.maximumVoterPriority
        self.persistedHardState = HardState(term: term, vote: vote, commit: log.committed)
        resetRandomizedElectionTimeout()
    }

    /// Terms and indexes above this are garbage from the network: no real log or election gets there.
    static let largestSaneValue = UInt64.max / 2

    // MARK: - Queries

    public var currentRole: RaftRole { role.kind }
    public var commitIndex: UInt64 { log.committed }
    public var appliedIndex: UInt64 { log.applied }
    public var lastIndex: UInt64 { log.lastIndex }
    public var firstIndex: UInt64 { log.firstIndex }
    public func term(at index: UInt64) -> UInt64? { log.term(at: index) }
    public func entry(at index: UInt64) -> Entry? { log.entry(at: index) }
    public var isLeader: Bool { role.kind == .leader }
    /// True when the membership lets this node vote and so campaign.
    public var isPromotable: Bool { membership.isVoter(id) }

    var hardState: HardState { HardState(term: term, vote: vote, commit: log.committed) }

    // MARK: - Inputs

    /// Advances logical time by one tick.
    public mutating func tick() {
        if isQuiesced {
            // Only the lease clock moves: a quiesced leader's lease must still run out.
            leading { _, state in state.leaderTicks += 1 }
            return
        }
        switch role {
        case .leader, .leaderCheckedOut: tickLeader()
        case .follower, .preCandidate, .candidate: tickElection()
        }
    }

    /// Starts an election now, as if the election timeout had passed.
    public mutating func campaign() {
        hup(isTransfer: false)
    }

    /// Proposes application data. Returns the index the entry will have if it commits.
    @discardableResult
    public mutating func propose(_ data: [UInt8]) throws(ProposalError) -> UInt64 {
        guard data.count <= config.maxProposalBytes else {
            throw .tooLarge(bytes: data.count, limit: config.maxProposalBytes)
        }
        return try proposeEntry(.normal(data))
    }

    /// Proposes `data` here when leading, or forwards it to the known leader, which proposes it on
    /// this node's behalf. A forwarded proposal has no index yet: the caller recognises its entry
    /// when it is applied (by an id inside `data`), or gives up after a timeout, not knowing.
    /// `id` names the proposal in a `forwardedProposalDropped` event if the leader does not take it.
    public mutating func proposeOrForward(_ data: [UInt8], id: UInt64) throws(ProposalError) -> ProposalRoute {
        if case .leader = role { return .proposed(index: try propose(data)) }
        guard data.count <= config.maxProposalBytes else {
            throw .tooLarge(bytes: data.count, limit: config.maxProposalBytes)
        }
        guard leader != noNode else { throw .noLeader }
        send(Message(from: self.id, to: leader, term: term, payload: .proposal(id: id, data: data)), afterPersist: false)
        return .forwarded(to: leader)
    }

    /// Asks for a linearizable read point. The answer arrives as a `ReadState` with this context in
    /// a later `Ready`; serve the read once applied up to its index. On a follower or learner the
    /// request goes to the leader.
    public mutating func readIndex(context: UInt64) throws(ProposalError) {
        wake()
        if case .leader = role {
            leading { node, state in node.handleLeaderRead(PendingRead(context: context, requester: node.id), &state) }
            return
        }
        guard leader != noNode else { throw .noLeader }
        send(Message(from: id, to: leader, term: term, payload: .readIndexRequest(context: context)), afterPersist: false)
    }

    /// Tells the node that `peer` could not be reached: a leader stops pipelining to it, and a
    /// quiesced node wakes, so that a follower whose leader died campaigns.
    public mutating func reportUnreachable(_ peer: NodeID) {
        wake()
        if peer == leader && role.kind == .follower { isLeaderUnreachable = true }
        leading { node, state in
            guard var progress = state.progress[peer], peer != node.id else { return }
            if progress.state == .replicate {
                progress.becomeProbe()
                node.events.append(.replicator(peer: peer, .stateChanged(.probe)))
            }
            if progress.isOnline {
                progress.isOnline = false
                node.events.append(.replicator(peer: peer, .error("unreachable")))
                node.events.append(.replicator(peer: peer, .offline))
            }
            state.progress[peer] = progress
        }
    }

    /// Tells the leader whether a snapshot it sent to `peer` arrived.
    public mutating func reportSnapshot(peer: NodeID, success: Bool) {
        leading { node, state in
            guard var progress = state.progress[peer], case .snapshot(let index) = progress.state else { return }
            if success {
                progress.becomeProbe()
                progress.next = max(progress.next, index + 1)
                progress.isProbeSent = true
            } else {
                progress.state = .snapshot(index: 0)
                progress.becomeProbe()
                node.events.append(.replicator(peer: peer, .error("snapshot failed")))
            }
            node.events.append(.replicator(peer: peer, .stateChanged(progress.state)))
            state.progress[peer] = progress
        }
    }

    // MARK: - Shared machinery

    mutating func proposeEntry(_ payload: EntryPayload) throws(ProposalError) -> UInt64 {
        guard case .leader(let state) = role else { throw .notLeader(leaderHint: leader == noNode ? nil : leader) }
        if let target = state.transferTarget { throw .leadershipTransferInProgress(to: target) }
        wake()
        let index = log.lastIndex + 1
        log.append([Entry(term: term, index: index, payload: payload)])
        leading { _, state in state.hasUnsentProposals = true }
        return index
    }

    /// Leaves quiescence: timers run again, and a leader heartbeats at once so followers hear it.
    mutating func wake() {
        guard isQuiesced else { return }
        isQuiesced = false
        electionElapsed = 0
        heartbeatElapsed = 0
        leading { node, state in
            // Nobody was expected to speak while quiet: check-quorum counts afresh from now.
            for peer in state.progress.keys { state.progress[peer]!.isRecentlyActive = true }
            node.broadcastHeartbeat(&state)
        }
    }

    mutating func send(_ message: Message, afterPersist: Bool) {
        if afterPersist {
            outboxAfterPersist.append(message)
        } else {
            outbox.append(message)
        }
    }

    /// Sends what a non-leader answers: it may acknowledge state this round changed, so it waits
    /// for the persisting to finish.
    mutating func reply(to message: Message, term replyTerm: UInt64? = nil, _ payload: Message.Payload) {
        send(Message(from: id, to: message.from, term: replyTerm ?? term, payload: payload), afterPersist: true)
    }

    mutating func resetRandomizedElectionTimeout() {
        randomizedElectionTimeout = config.electionTick + random.below(config.electionTick)
    }

    /// Checks out the leader state for the duration of `body`, so the state can be changed in place
    /// without copying it, while `body` still has the whole node at hand.
    mutating func leading(_ body: (inout RaftNode, inout LeaderState) -> Void) {
        guard case .leader(var state) = role else { return }
        role = .leaderCheckedOut
        body(&self, &state)
        if case .leaderCheckedOut = role { role = .leader(state) }
    }
}

/// A node's role, with the state only that role has.
enum RoleState: Sendable {
    case follower
    case preCandidate(votes: [NodeID: Bool])
    case candidate(votes: [NodeID: Bool])
    case leader(LeaderState)
    /// The leader state is checked out by `RaftNode.leading(_:)`.
    case leaderCheckedOut

    var kind: RaftRole {
        switch self {
        case .follower: return .follower
        case .preCandidate: return .preCandidate
        case .candidate: return .candidate
        case .leader, .leaderCheckedOut: return .leader
        }
    }
}

/// A read waiting for the leader to confirm its leadership.
struct PendingRead: Sendable {
    var context: UInt64
    var requester: NodeID
}

/// The state only a leader has.
struct LeaderState: Sendable {
    var progress: [NodeID: Progress]
    /// The index of the last membership change proposed; another may be proposed once it is applied.
    var pendingConfigurationIndex: UInt64
    var transferTarget: NodeID?
    /// Reads that wait until this leader has committed an entry of its own term.
    var readsAwaitingTermCommit: [PendingRead] = []
    /// Reads that wait for the next confirmation round.
    var queuedReads: [PendingRead] = []
    /// The round in flight: its number, the read index it will grant, and the reads it answers.
    var activeReadRound: (round: UInt64, index: UInt64, reads: [PendingRead])?
    /// Every heartbeat broadcast carries a new round number; a follower's answer to round r proves
    /// contact no earlier than the tick round r left.
    var lastReadRound: UInt64 = 0
    /// When recent rounds left, in leader ticks, for measuring the lease.
    var roundSentAt: [(round: UInt64, tick: UInt64)] = []
    /// Ticks since this node became leader.
    var leaderTicks: UInt64 = 0
    /// Proposals since the last `Ready` go out together when it is collected, one append per follower.
    var hasUnsentProposals = false
    /// Reads are queued and a round should start when the next `Ready` is collected, so that all
    /// reads issued before it share the round.
    var needsReadRound = false
}
