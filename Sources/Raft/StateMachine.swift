import RaftCore

/// The application that a Raft group replicates.
public protocol StateMachine: AnyObject, Sendable {
    /// Applies committed application entries in log order and returns one result per entry.
    /// Throwing puts the group in a visible error state; a restart recovers it.
    func apply(_ entries: [CommittedEntry]) throws -> [[UInt8]]
    /// A point-in-time view of the state, taken between two applies. It must be cheap (a copy-on-write
    /// copy, a storage engine's snapshot): the group serializes it in the background while applying goes on.
    func snapshotView() -> any StateMachineView
    /// Replaces the whole state by a snapshot's data (verified by the snapshot store before this).
    func restore(from data: [UInt8]) throws
    /// Called when this node starts leading a term.
    func leaderStarted(term: UInt64)
    /// Called when this node stops leading.
    func leaderStopped()
    /// For a state machine that keeps its own durable state (the KV store's engine): the index of the
    /// last entry that state already reflects when the group opens. The group then restores a snapshot
    /// only when it is newer, and does not apply entries up to this index again. In-memory state
    /// machines keep the default, 0: they are rebuilt from the snapshot and the log.
    var durableAppliedIndex: UInt64 { get }
    /// Called on the leader for data a follower forwarded, before it enters the log: the place to
    /// put what the leader must decide, such as the time (the KV store's expiry and leases).
    func stampForwardedProposal(_ data: inout [UInt8])
}

extension StateMachine {
    public func leaderStarted(term: UInt64) {}
    public func leaderStopped() {}
    public var durableAppliedIndex: UInt64 { 0 }
    public func stampForwardedProposal(_ data: inout [UInt8]) {}
}

/// A frozen view of a state machine that can be written out while the state machine moves on.
public protocol StateMachineView: Sendable {
    /// The whole state as bytes; `StateMachine.restore(from:)` reads them back.
    func serialized() -> [UInt8]
    /// Hands the same bytes as `serialized()` to `sink` in consecutive pieces, so that a large state
    /// never has to sit in memory whole. The default hands over `serialized()` in one piece.
    func write(to sink: (_ piece: [UInt8]) throws -> Void) throws
}

extension StateMachineView {
    public func write(to sink: (_ piece: [UInt8]) throws -> Void) throws {
        try sink(serialized())
    }
}

/// One committed application entry.
public struct CommittedEntry: Sendable, Hashable {
    public var index: UInt64
    public var term: UInt64
    public var data: [UInt8]

    public init(index: UInt64, term: UInt64, data: [UInt8]) {
        self.index = index
        self.term = term
        self.data = data
    }
}

/// Called on the leader about each follower's replicator (SOFAJRaft's ReplicatorStateListener).
public protocol ReplicatorStateListener: Sendable {
    func replicatorCreated(peer: NodeID)
    func replicatorStateChanged(peer: NodeID, to state: ReplicatorEvent)
    func replicatorError(peer: NodeID, _ reason: String)
    func replicatorDestroyed(peer: NodeID)
}

/// Sends Raft messages of one group to peers. The TCP transport implements it; tests use a loopback.
public protocol RaftMessageSender: Sendable {
    func send(_ messages: [Message], group: UInt64)
}
