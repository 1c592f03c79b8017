import RaftCore
import Testing

@Suite("Learners")
struct LearnerTests {
    @Test func aLearnerGetsTheLogButIsNeverAskedToVoteAndNeverCampaigns() throws {
        var cluster = Cluster(voters: [1, 2, 3], learners: [4])
        cluster.electLeader(1)
        try cluster.propose("a", on: 1)
        #expect(cluster.appliedData(4) == ["a"])
        #expect(!cluster.sent.contains { $0.to == 4 && $0.payload.isVoteRequest })

        // Left alone for ten election timeouts, the learner still does not run.
        for voter: NodeID in [1, 2, 3] { cluster.crash(voter) }
        let term = cluster[4].term
        cluster.sent = []
        cluster.tickAll(times: 200)
        #expect(cluster[4].currentRole == .follower)
        #expect(cluster[4].term == term)
        #expect(cluster.sent.isEmpty)
    }

    @Test func aLearnerCountsNeitherForCommitNorForVotes() throws {
        var cluster = Cluster(voters: [1, 2, 3], learners: [4])
        cluster.electLeader(1)
        let committed = cluster[1].commitIndex

        cluster.crash(2)
        cluster.crash(3)
        try cluster.propose("unconfirmed", on: 1)
        #expect(cluster[4].lastIndex == cluster[1].lastIndex)
        #expect(cluster[1].commitIndex == committed)

        // Even a granted vote from the learner leaves node 1 short of a quorum.
        cluster.tickAll(times: 20)
        cluster[1].campaign()
        cluster.process(1)
        #expect(cluster[1].currentRole == .preCandidate)
        cluster.step(Message(from: 4, to: 1, term: cluster[1].term + 1, payload: .voteResponse(isPreVote: true, granted: true)))
        #expect(cluster[1].currentRole == .preCandidate)
    }

    @Test func aLearnerJoinsWithAnEmptyLogAndIsPromotedToVoter() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        try cluster.propose("before 4 joined", on: 1)

        cluster.addNode(4)
        try cluster[1].proposeConfigurationChange(.init([.addLearner(4)]))
        cluster.process(1)
        cluster.deliverAll()
        cluster.tickAll(times: 2)
        #expect(cluster[4].membership.learners == [4])
        #expect(cluster.appliedData(4) == ["before 4 joined"])
        #expect(throws: ProposalError.invalidTransferTarget(4, "not a voter of the current configuration")) {
            try cluster[1].transferLeadership(to: 4)
        }

        try cluster[1].proposeConfigurationChange(.init([.addVoter(4)]))
        cluster.process(1)
        cluster.deliverAll()
        cluster.tickAll()
        for id: NodeID in [1, 2, 3, 4] {
            #expect(cluster[id].membership.voters == [1, 2, 3, 4])
            #expect(cluster[id].membership.learners.isEmpty)
        }

        try cluster[1].transferLeadership(to: 4)
        cluster.process(1)
        cluster.deliverAll()
        #expect(cluster.leaders == [4])
    }
}
