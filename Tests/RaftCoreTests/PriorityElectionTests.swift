import RaftCore
import Testing

@Suite("Priority election")
struct PriorityElectionTests {
    @Test func leadershipFallsToALowerPriorityAfterDecayAndReturnsToTheHighest() throws {
        var cluster = Cluster(voters: [1, 2, 3], priorities: [1: .init(100), 2: .init(50), 3: .init(50)])
        #expect(cluster.tickAll(until: { $0.leaders == [1] }, limit: 60) != nil)
        try cluster.propose("written under 1", on: 1)

        cluster.crash(1)
        let ticks = cluster.tickAll(until: { !$0.leaders.isEmpty }, limit: 400)

        // The target priority decays 100 → 80 → 64 → 52 → 42, one step every two election
        // timeouts; a 50 node campaigns at the eighth timeout, each at most 2 × 10 ticks.
        let stand = try #require(cluster.leaders.first)
        #expect([2, 3].contains(stand))
        #expect(try #require(ticks) <= 8 * 20)
        let decays = cluster.node(stand).events.compactMap { event -> Int? in
            if case .targetPriorityDecayed(let to) = event { to.value } else { nil }
        }
        #expect(decays == [80, 64, 52, 42])
        try cluster.propose("written under \(stand)", on: stand)

        cluster.restart(1)
        #expect(cluster.tickAll(until: { $0.leaders == [1] }, limit: 60) != nil)
        #expect(cluster.node(stand).events.contains(.leadershipTransferStarted(to: 1)))
        try cluster.propose("written under 1 again", on: 1)
        cluster.tickAll()
        #expect(cluster.appliedData(1) == ["written under 1", "written under \(stand)", "written under 1 again"])
    }

    @Test(arguments: 0..<16 as Range<UInt64>)
    func aNodeOfPriorityZeroNeverLeads(seed: UInt64) throws {
        var cluster = Cluster(voters: [1, 2, 3], priorities: [1: .neverLeader, 2: .init(20), 3: .init(10)], seed: seed)
        for _ in 0..<3 {
            let leader = try #require(cluster.tickAll(until: { !$0.leaders.isEmpty }, limit: 200).map { _ in cluster.leaders[0] })
            #expect(throws: ProposalError.invalidTransferTarget(1, "its priority is 0: it never leads")) {
                try cluster[leader].transferLeadership(to: 1)
            }
            // Node 1 holds the whole log, yet neither a timeout nor an explicit campaign makes it run.
            cluster.crash(leader)
            cluster[1].campaign()
            cluster.tickAll(times: 100)
            cluster.restart(leader)
        }
        let roles = cluster.node(1).events.filter {
            if case .roleChanged(let role, _) = $0 { role != .follower } else { false }
        }
        #expect(roles.isEmpty, "seed \(seed)")
    }
}
