import RaftCore
import Testing

@Suite("Elections")
struct ElectionTests {
    @Test func aLeaderIsElectedByTicksAlone() {
        var cluster = Cluster(voters: [1, 2, 3])

        let ticks = cluster.tickAll(until: { $0.leaders.count == 1 }, limit: 40)

        #expect(ticks != nil)
        let leader = cluster.leaders[0]
        // The followers learn of the leader from its first heartbeat, one heartbeat tick later.
        cluster.tickAll()
        for id in cluster.runningNodes {
            #expect(cluster[id].leader == leader)
            #expect(cluster[id].term == cluster[leader].term)
        }
        #expect(cluster.node(leader).events.contains(.roleChanged(.leader, term: cluster[leader].term)))
    }

    @Test func aNewLeaderSendsItsFirstEntryWithoutWaitingForAHeartbeat() {
        var cluster = Cluster(voters: [1, 2, 3])

        cluster[1].campaign()
        cluster.process(1)
        cluster.deliverAll()

        #expect(cluster[1].isLeader)
        #expect(cluster[2].leader == 1)
        #expect(cluster[1].commitIndex == 2)
    }

    @Test func electionTimeoutsAreDrawnFromOneToTwoElectionTicks() {
        var timeouts: Set<Int> = []
        for seed: UInt64 in 0..<40 {
            var cluster = Cluster(voters: [1, 2, 3], seed: seed)
            var ticks = 0
            while cluster[1].currentRole == .follower, ticks < 100 {
                cluster.tick(1)
                ticks += 1
            }
            #expect((10..<20).contains(ticks), "seed \(seed): campaigned after \(ticks) ticks")
            timeouts.insert(ticks)
        }
        // The draw really is random: forty seeds do not all land on a handful of values.
        #expect(timeouts.count >= 5)
    }

    @Test func preVoteKeepsAnIsolatedNodeFromRaisingItsTermOrDisturbingTheLeader() {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        let term = cluster[1].term

        cluster.isolate(3)
        cluster.tickAll(times: 100)
        #expect(cluster[3].term == term, "pre-vote rounds that nobody answers change no term")
        #expect(cluster[3].currentRole == .preCandidate)

        cluster.heal()
        cluster.tickAll(times: 5)
        #expect(cluster[1].isLeader)
        #expect(cluster[1].term == term)
        #expect(cluster[3].currentRole == .follower)
        #expect(cluster[3].leader == 1)
    }

    @Test func checkQuorumMakesAnIsolatedLeaderStepDownWithinAnElectionTimeout() {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)

        cluster.isolate(1)
        var ticks = 0
        while cluster[1].isLeader, ticks < 100 {
            cluster.tick(1)
            ticks += 1
        }

        // The first check may still count answers from just before the partition; the second cannot.
        #expect(ticks <= 2 * 10)
        #expect(cluster[1].currentRole == .follower)
        #expect(cluster[1].leader == noNode)
        #expect(cluster.node(1).events.contains(.roleChanged(.follower, term: cluster[1].term)))
    }

    @Test func theRestElectANewLeaderWhileTheOldOneIsCutOff() {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)

        cluster.isolate(1)
        // Two leaders of different terms may overlap until check-quorum deposes the old one.
        let ticks = cluster.tickAll(until: { $0.leaders.count == 1 && $0.leaders != [1] }, limit: 60)

        #expect(ticks != nil)
        #expect(cluster[cluster.leaders[0]].term > cluster[1].term)
    }

    @Test func aFollowerThatHeardFromItsLeaderIgnoresVotesUnlessATransferAsks() {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        cluster.tickAll(times: 3)
        let term = cluster[3].term
        func request(isTransfer: Bool) -> Message {
            Message(from: 2, to: 3, term: term + 1, payload: .voteRequest(.init(
                isPreVote: false, lastIndex: cluster[2].lastIndex, lastTerm: term, isTransfer: isTransfer)))
        }

        cluster.sent = []
        cluster.step(request(isTransfer: false))
        #expect(cluster.sent.isEmpty, "a disruptive vote request gets no answer at all")
        #expect(cluster[3].term == term)
        #expect(cluster[3].leader == 1)

        cluster.step(request(isTransfer: true))
        let ready = cluster.node(3).readies.last!
        #expect(ready.hardState == HardState(term: term + 1, vote: 2, commit: cluster[3].commitIndex))
        #expect(ready.messages.isEmpty)
        #expect(ready.messagesAfterPersist == [
            Message(from: 3, to: 2, term: term + 1, payload: .voteResponse(isPreVote: false, granted: true)),
        ])
    }

    @Test func votesLeaveOnlyAfterTheTermAndVoteArePersisted() {
        var cluster = Cluster(voters: [1, 2, 3, 4, 5])
        _ = cluster.tickAll(until: { $0.leaders.count == 1 }, limit: 40)
        let leader = cluster.leaders[0]

        for id in cluster.runningNodes {
            var disk = HardState()
            for ready in cluster.node(id).readies {
                if let hardState = ready.hardState { disk = hardState }
                #expect(!ready.messages.contains { $0.payload.isVoteResponse || $0.payload.isVoteRequest })
                for message in ready.messagesAfterPersist {
                    switch message.payload {
                    case .voteResponse(isPreVote: false, granted: true):
                        #expect(disk.term == message.term && disk.vote == message.to)
                    case .voteRequest(let request) where !request.isPreVote:
                        #expect(disk.term == message.term && disk.vote == id)
                    default:
                        break
                    }
                }
            }
        }
        #expect(cluster.node(leader).disk.hardState.vote == leader)
    }
}
