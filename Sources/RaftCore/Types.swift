/// A Raft node's identity. `0` is never a valid id: it stands for "none".
public typealias NodeID = UInt64

/// The value that stands for "no node" in votes and leader hints.
public let noNode: NodeID = 0

/// What a log entry carries.
public enum EntryPayload: Sendable, Hashable {
    /// An entry a new leader appends to commit entries of earlier terms (Raft §5.4.2).
    case empty
    /// Application data, opaque to Raft.
    case normal([UInt8])
    /// A membership change, applied by the core itself when the entry is applied.
    case configuration(ConfigurationChange)
}

/// One entry of the replicated log.
public struct Entry: Sendable, Hashable {
    public var term: UInt64
    public var index: UInt64
    public var payload: EntryPayload

    public init(term: UInt64, index: UInt64, payload: EntryPayload) {
        self.term = term
        self.index = index
        self.payload = payload
    }

    /// The entry's size for flow control: its payload bytes plus a fixed overhead.
    public var approximateSize: Int {
        switch payload {
        case .empty: return 16
        case .normal(let data): return 16 + data.count
        case .configuration(let change): return 16 + 16 * change.steps.count
        }
    }
}

/// The state a node must persist before any message that depends on it leaves (Raft Figure 2).
public struct HardState: Sendable, Hashable {
    public var term: UInt64
    public var vote: NodeID
    public var commit: UInt64

    public init(term: UInt64 = 0, vote: NodeID = noNode, commit: UInt64 = 0) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }
}

/// A node's election priority, as SOFAJRaft defines it.
public struct ElectionPriority: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var value: Int

    public init(_ value: Int) { self.value = value }

    /// Priority election is off for this node: it campaigns like plain Raft.
    public static let disabled = ElectionPriority(-1)
    /// The node never becomes leader.
    public static let neverLeader = ElectionPriority(0)

    public var isDisabled: Bool { value < 0 }
    public var isNeverLeader: Bool { value == 0 }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.value < rhs.value }
    public var description: String { "\(value)" }
}

/// The cluster membership: voters (two sets while in joint consensus) and learners.
public struct Membership: Sendable, Hashable {
    /// The voters of the new configuration (the only configuration outside joint consensus).
    public var voters: [NodeID]
    /// The voters of the old configuration while in joint consensus; empty otherwise.
    public var outgoingVoters: [NodeID]
    /// Nodes that receive the log but neither vote nor count for a quorum.
    public var learners: [NodeID]
    /// Voters of the outgoing configuration that become learners when the joint configuration is left.
    public var learnersNext: [NodeID]
    /// Election priorities; a node that is missing here has `ElectionPriority.disabled`.
    public var priorities: [NodeID: ElectionPriority]

    public init(
        voters: [NodeID], learners: [NodeID] = [], outgoingVoters: [NodeID] = [],
        learnersNext: [NodeID] = [], priorities: [NodeID: ElectionPriority] = [:]
    ) {
        self.voters = voters.sorted()
        self.learners = learners.sorted()
        self.outgoingVoters = outgoingVoters.sorted()
        self.learnersNext = learnersNext.sorted()
        self.priorities = priorities
    }

    public static let empty = Membership(voters: [])

    public var isJoint: Bool { !outgoingVoters.isEmpty }

    /// Every node the configuration names, in ascending order.
    public var allNodes: [NodeID] {
        Array(Set(voters).union(outgoingVoters).union(learners).union(learnersNext)).sorted()
    }

    public func isVoter(_ id: NodeID) -> Bool { voters.contains(id) || outgoingVoters.contains(id) }
    public func isLearner(_ id: NodeID) -> Bool { !isVoter(id) && (learners.contains(id) || learnersNext.contains(id)) }
    public func contains(_ id: NodeID) -> Bool { isVoter(id) || isLearner(id) }

    public func priority(of id: NodeID) -> ElectionPriority { priorities[id] ?? .disabled }

    /// True when the nodes `isPresent` accepts form a majority of the voters, and, in joint
    /// consensus, of the outgoing voters too.
    public func isQuorum(_ isPresent: (NodeID) -> Bool) -> Bool {
        func majority(_ group: [NodeID]) -> Bool {
            group.isEmpty || group.reduce(0) { $0 + (isPresent($1) ? 1 : 0) } > group.count / 2
        }
        return majority(voters) && majority(outgoingVoters)
    }

    /// The highest priority among the voters, the initial target priority of SOFAJRaft.
    public var maximumVoterPriority: ElectionPriority {
        Set(voters).union(outgoingVoters).map { priority(of: $0) }.max() ?? .disabled
    }
}

/// One step of a membership change.
public enum ConfigurationStep: Sendable, Hashable {
    case addVoter(NodeID, priority: ElectionPriority = .disabled)
    case addLearner(NodeID, priority: ElectionPriority = .disabled)
    case remove(NodeID)

    public var node: NodeID {
        switch self {
        case .addVoter(let id, _), .addLearner(let id, _), .remove(let id): return id
        }
    }
}

/// A membership change. A change of at most one voter is applied directly; anything larger
/// goes through joint consensus, which the leader leaves on its own once the joint configuration is applied.
public struct ConfigurationChange: Sendable, Hashable {
    public var steps: [ConfigurationStep]
    /// True for the entry that leaves a joint configuration.
    public var isLeaveJoint: Bool { steps.isEmpty }

    public init(_ steps: [ConfigurationStep]) { self.steps = steps }

    public static let leaveJoint = ConfigurationChange([])
}

/// What a snapshot covers: the last included entry and the membership at that point.
public struct SnapshotMetadata: Sendable, Hashable {
    public var index: UInt64
    public var term: UInt64
    public var membership: Membership

    public init(index: UInt64, term: UInt64, membership: Membership) {
        self.index = index
        self.term = term
        self.membership = membership
    }
}

/// A snapshot: metadata plus opaque data. The runtime may carry a reference to files in `data`
/// instead of the bytes themselves; the core never looks inside.
public struct Snapshot: Sendable, Hashable {
    public var metadata: SnapshotMetadata
    public var data: [UInt8]

    public init(metadata: SnapshotMetadata, data: [UInt8]) {
        self.metadata = metadata
        self.data = data
    }
}

extension Membership: CustomStringConvertible {
    /// A stable rendering (priorities sorted by node), so traces of one seed are identical byte for byte.
    public var description: String {
        var parts = ["voters: \(voters)"]
        if isJoint { parts.append("outgoing: \(outgoingVoters)") }
        if !learners.isEmpty { parts.append("learners: \(learners)") }
        if !learnersNext.isEmpty { parts.append("learnersNext: \(learnersNext)") }
        let set = priorities.filter { !$0.value.isDisabled }.sorted { $0.key < $1.key }
        if !set.isEmpty { parts.append("priorities: [" + set.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "]") }
        return "{" + parts.joined(separator: ", ") + "}"
    }
}
