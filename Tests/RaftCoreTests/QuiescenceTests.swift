import RaftCore
import Testing

@Suite("Quiescence")
struct QuiescenceTests {
    static func quietCluster(readMode: ReadMode = .safe) -> Cluster {
        Cluster(voters: [1, 2, 3]) { config in
            config.quiesceWhenIdle = true
            config.readMode = readMode
        }
    }

    static func allQuiet(_ cluster: Cluster) -> Bool {
        cluster.runningNodes.allSatisfy { cluster[$0].isQuiesced }
    }

    @Test func anIdleGroupGoesQuietAndThenSendsNothing() throws {
        var cluster = Self.quietCluster()
        cluster.electLeader(1)
        try cluster.propose("a", on: 1)
        #expect(cluster.tickAll(until: Self.allQuiet, limit: 3) != nil)

        cluster.sent = []
        cluster.tickAll(times: 100)
        #expect(cluster.sent.isEmpty, "a quiet group sends no heartbeats")
        #expect(cluster.leaders == [1])
        #expect(cluster[2].status.leader == 1, "a quiet follower still knows its leader, so it can forward reads")
    }

    @Test func aProposalWakesTheGroupItCommitsAndTheGroupGoesQuietAgain() throws {
        var cluster = Self.quietCluster()
        cluster.electLeader(1)
        #expect(cluster.tickAll(until: Self.allQuiet, limit: 3) != nil)

        try cluster.propose("b", on: 1)
        #expect(!cluster[1].isQuiesced)
        #expect(!cluster[2].isQuiesced && !cluster[3].isQuiesced, "the append woke the followers")
        cluster.tickAll(times: 1)
        #expect(cluster.appliedData(2) == ["b"])
        #expect(cluster.tickAll(until: Self.allQuiet, limit: 3) != nil)
    }

    @Test func aLeaderWithALaggingFollowerStaysAwake() throws {
        var cluster = Self.quietCluster()
        cluster.electLeader(1)
        cluster.isolate(3)
        try cluster.propose("c", on: 1)
        cluster.tickAll(times: 5)
        #expect(!cluster[1].isQuiesced, "follower 3 lacks an entry: heartbeats must go on")
        cluster.heal()
        #expect(cluster.tickAll(until: Self.allQuiet, limit: 5) != nil)
        #expect(cluster.appliedData(3) == ["c"])
    }

    @Test func followersOfADeadQuietLeaderElectOnceOneHearsItIsUnreachable() throws {
        var cluster = Self.quietCluster()
        cluster.electLeader(1)
        #expect(cluster.tickAll(until: Self.allQuiet, limit: 3) != nil)
        cluster.crash(1)

        // Quiet followers have no timer running: alone, they would wait forever.
        cluster.tickAll(times: 100)
        #expect(cluster.leaders.isEmpty)

        // The transport of one follower notices the lost connection; its campaign wakes the other.
        cluster[2].reportUnreachable(1)
        cluster.process(2)
        let ticks = cluster.tickAll(until: { !$0.leaders.isEmpty }, limit: 40)
        #expect(ticks != nil && ticks! <= 4 * 10, "a new leader within a few election timeouts")
        try cluster.propose("after", on: cluster.leaders[0])
        cluster.tickAll(times: 1)
        #expect(cluster.appliedData(2) == ["after"] && cluster.appliedData(3) == ["after"])
    }

    @Test func aQuiesceThatArrivesAfterTheLeaderWasReportedUnreachableIsIgnored() throws {
        var cluster = Self.quietCluster()
        cluster.electLeader(1)
        let term = cluster[1].term
        cluster.crash(1)
        // The transport reports the lost connection before a quiesce sent just before the crash arrives.
        cluster[2].reportUnreachable(1)
        cluster.step(Message(from: 1, to: 2, term: term, payload: .quiesce(commit: cluster[2].commitIndex)))
        #expect(!cluster[2].isQuiesced, "it would sleep forever with its leader dead")
        #expect(cluster.tickAll(until: { !$0.leaders.isEmpty }, limit: 40) != nil)
    }

    @Test func aQuietLeaderKeepsNoLeaseAndConfirmsAReadWithARound() throws {
        var cluster = Self.quietCluster(readMode: .leaseBased)
        cluster.electLeader(1)
        #expect(cluster.tickAll(until: Self.allQuiet, limit: 3) != nil)
        cluster.tickAll(times: 50)

        try cluster[1].readIndex(context: 7)
        cluster.process(1)
        #expect(cluster.node(1).readStates.isEmpty, "the lease ran out while quiet: no read without a round")
        cluster.deliverAll()
        #expect(cluster.node(1).readStates.map(\.context) == [7])
    }

    @Test func aLateHeartbeatAnswerDoesNotWakeAQuietLeader() throws {
        var cluster = Self.quietCluster()
        cluster.electLeader(1)
        #expect(cluster.tickAll(until: Self.allQuiet, limit: 3) != nil)
        cluster.step(Message(from: 2, to: 1, term: cluster[1].term, payload: .heartbeatResponse(readRound: 1)))
        #expect(cluster[1].isQuiesced)
        cluster.step(Message(from: 2, to: 1, term: cluster[1].term, payload: .readIndexRequest(context: 1)))
        #expect(!cluster[1].isQuiesced, "any other message wakes it")
    }
}
