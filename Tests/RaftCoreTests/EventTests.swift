import RaftCore
import Testing

@Suite("Events")
struct EventTests {
    @Test func aFollowerCutOffAndHealedGoesOfflineThenOnlineInTheLeadersEvents() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)

        cluster.isolate(3)
        try cluster.propose("while 3 is away", on: 1)
        cluster.tickAll(times: 20)
        cluster.heal()
        cluster.tickAll(times: 2)
        try cluster[1].transferLeadership(to: 2)
        cluster.process(1)
        cluster.deliverAll()

        let aboutNode3 = cluster.node(1).events.compactMap { event -> ReplicatorEvent? in
            if case .replicator(peer: 3, let what) = event { what } else { nil }
        }
        #expect(aboutNode3 == [
            .created, .stateChanged(.replicate),
            .offline,
            // Back, it rejects the append pipelined past its log, is probed, and is replicated to again.
            .online, .stateChanged(.probe), .stateChanged(.replicate),
            .destroyed,
        ])
    }

    @Test func roleAndLeaderChangesAreReportedOnEveryNode() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        try cluster[1].transferLeadership(to: 2)
        cluster.process(1)
        cluster.deliverAll()
        // Node 1 learns of its successor from the new leader's first heartbeat.
        cluster.tickAll()

        func roleAndLeaderEvents(_ id: NodeID) -> [RaftEvent] {
            cluster.node(id).events.filter {
                switch $0 {
                case .roleChanged, .leaderChanged: true
                default: false
                }
            }
        }
        #expect(roleAndLeaderEvents(1) == [
            .roleChanged(.preCandidate, term: 1), .roleChanged(.candidate, term: 2),
            .leaderChanged(1, term: 2), .roleChanged(.leader, term: 2),
            .leaderChanged(nil, term: 3), .roleChanged(.follower, term: 3),
            .leaderChanged(2, term: 3),
        ])
        #expect(roleAndLeaderEvents(2) == [
            .leaderChanged(1, term: 2),
            .leaderChanged(nil, term: 3), .roleChanged(.candidate, term: 3),
            .leaderChanged(2, term: 3), .roleChanged(.leader, term: 3),
        ])
    }

    @Test func anUnreachableReportTakesTheFollowerOffline() {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)

        cluster[1].reportUnreachable(3)
        cluster.process(1)

        #expect(Array(cluster.node(1).events.suffix(3)) == [
            .replicator(peer: 3, .stateChanged(.probe)),
            .replicator(peer: 3, .error("unreachable")),
            .replicator(peer: 3, .offline),
        ])
        #expect(cluster[1].status.followers[3]?.isOnline == false)
    }
}
