/// A node's role in its group. A learner is a follower that the membership does not let vote.
public enum RaftRole: String, Sendable, Hashable {
    case follower, preCandidate, candidate, leader
}

/// A read that may be served once the application has applied up to `index`.
public struct ReadState: Sendable, Hashable {
    public var index: UInt64
    public var context: UInt64

    public init(index: UInt64, context: UInt64) {
        self.index = index
        self.context = context
    }
}

/// What the leader tells the replicator listener about one follower.
public enum ReplicatorEvent: Sendable, Hashable {
    case created
    case stateChanged(ReplicationState)
    /// The follower answered again after being offline.
    case online
    /// The follower did not answer within an election timeout, or was reported unreachable.
    case offline
    case error(String)
    case destroyed
}

/// Why the core dropped a message or an input.
public enum DropReason: String, Sendable, Hashable {
    case unknownSender
    case staleTerm
    case indexOutOfRange
    case unexpectedForRole
    case malformed
}

/// Something that happened inside the core, for the runtime to log, count and pass to listeners.
public enum RaftEvent: Sendable, Hashable {
    case roleChanged(RaftRole, term: UInt64)
    case leaderChanged(NodeID?, term: UInt64)
    /// A proposal this node forwarded was not taken by the node it went to: it will never commit.
    case forwardedProposalDropped(id: UInt64)
    case replicator(peer: NodeID, ReplicatorEvent)
    case membershipChanged(Membership, index: UInt64)
    case leadershipTransferStarted(to: NodeID)
    case leadershipTransferAborted(to: NodeID)
    /// SOFAJRaft's priority decay: no leader appeared for two election timeouts.
    case targetPriorityDecayed(to: ElectionPriority)
    /// Local reads that can no longer complete because this node stopped being leader.
    case readsDropped(contexts: [UInt64])
    /// A message from the network that the core refused. Never fatal.
    case messageDropped(from: NodeID, DropReason)
}

/// Everything one round of input produced: what to persist, send and apply.
///
/// Handle it in this order: send `messages`; persist `snapshot`, `entries` (replacing any stored
/// suffix from the first entry's index on) and `hardState`; then send `messagesAfterPersist`; apply
/// `committedEntries`; serve `readStates` once applied up to their index; finally call
/// `RaftNode.advance(_:)`. A `Ready` cannot be copied and `advance` consumes it, so no round is
/// acknowledged twice.
public struct Ready: ~Copyable, Sendable {
    public let hardState: HardState?
    public let entries: [Entry]
    /// A snapshot from the leader: persist it, and restore the state machine from it.
    public let snapshot: Snapshot?
    /// Messages that may leave before the persisting is done (a leader's appends, heartbeats).
    public let messages: [Message]
    /// Messages that depend on this round's persisted state (votes, acknowledgements).
    public let messagesAfterPersist: [Message]
    public let committedEntries: [Entry]
    public let readStates: [ReadState]
    public let events: [RaftEvent]

    let sequence: UInt64

    init(
        hardState: HardState?, entries: [Entry], snapshot: Snapshot?, messages: [Message],
        messagesAfterPersist: [Message], committedEntries: [Entry], readStates: [ReadState],
        events: [RaftEvent], sequence: UInt64
    ) {
        self.hardState = hardState
        self.entries = entries
        self.snapshot = snapshot
        self.messages = messages
        self.messagesAfterPersist = messagesAfterPersist
        self.committedEntries = committedEntries
        self.readStates = readStates
        self.events = events
        self.sequence = sequence
    }
}

/// A proposal the core refused. All are definite: the entry was not appended.
/// Where `RaftNode.proposeOrForward` sent a proposal.
public enum ProposalRoute: Sendable, Hashable {
    /// Appended to this leader's log at `index`.
    case proposed(index: UInt64)
    /// Sent to the leader `to`, which proposes it if it still leads.
    case forwarded(to: NodeID)
}

public enum ProposalError: Error, Sendable, Hashable, CustomStringConvertible {
    case notLeader(leaderHint: NodeID?)
    case leadershipTransferInProgress(to: NodeID)
    case tooLarge(bytes: Int, limit: Int)
    case configurationChangePending(index: UInt64)
    case invalidConfigurationChange(String)
    case noLeader
    case invalidTransferTarget(NodeID, String)

    public var description: String {
        switch self {
        case .notLeader(let hint): return "not leader" + (hint.map { "; leader is \($0)" } ?? "; leader unknown")
        case .leadershipTransferInProgress(let to): return "leadership is being transferred to \(to)"
        case .tooLarge(let bytes, let limit): return "proposal of \(bytes) bytes exceeds the limit of \(limit)"
        case .configurationChangePending(let index): return "a membership change at index \(index) is not applied yet"
        case .invalidConfigurationChange(let why): return "invalid membership change: \(why)"
        case .noLeader: return "no leader known"
        case .invalidTransferTarget(let id, let why): return "cannot transfer leadership to \(id): \(why)"
        }
    }
}

/// The durable state a node restarts from, as its storage recovered it.
public struct RecoveredState: Sendable {
    public var hardState: HardState
    /// The latest snapshot, if any; the log starts right after it. Its data may be a reference
    /// to files the runtime holds; the core hands it to followers that need it.
    public var snapshot: Snapshot?
    public var entries: [Entry]

    public init(hardState: HardState, snapshot: Snapshot?, entries: [Entry]) {
        self.hardState = hardState
        self.snapshot = snapshot
        self.entries = entries
    }

    /// The state of a node that has never run and will join an existing group.
    public static let empty = RecoveredState(hardState: HardState(), snapshot: nil, entries: [])

    /// The state of a founding member of a new group: one committed entry that names the members.
    /// Every founding member must be given the same membership.
    public static func bootstrap(_ membership: Membership) -> RecoveredState {
        var steps: [ConfigurationStep] = membership.voters.map { .addVoter($0, priority: membership.priority(of: $0)) }
        steps += membership.learners.map { .addLearner($0, priority: membership.priority(of: $0)) }
        let entry = Entry(term: 1, index: 1, payload: .configuration(ConfigurationChange(steps)))
        return RecoveredState(hardState: HardState(term: 1, vote: noNode, commit: 1), snapshot: nil, entries: [entry])
    }
}
