import RaftCore
import Testing

@Suite("ReadIndex")
struct ReadIndexTests {
    @Test func aNewLeaderAnswersReadsOnlyOnceItHasCommittedAnEntryOfItsTerm() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster[1].campaign()
        cluster.process(1)
        cluster.deliverAll(dropping: { $0.payload.isAppend })
        #expect(cluster[1].isLeader)
        #expect(cluster[1].commitIndex == 1)

        try cluster[1].readIndex(context: 7)
        cluster.process(1)
        cluster.deliverAll(dropping: { $0.payload.isAppend })
        #expect(cluster.node(1).readStates.isEmpty, "index 1 may be older than what a previous leader committed")

        cluster.tick(1)
        cluster.deliverAll()
        #expect(cluster[1].commitIndex == 2)
        #expect(cluster.node(1).readStates == [ReadState(index: 2, context: 7)])
    }

    @Test func readsIssuedTogetherShareOneHeartbeatRound() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        try cluster.propose("x", on: 1)

        cluster.sent = []
        for context: UInt64 in 1...3 { try cluster[1].readIndex(context: context) }
        cluster.process(1)
        #expect(cluster.node(1).readStates.isEmpty, "no read is answered before a quorum confirms")

        cluster.deliverAll()
        #expect(cluster.node(1).readStates == (1...3).map { ReadState(index: 3, context: $0) })
        #expect(cluster.sent.filter { $0.payload.isHeartbeat }.map(\.to) == [2, 3])
    }

    @Test func readsArrivingDuringARoundShareTheNextOne() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        try cluster[1].readIndex(context: 1)
        cluster.process(1)

        cluster.sent = []
        for context: UInt64 in 2...5 { try cluster[1].readIndex(context: context) }
        cluster.process(1)
        #expect(cluster.sent.isEmpty, "they wait for the round in flight to end")

        cluster.deliverAll()
        let rounds = Set(cluster.sent.compactMap { message -> UInt64? in
            if case .heartbeat(_, let round) = message.payload { round } else { nil }
        })
        #expect(rounds.count == 1, "one round for the four reads: \(rounds)")
        #expect(cluster.node(1).readStates.map(\.context) == [1, 2, 3, 4, 5])
    }

    @Test func aFollowerAsksTheLeaderAndWaitsUntilItHasAppliedTheIndex() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        // Node 2 misses the write, so the read index it gets is ahead of what it has applied.
        let isAppendTo2 = { (message: Message) in message.to == 2 && message.payload.isAppend }
        try cluster[1].propose(Array("x".utf8))
        cluster.process(1)
        cluster.deliverAll(dropping: isAppendTo2)

        cluster.sent = []
        try cluster[2].readIndex(context: 9)
        cluster.process(2)
        cluster.deliverAll(dropping: isAppendTo2)

        #expect(cluster.sent.first == Message(from: 2, to: 1, term: cluster[2].term, payload: .readIndexRequest(context: 9)))
        let read = try #require(cluster.node(2).readStates.first)
        #expect(read == ReadState(index: 3, context: 9))
        #expect(cluster[2].appliedIndex < read.index, "the read must wait for the apply")

        cluster.tickAll()
        #expect(cluster[2].appliedIndex >= read.index)
        #expect(cluster.appliedData(2) == ["x"])
    }

    @Test func aLearnerReadsThroughTheLeaderToo() throws {
        var cluster = Cluster(voters: [1, 2, 3], learners: [4])
        cluster.electLeader(1)
        try cluster.propose("x", on: 1)

        try cluster[4].readIndex(context: 5)
        cluster.process(4)
        cluster.deliverAll()

        #expect(cluster.node(4).readStates == [ReadState(index: 3, context: 5)])
        #expect(cluster[4].appliedIndex >= 3)
    }

    @Test func aReadWithNoKnownLeaderFailsAtOnce() {
        var cluster = Cluster(voters: [1, 2, 3])
        #expect(throws: ProposalError.noLeader) { try cluster[2].readIndex(context: 1) }
    }

    @Test func aLeaderCutOffFromItsQuorumDropsItsPendingReadsWhenItStepsDown() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        cluster.isolate(1)

        try cluster[1].readIndex(context: 4)
        cluster.tick(1, times: 20)

        #expect(!cluster[1].isLeader)
        #expect(cluster.node(1).readStates.isEmpty)
        #expect(cluster.node(1).events.contains(.readsDropped(contexts: [4])))
    }

    @Test func aLeaseReadIsAnsweredWithoutAHeartbeatRound() throws {
        var cluster = Cluster(voters: [1, 2, 3]) { $0.readMode = .leaseBased }
        cluster.electLeader(1)

        cluster.sent = []
        try cluster[1].readIndex(context: 1)
        cluster.process(1)

        #expect(cluster.node(1).readStates == [ReadState(index: 2, context: 1)])
        #expect(cluster.sent.isEmpty)
    }

    @Test func aLeaderCutOffFromItsQuorumServesNoLeaseReadOnceAnotherCouldLead() throws {
        var cluster = Cluster(voters: [1, 2, 3]) { $0.readMode = .leaseBased }
        cluster.electLeader(1)

        cluster.isolate(1)
        #expect(cluster.tickAll(until: { $0.leaders.contains { $0 != 1 } }, limit: 60) != nil)
        let successor = try #require(cluster.leaders.first { $0 != 1 })
        try cluster.propose("written under the successor", on: successor)
        // Check-quorum has not deposed node 1 yet: its first check still counted answers from before the cut.
        #expect(cluster[1].isLeader)

        try cluster[1].readIndex(context: 1)
        cluster.process(1)

        #expect(cluster.node(1).readStates.isEmpty, "stale read: \(cluster.node(1).readStates), successor committed \(cluster[successor].commitIndex)")
    }

    @Test func leaseReadsNeedCheckQuorum() {
        var config = RaftConfig(id: 1)
        config.readMode = .leaseBased
        config.checkQuorum = false
        #expect(throws: RaftConfigError.self) { try config.validate() }
    }
}
