/// How a leader currently replicates to one follower (etcd's progress states).
public enum ReplicationState: Sendable, Hashable, CustomStringConvertible {
    /// The leader does not know where the follower's log ends: one append at a time until it answers.
    case probe
    /// The follower is known to match: appends are pipelined up to the in-flight window.
    case replicate
    /// The follower needs a snapshot at this index before appends can resume.
    case snapshot(index: UInt64)

    public var description: String {
        switch self {
        case .probe: return "probe"
        case .replicate: return "replicate"
        case .snapshot(let index): return "snapshot(\(index))"
        }
    }
}

/// The leader's view of one follower.
struct Progress: Sendable {
    var match: UInt64 = 0
    var next: UInt64
    var state: ReplicationState = .probe
    /// In probe state, an append is outstanding; the next waits for its answer or a heartbeat answer.
    var isProbeSent = false
    /// The last index of every append in flight, oldest first (replicate state only).
    var inflight: [UInt64] = []
    /// Heard from since the last check-quorum round.
    var isRecentlyActive = false
    /// What the replicator listener was last told: online or offline.
    var isOnline = true
    /// The highest read round this follower has confirmed.
    var ackedReadRound: UInt64 = 0

    init(next: UInt64) { self.next = next }

    mutating func becomeProbe() {
        if case .snapshot(let index) = state {
            next = max(match + 1, index + 1)
        } else {
            next = match + 1
        }
        state = .probe
        isProbeSent = false
        inflight.removeAll(keepingCapacity: true)
    }

    mutating func becomeReplicate() {
        state = .replicate
        next = match + 1
        isProbeSent = false
        inflight.removeAll(keepingCapacity: true)
    }

    mutating func becomeSnapshot(index: UInt64) {
        state = .snapshot(index: index)
        isProbeSent = false
        inflight.removeAll(keepingCapacity: true)
    }

    /// Accepts an acknowledgement of `index`; false when it is stale.
    mutating func maybeUpdate(_ index: UInt64) -> Bool {
        var updated = false
        if match < index {
            match = index
            updated = true
            isProbeSent = false
        }
        next = max(next, index + 1)
        if let firstKept = inflight.firstIndex(where: { $0 > index }) {
            inflight.removeFirst(firstKept)
        } else {
            inflight.removeAll(keepingCapacity: true)
        }
        return updated
    }

    /// Handles a rejection of the append that followed `rejected`. `hint` is the highest index the
    /// leader believes may still match. False when the rejection is stale.
    mutating func maybeDecrease(rejected: UInt64, hint: UInt64) -> Bool {
        if state == .replicate {
            if rejected <= match { return false }
            next = match + 1
            return true
        }
        if next == 0 || next - 1 != rejected { return false }
        next = max(hint >= rejected ? rejected : hint + 1, match + 1)
        isProbeSent = false
        return true
    }

    func isPaused(window: Int) -> Bool {
        switch state {
        case .probe: return isProbeSent
        case .replicate: return inflight.count >= window
        case .snapshot: return true
        }
    }
}

/// Quorum arithmetic over a (possibly joint) membership.
enum Quorum {
    /// The largest index that a majority of `voters` has acknowledged.
    static func committedIndex(_ voters: [NodeID], _ acknowledged: (NodeID) -> UInt64) -> UInt64 {
        if voters.isEmpty { return .max }
        var indexes = voters.map(acknowledged)
        indexes.sort(by: >)
        return indexes[voters.count / 2]
    }

    static func committedIndex(_ membership: Membership, _ acknowledged: (NodeID) -> UInt64) -> UInt64 {
        min(committedIndex(membership.voters, acknowledged), committedIndex(membership.outgoingVoters, acknowledged))
    }

    enum VoteResult { case pending, won, lost }

    static func voteResult(_ voters: [NodeID], _ votes: [NodeID: Bool]) -> VoteResult {
        if voters.isEmpty { return .won }
        var granted = 0
        var missing = 0
        for voter in voters {
            switch votes[voter] {
            case .some(true): granted += 1
            case .some(false): break
            case .none: missing += 1
            }
        }
        let majority = voters.count / 2 + 1
        if granted >= majority { return .won }
        if granted + missing >= majority { return .pending }
        return .lost
    }

    static func voteResult(_ membership: Membership, _ votes: [NodeID: Bool]) -> VoteResult {
        let incoming = voteResult(membership.voters, votes)
        let outgoing = voteResult(membership.outgoingVoters, votes)
        if incoming == .lost || outgoing == .lost { return .lost }
        if incoming == .won && outgoing == .won { return .won }
        return .pending
    }

    static func hasQuorum(_ membership: Membership, _ isPresent: (NodeID) -> Bool) -> Bool {
        membership.isQuorum(isPresent)
    }
}
