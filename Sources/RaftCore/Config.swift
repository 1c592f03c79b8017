/// How a leader confirms that it may serve a linearizable read.
public enum ReadMode: Sendable, Hashable {
    /// ReadIndex: one heartbeat round to a quorum confirms leadership (SOFAJRaft's `Safe`).
    case safe
    /// Trust the leader lease kept by check-quorum; no round trip, but relies on bounded clock drift
    /// (SOFAJRaft's `LeaseBased`). Allowed only with check-quorum on.
    case leaseBased
}

/// Deliberate bugs that tests switch on to prove the simulator's checks can fail. Never set in production.
public enum InjectedBug: String, Sendable, Hashable, CaseIterable {
    /// Count the candidate's own vote twice.
    case countVoteTwice
    /// Answer reads with the commit index at once, without confirming leadership.
    case readWithoutHeartbeatRound
    /// Commit an entry of an earlier term by counting replicas (the bug of Raft §5.4.2, Figure 8).
    case commitEarlierTermByCounting
}

/// The configuration of one Raft node. Times are in ticks; the runtime decides how long a tick is.
public struct RaftConfig: Sendable, Hashable {
    /// This node's id; never `noNode`.
    public var id: NodeID
    /// Ticks without a leader before a follower campaigns. The real timeout is drawn from
    /// `[electionTick, 2 * electionTick)` each time, so that nodes rarely campaign together.
    public var electionTick: Int = 10
    /// Ticks between a leader's heartbeats; must be below `electionTick` (SOFAJRaft: a tenth of it).
    public var heartbeatTick: Int = 1
    /// Append messages in flight to one follower before the leader waits for answers (SOFAJRaft: 256).
    public var maxInflightMessages: Int = 256
    /// Entries in one append message (SOFAJRaft: 1,024).
    public var maxEntriesPerAppend: Int = 1024
    /// Payload bytes in one append message; one entry larger than this still goes alone.
    public var maxBytesPerAppend: Int = 1 << 20
    /// Largest payload one proposal may carry.
    public var maxProposalBytes: Int = 16 << 20
    /// Run a pre-vote round before a real election, so a partitioned node never disrupts the cluster.
    public var preVote: Bool = true
    /// A leader steps down when it has not heard from a quorum within an election timeout, and
    /// followers that heard from a leader recently reject votes (leader stickiness).
    public var checkQuorum: Bool = true
    /// How reads are confirmed on the leader.
    public var readMode: ReadMode = .safe
    /// With priorities set, a leader hands leadership to a caught-up voter of higher priority (beyond SOFAJRaft).
    public var transferToHigherPriority: Bool = true
    /// The minimum step by which the target priority decays (SOFAJRaft's `decayPriorityGap`, at least 10).
    public var decayPriorityGap: Int = 10
    /// An idle leader whose followers all hold its whole log stops heartbeating and tells them to stop
    /// their election timers (CockroachDB's quiescence), so an idle group costs no messages. Any
    /// proposal, read or message wakes it. The runtime must call `reportUnreachable` when its
    /// transport loses a peer: that wakes a quiesced node, so a dead leader is still replaced.
    public var quiesceWhenIdle: Bool = false
    /// The seed of every random choice this node makes.
    public var randomSeed: UInt64 = 0
    /// Test-only: a deliberate bug, to prove that the checks catch it.
    public var injectedBug: InjectedBug? = nil

    public init(id: NodeID) { self.id = id }

    /// Checks the configuration and names the first nonsense it finds.
    public func validate() throws(RaftConfigError) {
        if id == noNode { throw .invalid("id must not be 0") }
        if electionTick < 2 { throw .invalid("electionTick must be at least 2, got \(electionTick)") }
        if heartbeatTick < 1 || heartbeatTick >= electionTick {
            throw .invalid("heartbeatTick must be in 1..<electionTick (\(electionTick)), got \(heartbeatTick)")
        }
        if maxInflightMessages < 1 { throw .invalid("maxInflightMessages must be positive, got \(maxInflightMessages)") }
        if maxEntriesPerAppend < 1 { throw .invalid("maxEntriesPerAppend must be positive, got \(maxEntriesPerAppend)") }
        if maxBytesPerAppend < 1 { throw .invalid("maxBytesPerAppend must be positive, got \(maxBytesPerAppend)") }
        if maxProposalBytes < 1 { throw .invalid("maxProposalBytes must be positive, got \(maxProposalBytes)") }
        if readMode == .leaseBased && !checkQuorum {
            throw .invalid("readMode leaseBased needs checkQuorum: without it a deposed leader keeps its lease")
        }
    }
}

/// A configuration that `RaftConfig.validate()` rejected.
public enum RaftConfigError: Error, Hashable, CustomStringConvertible {
    case invalid(String)

    public var description: String {
        switch self {
        case .invalid(let reason): return "invalid Raft configuration: \(reason)"
        }
    }
}
