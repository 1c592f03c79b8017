import RaftCore

/// How one Raft group runs, with SOFAJRaft's defaults.
public struct RaftOptions: Sendable, Hashable {
    /// Without a leader for this long, a follower campaigns (SOFAJRaft: 1,000 ms). The real timeout
    /// is drawn from [timeout, 2 × timeout).
    public var electionTimeout: Duration = .milliseconds(1_000)
    /// A leader's heartbeat interval; one tick of the core (SOFAJRaft: a tenth of the election timeout).
    public var heartbeatInterval: Duration = .milliseconds(100)
    /// How often the application should snapshot (SOFAJRaft: 3,600 s). A group's first snapshot
    /// fires at a random moment in [interval / 2, interval) so groups of one process spread out.
    public var snapshotInterval: Duration = .seconds(3_600)
    /// Appends in flight to one follower (SOFAJRaft: 256).
    public var maxInflightAppends = 256
    /// Entries in one append (SOFAJRaft: 1,024).
    public var maxEntriesPerAppend = 1_024
    /// Largest proposal accepted.
    public var maxProposalBytes = 16 << 20
    /// How reads are confirmed.
    public var readMode: ReadMode = .safe
    /// How long `apply` waits for its entry before reporting an indefinite timeout.
    public var applyTimeout: Duration = .seconds(10)
    /// Bytes per piece when a snapshot streams to a follower. One piece at a time is in flight per
    /// follower, and the transport sends pieces behind every other message, so heartbeats wait for
    /// at most one piece on the wire.
    public var snapshotChunkSize = 1 << 20
    /// An idle group goes quiet: no heartbeats, no election timers, until a proposal, a read or a
    /// lost peer wakes it (`RaftConfig.quiesceWhenIdle`). The sender's transport must report lost
    /// peers through `RaftGroup.reportUnreachable`, or followers of a dead quiet leader never elect.
    public var quiesceWhenIdle = true
    /// Seed of the core's random choices; by default derived from the node id.
    public var randomSeed: UInt64 = 0

    public init() {}

    /// The election timeout in ticks of `heartbeatInterval`.
    var electionTicks: Int { Int(electionTimeout / heartbeatInterval) }

    /// Rejects options that cannot work, naming the first problem.
    public func validate() throws(RaftConfigError) {
        guard heartbeatInterval > .zero else { throw .invalid("heartbeatInterval must be positive") }
        guard electionTimeout >= heartbeatInterval * 2 else {
            throw .invalid("electionTimeout (\(electionTimeout)) must be at least twice heartbeatInterval (\(heartbeatInterval))")
        }
        guard snapshotInterval > .zero else { throw .invalid("snapshotInterval must be positive") }
        guard applyTimeout > .zero else { throw .invalid("applyTimeout must be positive") }
        guard (4_096...(8 << 20)).contains(snapshotChunkSize) else {
            throw .invalid("snapshotChunkSize must be between 4 KiB and 8 MiB (a frame holds 16 MiB), got \(snapshotChunkSize)")
        }
        try coreConfig(id: 1).validate()
    }

    func coreConfig(id: NodeID) -> RaftConfig {
        var config = RaftConfig(id: id)
        config.electionTick = electionTicks
        config.heartbeatTick = 1
        config.maxInflightMessages = maxInflightAppends
        config.maxEntriesPerAppend = maxEntriesPerAppend
        config.maxProposalBytes = maxProposalBytes
        config.readMode = readMode
        config.quiesceWhenIdle = quiesceWhenIdle
        config.randomSeed = randomSeed == 0 ? id &* 0x2545_F491_4F6C_DD1D : randomSeed
        return config
    }
}
