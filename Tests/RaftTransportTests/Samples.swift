import RaftCore

/// One message of every payload kind, so a new kind without a test shows up as a missing case here.
enum Samples {
    static let membership = Membership(voters: [1, 2, 3], learners: [4], priorities: [1: ElectionPriority(100)])

    static let payloads: [Message.Payload] = [
        .append(Message.Append(
            previousIndex: 7, previousTerm: 2,
            entries: [
                Entry(term: 3, index: 8, payload: .empty),
                Entry(term: 3, index: 9, payload: .normal(Array("hello".utf8))),
                Entry(term: 3, index: 10, payload: .configuration(ConfigurationChange([.addLearner(5), .remove(2)]))),
            ],
            commit: 6)),
        .appendResponse(Message.AppendResponse(index: 9, isRejected: true, hintIndex: 4, hintTerm: 2)),
        .heartbeat(commit: 12, readRound: 3),
        .heartbeatResponse(readRound: 3),
        .voteRequest(Message.VoteRequest(isPreVote: true, lastIndex: 40, lastTerm: 5, isTransfer: false)),
        .voteResponse(isPreVote: false, granted: true),
        .snapshot(Snapshot(
            metadata: SnapshotMetadata(index: 100, term: 4, membership: membership), data: Array(repeating: 0xAB, count: 300))),
        .readIndexRequest(context: 77),
        .readIndexResponse(context: 77, index: 120),
        .timeoutNow,
        .quiesce(commit: 120),
        .snapshotChunkRequest(Message.SnapshotPiece(index: 100, term: 4, file: "state", offset: 1 << 20)),
        .snapshotChunk(Message.SnapshotPiece(index: 100, term: 4, file: "state", offset: 0), data: Array(repeating: 0x5A, count: 500)),
        .snapshotChunk(Message.SnapshotPiece(index: 100, term: 4, file: "state", offset: 0), data: nil),
    ]

    static func message(_ payload: Message.Payload, from: NodeID = 1, to: NodeID = 2, term: UInt64 = 3) -> Message {
        Message(from: from, to: to, term: term, payload: payload)
    }

    static func heartbeat(from: NodeID = 1, to: NodeID = 2, commit: UInt64 = 0) -> Message {
        message(.heartbeat(commit: commit, readRound: 0), from: from, to: to)
    }
}
