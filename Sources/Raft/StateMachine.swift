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
}

extension StateMachine {
    public func leaderStarted(term: UInt64) {}
    public func leaderStopped() {}
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
