/// A message between two Raft nodes of one group.
public struct Message: Sendable, Hashable {
    public var from: NodeID
    public var to: NodeID
    /// The sender's term. Pre-vote requests carry the term the sender would campaign in.
    public var term: UInt64
    public var payload: Payload

    public init(from: NodeID, to: NodeID, term: UInt64, payload: Payload) {
        self.from = from
        self.to = to
        self.term = term
        self.payload = payload
    }

    /// What a message says.
    public enum Payload: Sendable, Hashable {
        /// Leader → follower: entries after `previousIndex`, and the leader's commit index.
        case append(Append)
        /// Follower → leader: the outcome of an `append`.
        case appendResponse(AppendResponse)
        /// Leader → follower: "I am alive"; carries a commit index the follower can safely use,
        /// and the read round it confirms.
        case heartbeat(commit: UInt64, readRound: UInt64)
        /// Follower → leader: the answer to a heartbeat, echoing its read round.
        case heartbeatResponse(readRound: UInt64)
        /// Candidate → voter. `isPreVote` marks the pre-vote phase (Raft thesis §9.6), which changes no term.
        case voteRequest(VoteRequest)
        /// Voter → candidate.
        case voteResponse(isPreVote: Bool, granted: Bool)
        /// Leader → follower whose next entry is compacted away.
        case snapshot(Snapshot)
        /// Follower or learner → leader: ask for a read index on behalf of a local read.
        case readIndexRequest(context: UInt64)
        /// Leader → follower: the read index for `context`, valid once applied up to `index`.
        case readIndexResponse(context: UInt64, index: UInt64)
        /// Leader → transfer target: campaign now, skipping pre-vote and the election timeout.
        case timeoutNow
        /// Leader → follower: "I am alive and idle, and you hold my whole log": stop the election
        /// timer until any other message arrives (CockroachDB's quiescence).
        case quiesce(commit: UInt64)
        /// Follower → leader: send this piece of the snapshot you offered. The runtime streams
        /// snapshot files with this and `snapshotChunk`; the core neither sends nor accepts them.
        case snapshotChunkRequest(SnapshotPiece)
        /// Leader → follower: the bytes of a requested piece, or nil when the leader no longer
        /// holds that snapshot.
        case snapshotChunk(SnapshotPiece, data: [UInt8]?)
        /// Follower or learner → leader: data to propose on the sender's behalf (etcd's MsgProp),
        /// with the sender's id for it. A node that cannot propose it answers `proposalDropped`.
        case proposal(id: UInt64, data: [UInt8])
        /// Any node → the sender of a `proposal` it did not take: it will never be in the log.
        case proposalDropped(id: UInt64)
    }

    /// Where a piece of a snapshot's files starts: which snapshot, which file, which offset.
    public struct SnapshotPiece: Sendable, Hashable {
        /// The snapshot's last included index and its term name the snapshot.
        public var index: UInt64
        public var term: UInt64
        public var file: String
        public var offset: UInt64

        public init(index: UInt64, term: UInt64, file: String, offset: UInt64) {
            self.index = index
            self.term = term
            self.file = file
            self.offset = offset
        }
    }

    public struct Append: Sendable, Hashable {
        public var previousIndex: UInt64
        public var previousTerm: UInt64
        public var entries: [Entry]
        public var commit: UInt64

        public init(previousIndex: UInt64, previousTerm: UInt64, entries: [Entry], commit: UInt64) {
            self.previousIndex = previousIndex
            self.previousTerm = previousTerm
            self.entries = entries
            self.commit = commit
        }
    }

    public struct AppendResponse: Sendable, Hashable {
        /// When accepted: the last index the follower now matches. When rejected: the rejected `previousIndex`.
        public var index: UInt64
        public var isRejected: Bool
        /// When rejected: the follower's hint for where to retry (fast back-off, etcd's `findConflictByTerm`).
        public var hintIndex: UInt64
        /// When rejected: the term of the follower's entry at `hintIndex`.
        public var hintTerm: UInt64

        public init(index: UInt64, isRejected: Bool = false, hintIndex: UInt64 = 0, hintTerm: UInt64 = 0) {
            self.index = index
            self.isRejected = isRejected
            self.hintIndex = hintIndex
            self.hintTerm = hintTerm
        }
    }

    public struct VoteRequest: Sendable, Hashable {
        public var isPreVote: Bool
        public var lastIndex: UInt64
        public var lastTerm: UInt64
        /// Set when a leader transfer started this campaign: voters then ignore leader stickiness.
        public var isTransfer: Bool

        public init(isPreVote: Bool, lastIndex: UInt64, lastTerm: UInt64, isTransfer: Bool) {
            self.isPreVote = isPreVote
            self.lastIndex = lastIndex
            self.lastTerm = lastTerm
            self.isTransfer = isTransfer
        }
    }
}

extension Message: CustomStringConvertible {
    public var description: String {
        let body: String
        switch payload {
        case .append(let a):
            body = "append(prev: \(a.previousIndex)/\(a.previousTerm), entries: \(a.entries.count), commit: \(a.commit))"
        case .appendResponse(let r):
            body = r.isRejected
                ? "appendResponse(reject \(r.index), hint: \(r.hintIndex)/\(r.hintTerm))"
                : "appendResponse(match: \(r.index))"
        case .heartbeat(let commit, let round): body = "heartbeat(commit: \(commit), round: \(round))"
        case .heartbeatResponse(let round): body = "heartbeatResponse(round: \(round))"
        case .voteRequest(let v):
            body = "\(v.isPreVote ? "preVote" : "vote")Request(last: \(v.lastIndex)/\(v.lastTerm)\(v.isTransfer ? ", transfer" : ""))"
        case .voteResponse(let pre, let granted): body = "\(pre ? "preVote" : "vote")Response(\(granted ? "granted" : "rejected"))"
        case .snapshot(let s): body = "snapshot(\(s.metadata.index)/\(s.metadata.term))"
        case .readIndexRequest(let c): body = "readIndexRequest(\(c))"
        case .readIndexResponse(let c, let i): body = "readIndexResponse(\(c), index: \(i))"
        case .timeoutNow: body = "timeoutNow"
        case .quiesce(let commit): body = "quiesce(commit: \(commit))"
        case .snapshotChunkRequest(let piece):
            body = "snapshotChunkRequest(\(piece.index)/\(piece.term) \(piece.file)@\(piece.offset))"
        case .snapshotChunk(let piece, let data):
            body = "snapshotChunk(\(piece.index)/\(piece.term) \(piece.file)@\(piece.offset), \(data.map { "\($0.count) bytes" } ?? "unavailable"))"
        case .proposal(let id, let data): body = "proposal(\(id), \(data.count) bytes)"
        case .proposalDropped(let id): body = "proposalDropped(\(id))"
        }
        return "\(from)→\(to) t\(term) \(body)"
    }
}
