import RaftCore
import Testing

/// Followers and learners hand proposals to the leader (etcd's MsgProp); the entry then commits like
/// any other, and a node that cannot take one tells the sender, which then knows it never commits.
@Suite("Forwarded proposals")
struct ForwardedProposalTests {
    @Test func aFollowerForwardsAndTheEntryCommitsEverywhere() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        #expect(try cluster[2].proposeOrForward(Array("from 2".utf8), id: 7) == .forwarded(to: 1))
        cluster.process(2)
        cluster.deliverAll()
        #expect(try cluster[1].proposeOrForward(Array("from 1".utf8), id: 8) == .proposed(index: 4))
        cluster.process(1)
        cluster.deliverAll()
        cluster.tickAll()
        for id: NodeID in [1, 2, 3] { #expect(cluster.appliedData(id) == ["from 2", "from 1"]) }
    }

    @Test func withoutAKnownLeaderNothingIsSent() {
        var cluster = Cluster(voters: [1, 2, 3])
        #expect(throws: ProposalError.noLeader) { try cluster[2].proposeOrForward([1], id: 1) }
    }

    @Test func aLeaderDropsForwardedProposalsDuringATransferAndFromStrangersAndSaysSo() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        let lastIndex = cluster[1].lastIndex
        cluster.step(Message(from: 9, to: 1, term: cluster[1].term, payload: .proposal(id: 3, data: [1])))
        #expect(cluster[1].lastIndex == lastIndex, "a node outside the membership cannot propose")
        cluster.isolate(3)
        try cluster[1].transferLeadership(to: 3)
        cluster.process(1)
        _ = try cluster[2].proposeOrForward([2], id: 42)
        cluster.process(2)
        cluster.deliverAll()
        #expect(cluster[1].lastIndex == lastIndex, "no proposal is taken while leadership is being handed over")
        #expect(cluster.node(2).events.contains(.forwardedProposalDropped(id: 42)))
    }

    @Test func aFollowerThatGetsAProposalSaysItDroppedIt() {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        let lastIndex = cluster[2].lastIndex
        cluster.step(Message(from: 3, to: 2, term: cluster[2].term, payload: .proposal(id: 5, data: [1])))
        cluster.deliverAll()
        #expect(cluster[2].lastIndex == lastIndex)
        #expect(cluster.node(3).events.contains(.forwardedProposalDropped(id: 5)))
    }
}
