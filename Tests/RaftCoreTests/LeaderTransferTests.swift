import RaftCore
import Testing

@Suite("Leader transfer")
struct LeaderTransferTests {
    @Test func theTargetIsCaughtUpThenToldToCampaignAndLeads() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        cluster.isolate(3)
        for n in 0..<5 { try cluster.propose("w\(n)", on: 1) }
        let term = cluster[1].term

        cluster.sent = []
        try cluster[1].transferLeadership(to: 3)
        cluster.process(1)
        #expect(cluster.node(1).events.last == .leadershipTransferStarted(to: 3))
        #expect(throws: ProposalError.leadershipTransferInProgress(to: 3)) {
            try cluster[1].propose(Array("during".utf8))
        }

        cluster.heal()
        #expect(cluster.tickAll(until: { $0.leaders == [3] }, limit: 5) != nil)
        #expect(cluster[3].term == term + 1)
        #expect(cluster.appliedData(3) == (0..<5).map { "w\($0)" })
        // timeoutNow went out only after the last entry had been sent to the target.
        let timeoutNow = try #require(cluster.sent.firstIndex { $0.to == 3 && $0.payload == .timeoutNow })
        let lastAppend = try #require(cluster.sent.lastIndex { $0.to == 3 && $0.payload.appendedEntries.last?.index == 7 })
        #expect(lastAppend < timeoutNow)
    }

    @Test func aTransferToAnUnreachableNodeIsAbandonedAfterAnElectionTimeout() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        cluster.isolate(3)

        try cluster[1].transferLeadership(to: 3)
        cluster.process(1)
        cluster.tickAll(times: 10)

        #expect(cluster.node(1).events.contains(.leadershipTransferAborted(to: 3)))
        #expect(cluster.leaders == [1])
        try cluster.propose("after the abort", on: 1)
        #expect(cluster.appliedData(2) == ["after the abort"])
    }

    @Test func onlyALeaderTransfersAndOnlyToAVoter() throws {
        var cluster = Cluster(voters: [1, 2, 3], learners: [4])
        cluster.electLeader(1)
        #expect(throws: ProposalError.notLeader(leaderHint: 1)) { try cluster[2].transferLeadership(to: 3) }
        #expect(throws: ProposalError.invalidTransferTarget(4, "not a voter of the current configuration")) {
            try cluster[1].transferLeadership(to: 4)
        }
    }
}
