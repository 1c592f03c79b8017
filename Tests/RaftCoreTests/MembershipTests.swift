import RaftCore
import Testing

@Suite("Membership change")
struct MembershipTests {
    @Test func replacingAVoterEntersAJointConfigurationAndLeavesItByItself() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        cluster.addNode(4)

        let index = try cluster[1].proposeConfigurationChange(.init([.addVoter(4), .remove(3)]))
        #expect(throws: ProposalError.configurationChangePending(index: index)) {
            try cluster[1].proposeConfigurationChange(.init([.addLearner(5)]))
        }
        cluster.process(1)
        cluster.deliverAll()
        cluster.tickAll(times: 3)

        let memberships = cluster.node(1).events.compactMap { event -> Membership? in
            if case .membershipChanged(let membership, _) = event { membership } else { nil }
        }
        let joint = Membership(voters: [1, 2, 4], outgoingVoters: [1, 2, 3])
        let final = Membership(voters: [1, 2, 4])
        #expect(memberships.map(\.voters) == [[1, 2, 3], joint.voters, final.voters])
        #expect(memberships.map(\.isJoint) == [false, true, false])
        #expect(memberships[1].outgoingVoters == joint.outgoingVoters)
        for id: NodeID in [1, 2, 4] {
            #expect(cluster[id].membership.voters == final.voters)
            #expect(!cluster[id].membership.isJoint)
        }
        #expect(cluster.node(1).events.contains(.replicator(peer: 3, .destroyed)))
        try cluster.propose("after the change", on: 1)
        #expect(cluster.appliedData(4) == ["after the change"])
    }

    @Test func aChangeWaitsUntilTheLeaderHasLeftTheJointConfiguration() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        for id: NodeID in [4, 5] { cluster.addNode(id) }
        try cluster[1].proposeConfigurationChange(.init([.addVoter(4), .addVoter(5)]))
        cluster.process(1)

        // Deliver until the joint entry is applied; the entry that leaves it is then pending.
        cluster.deliverAll(dropping: { $0.payload.appendedEntries.contains { $0.payload == .configuration(.leaveJoint) } })
        #expect(cluster[1].membership.isJoint)
        let error = #expect(throws: ProposalError.self) {
            try cluster[1].proposeConfigurationChange(.init([.remove(5)]))
        }
        guard case .configurationChangePending = error else {
            Issue.record("expected configurationChangePending, got \(String(describing: error))")
            return
        }

        cluster.tickAll(times: 2)
        #expect(cluster[1].membership.voters == [1, 2, 3, 4, 5])
        #expect(!cluster[1].membership.isJoint)
        try cluster[1].proposeConfigurationChange(.init([.remove(5)]))
    }

    @Test func aVoterDemotedInAJointChangeVotesUntilTheJointConfigurationIsLeftThenLearns() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        cluster.addNode(4)

        try cluster[1].proposeConfigurationChange(.init([.addLearner(3), .addVoter(4)]))
        cluster.process(1)
        cluster.deliverAll(dropping: { $0.payload.appendedEntries.contains { $0.payload == .configuration(.leaveJoint) } })
        #expect(cluster[1].membership.outgoingVoters == [1, 2, 3])
        #expect(cluster[1].membership.learnersNext == [3])
        #expect(cluster[1].membership.isVoter(3))

        cluster.tickAll(times: 2)
        for id: NodeID in [1, 2, 3, 4] {
            #expect(cluster[id].membership.voters == [1, 2, 4])
            #expect(cluster[id].membership.learners == [3])
        }
        try cluster.propose("3 still learns", on: 1)
        #expect(cluster.appliedData(3) == ["3 still learns"])
        #expect(!cluster[3].isPromotable)
    }

    @Test func aLeaderThatRemovesItselfStepsDownAndTheOthersCarryOn() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)

        try cluster[1].proposeConfigurationChange(.init([.remove(1)]))
        cluster.process(1)
        cluster.deliverAll()
        #expect(!cluster[1].isLeader)
        cluster.crash(1)

        let ticks = cluster.tickAll(until: { !$0.leaders.isEmpty }, limit: 60)
        #expect(ticks != nil)
        let leader = try #require(cluster.leaders.first)
        try cluster.propose("without 1", on: leader)
        for id: NodeID in [2, 3] {
            #expect(cluster[id].membership.voters == [2, 3])
            #expect(cluster.appliedData(id) == ["without 1"])
        }
    }

    @Test(arguments: [
        ("a node that is not a member is removed", ConfigurationChange([.remove(9)])),
        ("a node appears twice", ConfigurationChange([.addVoter(4), .addLearner(4)])),
        ("node 0 is added", ConfigurationChange([.addVoter(noNode)])),
        ("every voter is removed", ConfigurationChange([.remove(1), .remove(2), .remove(3)])),
        ("a joint configuration that is not there is left", ConfigurationChange.leaveJoint),
    ])
    func anInvalidChangeIsRejected(_ what: String, change: ConfigurationChange) throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        let error = #expect(throws: ProposalError.self, "\(what)") {
            try cluster[1].proposeConfigurationChange(change)
        }
        guard case .invalidConfigurationChange = error else {
            Issue.record("\(what): expected invalidConfigurationChange, got \(String(describing: error))")
            return
        }
        #expect(cluster[1].lastIndex == 2, "nothing was appended")
    }
}
