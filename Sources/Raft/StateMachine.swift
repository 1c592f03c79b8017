import RaftCore

/// The application that a Raft group replicates.
public protocol StateMachine: AnyObject, Sendable {
    /// Applies committed application entries in log order and returns one result per entry.
    /// Throwing puts the group in a visible error state; a restart recovers it.
    func apply(_ entries: [CommittedEntry]) throws -> [[UInt8]]
    /// Called when this node starts leading a term.
    func leaderStarted(term: UInt64)
    /// Called when this node stops leading.
    func leaderStopped()
}

extension StateMachine {
    public func leaderStarted(term: UInt64) {}
    public func leaderStopped() {}
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
