/// Why a KV request failed. The split matters to every client: a **definite** failure did not
/// happen and may be retried as a new request; an **indefinite** one may or may not have taken
/// effect, so a retry of a non-idempotent write can apply it twice.
public enum KVError: Error, Sendable, Hashable, CustomStringConvertible {
    case definite(Definite)
    case indefinite(Indefinite)

    /// Reasons that guarantee nothing happened.
    public enum Definite: Sendable, Hashable {
        /// This node does not lead the key's region; `leader` is its best guess (a node id).
        case notLeader(region: UInt64, leader: UInt64?)
        /// The region has no leader right now (an election is running). Retry shortly.
        case noLeader(region: UInt64)
        /// The region no longer holds the key (split or stale epoch); refresh the region table.
        case regionMoved(region: UInt64)
        /// No region of this store holds the key.
        case noRegion
        /// A key or value beyond the configured limits.
        case tooLarge(String)
        /// A request that makes no sense (bad argument).
        case invalid(String)
        /// The node is stopping.
        case shuttingDown
        /// The store failed (state machine or disk error) and serves nothing until restarted.
        case failed(String)
        /// No node could be reached; nothing was sent.
        case unreachable(String)
    }

    /// Reasons after which the write may or may not have been applied.
    public enum Indefinite: Sendable, Hashable {
        case timedOut
        case connectionLost
        case leadershipLost
        /// Committed, but the replica that answers holds the key's newer data from a region split
        /// off later (it took that region's snapshot before it applied the split), so it cannot tell
        /// the write's result, such as whether its condition held.
        case resultUnknown
    }

    public var isDefinite: Bool {
        if case .definite = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .definite(let reason):
            switch reason {
            case .notLeader(let region, let leader): return "not the leader of region \(region) (leader: \(leader.map(String.init) ?? "unknown"))"
            case .noLeader(let region): return "region \(region) has no leader yet"
            case .regionMoved(let region): return "region \(region) no longer holds the key"
            case .noRegion: return "no region holds the key"
            case .tooLarge(let what): return "too large: \(what)"
            case .invalid(let what): return what
            case .shuttingDown: return "the node is shutting down"
            case .failed(let why): return "the store failed: \(why)"
            case .unreachable(let why): return "unreachable: \(why)"
            }
        case .indefinite(let reason):
            switch reason {
            case .timedOut: return "timed out; the write may or may not have been applied"
            case .connectionLost: return "connection lost; the write may or may not have been applied"
            case .leadershipLost: return "leadership lost; the write may or may not have been applied"
            case .resultUnknown: return "committed, but its result is unknown on this node; the write may or may not have taken effect"
            }
        }
    }
}

/// The KV store as a client sees it: what the Redis front end and the tests program against.
/// `KVClient` implements it over the cluster; `LocalKVService` on a single in-process engine.
public protocol KVService: Sendable {
    func write(_ write: KVWrite) async throws(KVError) -> KVWriteResult
    func read(_ read: KVRead) async throws(KVError) -> KVReadResult
    /// What this node knows of the cluster (INFO, DIVAN.STATUS).
    func status() async -> ClusterStatus
}

/// A node's view of the cluster.
public struct ClusterStatus: Sendable, Hashable {
    /// This node's id.
    public var node: UInt64
    public var regions: [RegionStatus]

    public init(node: UInt64, regions: [RegionStatus]) {
        self.node = node
        self.regions = regions
    }
}

/// One region as this node sees it.
public struct RegionStatus: Sendable, Hashable {
    public var region: RegionDescriptor
    /// This node's role in the region's Raft group: leader, follower, candidate, learner.
    public var role: String
    public var leader: UInt64?
    public var term: UInt64
    public var commitIndex: UInt64
    public var appliedIndex: UInt64
    public var keys: UInt64
    public var bytes: UInt64

    public init(region: RegionDescriptor, role: String, leader: UInt64?, term: UInt64, commitIndex: UInt64, appliedIndex: UInt64, keys: UInt64, bytes: UInt64) {
        self.region = region
        self.role = role
        self.leader = leader
        self.term = term
        self.commitIndex = commitIndex
        self.appliedIndex = appliedIndex
        self.keys = keys
        self.bytes = bytes
    }
}

/// A region: a key range `[start, end)` replicated by one Raft group, with its epoch. The range
/// version rises on every split, the membership version on every membership change, so a request
/// routed with an older descriptor is recognised as stale.
public struct RegionDescriptor: Sendable, Hashable {
    public var id: UInt64
    public var start: Bytes
    /// nil: every key from `start` on.
    public var end: Bytes?
    public var rangeVersion: UInt64
    public var membershipVersion: UInt64
    /// The nodes that vote in the region's Raft group.
    public var voters: [UInt64]
    /// The nodes that hold a non-voting replica (they serve linearizable reads).
    public var learners: [UInt64]

    public init(
        id: UInt64, start: Bytes, end: Bytes?, rangeVersion: UInt64 = 1, membershipVersion: UInt64 = 1,
        voters: [UInt64], learners: [UInt64] = []
    ) {
        self.id = id
        self.start = start
        self.end = end
        self.rangeVersion = rangeVersion
        self.membershipVersion = membershipVersion
        self.voters = voters
        self.learners = learners
    }

    public func contains(_ key: Bytes) -> Bool {
        !key.lexicographicallyPrecedes(start) && end.map { key.lexicographicallyPrecedes($0) } ?? true
    }
}
