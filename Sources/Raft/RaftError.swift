import RaftCore
import RaftStorage

/// Why a request to a Raft group failed. Clients and the linearizability checker depend on the
/// difference between the two kinds.
public enum RaftError: Error, Sendable, CustomStringConvertible {
    /// It did not happen, and never will: safe to retry anywhere.
    case definite(DefiniteFailure)
    /// It may or may not have happened (timed out, connection or leadership lost after proposing):
    /// a retry of a non-idempotent write may apply it twice.
    case indefinite(IndefiniteFailure)

    public var description: String {
        switch self {
        case .definite(let failure): return "definite failure: \(failure)"
        case .indefinite(let failure): return "indefinite failure (may have committed): \(failure)"
        }
    }
}

/// A failure after which the request certainly had no effect.
public enum DefiniteFailure: Sendable, CustomStringConvertible {
    case notLeader(leaderHint: NodeID?)
    case rejected(ProposalError)
    case tooLarge(bytes: Int, limit: Int)
    /// Another entry was committed at the index the proposal had: it can never commit.
    case overwritten(index: UInt64)
    case shuttingDown
    case storage(StorageError)

    public var description: String {
        switch self {
        case .notLeader(let hint): return "not leader" + (hint.map { ", try node \($0)" } ?? "")
        case .rejected(let error): return "\(error)"
        case .tooLarge(let bytes, let limit): return "\(bytes) bytes exceed the limit of \(limit)"
        case .overwritten(let index): return "another entry was committed at index \(index)"
        case .shuttingDown: return "the group is shutting down"
        case .storage(let error): return "storage: \(error)"
        }
    }
}

/// A failure after which the request may still take effect.
public enum IndefiniteFailure: Sendable, CustomStringConvertible {
    case timedOut(after: Duration)
    /// The proposer stopped leading before its entry was applied here.
    case leadershipLost
    /// The state machine threw while applying: the group is in an error state.
    case stateMachineFailed(String)

    public var description: String {
        switch self {
        case .timedOut(let after): return "timed out after \(after)"
        case .leadershipLost: return "leadership lost before the entry was applied"
        case .stateMachineFailed(let why): return "state machine failed: \(why)"
        }
    }
}
