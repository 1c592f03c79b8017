import RaftCore
import Testing

@Suite("Replication")
struct ReplicationTests {
    @Test func aFollowerFarBehindCatchesUp() throws {
        var cluster = Cluster(voters: [1, 2, 3]) { $0.maxEntriesPerAppend = 8 }
        cluster.electLeader(1)

        cluster.isolate(3)
        for n in 0..<100 { try cluster.propose("w\(n)", on: 1) }
        #expect(cluster[1].commitIndex == 102)
        #expect(cluster[3].lastIndex == 2)

        cluster.heal()
        cluster.tickAll(times: 3)

        #expect(cluster[3].lastIndex == 102)
        #expect(cluster[3].commitIndex == 102)
        #expect(cluster.appliedData(3) == (0..<100).map { "w\($0)" })
        #expect(cluster.sent.allSatisfy { $0.payload.appendedEntries.count <= 8 })
    }

    @Test func committedEntriesSurviveARestartOfEveryNode() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        for n in 0..<3 { try cluster.propose("w\(n)", on: 1) }

        for id: NodeID in [1, 2, 3] { cluster.crash(id) }
        for id: NodeID in [1, 2, 3] { cluster.restart(id) }
        #expect(cluster.tickAll(until: { $0.leaders.count == 1 }, limit: 60) != nil)
        try cluster.propose("after the restart", on: cluster.leaders[0])
        cluster.tickAll()

        for id: NodeID in [1, 2, 3] {
            #expect(cluster.appliedData(id) == ["w0", "w1", "w2", "after the restart"])
        }
    }

    @Test func aConflictingSuffixIsReplacedWithFewRoundTrips() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        try cluster.propose("committed", on: 1)

        // Node 1, cut off, still takes twenty proposals that can never commit.
        cluster.isolate(1)
        for n in 0..<20 { try cluster.propose("lost \(n)", on: 1) }
        // 2 and 3 move on under one leader and then under the other, so the second leads with a
        // long log of later terms and begins by guessing that node 1 holds all of it.
        _ = cluster.tickAll(until: { $0.leaders.count == 2 }, limit: 60)
        let first = try #require(cluster.leaders.first { $0 != 1 })
        let second: NodeID = first == 2 ? 3 : 2
        for n in 0..<10 { try cluster.propose("kept \(n)", on: first) }
        try cluster[first].transferLeadership(to: second)
        cluster.process(first)
        cluster.deliverAll()
        #expect(cluster[second].isLeader)
        try cluster.propose("kept 10", on: second)

        cluster.heal()
        cluster.sent = []
        cluster.tickAll(times: 3)

        let rejections = cluster.sent.filter { $0.from == 1 && $0.payload.isRejectedAppendResponse }
        #expect(rejections.count >= 1)
        #expect(rejections.count <= 2, "\(rejections.count) round trips for 20 conflicting entries")
        #expect(cluster[1].lastIndex == cluster[second].lastIndex)
        for index in cluster[1].firstIndex...cluster[1].lastIndex {
            #expect(cluster[1].entry(at: index) == cluster[second].entry(at: index))
        }
        #expect(!cluster.appliedData(1).contains { $0.hasPrefix("lost") })
    }

    @Test func anEntryOfAnEarlierTermCommitsOnlyUnderAnEntryOfTheCurrentTerm() throws {
        // One entry per append lets the old entry reach a quorum before the new leader's own entry.
        var cluster = Cluster(voters: [1, 2, 3]) { $0.maxEntriesPerAppend = 1 }
        cluster.electLeader(1)
        cluster.isolate(1)
        try cluster.propose("old", on: 1)
        #expect(cluster[1].term(at: 3) == 2)
        for id: NodeID in [1, 2, 3] {
            cluster.crash(id)
            cluster.restart(id)
        }
        cluster.heal()

        // The new leader's entry is lost on its way to any follower that already took the old one.
        let newTerm = cluster[1].term + 1
        var holdsOldEntry: Set<NodeID> = []
        let losesNewEntries = { (message: Message) -> Bool in
            if case .appendResponse(let response) = message.payload, !response.isRejected, response.index == 3 {
                holdsOldEntry.insert(message.from)
            }
            return holdsOldEntry.contains(message.to) && message.payload.appendedEntries.contains { $0.term == newTerm }
        }
        cluster[1].campaign()
        cluster.process(1)
        cluster.deliverAll(dropping: losesNewEntries)
        #expect(cluster[1].term == newTerm)
        cluster.tick(1)
        cluster.deliverAll(dropping: losesNewEntries)

        #expect(cluster[1].isLeader)
        #expect(cluster[2].lastIndex == 3 && cluster[3].lastIndex == 3, "the old entry is on every node")
        #expect(cluster[1].commitIndex == 2, "but counting replicas of an old-term entry commits nothing")

        cluster.tickAll()
        #expect(cluster[1].commitIndex == 4)
        #expect(cluster.appliedData(1) == ["old"])
    }

    @Test func heartbeatsCarryOnlyACommitIndexTheFollowerHolds() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        cluster.isolate(3)
        for n in 0..<5 { try cluster.propose("w\(n)", on: 1) }

        cluster.sent = []
        cluster.tick(1)

        let heartbeats = Dictionary(uniqueKeysWithValues: cluster.sent.compactMap { message -> (NodeID, UInt64)? in
            if case .heartbeat(let commit, _) = message.payload { (message.to, commit) } else { nil }
        })
        #expect(heartbeats == [2: 7, 3: 2])
    }

    @Test func theInflightWindowBoundsOutstandingAppends() throws {
        var cluster = Cluster(voters: [1, 2, 3]) {
            $0.maxInflightMessages = 3
            $0.maxEntriesPerAppend = 1
        }
        cluster.electLeader(1)

        cluster.sent = []
        for n in 0..<10 { try cluster[1].propose(Array("w\(n)".utf8)) }
        cluster.process(1)

        let appendsTo2 = cluster.sent.filter { $0.to == 2 && $0.payload.isAppend }
        #expect(appendsTo2.count == 3)
        #expect(appendsTo2.map { $0.payload.appendedEntries.map(\.index) } == [[3], [4], [5]])

        // Each acknowledgement frees one slot in the window, until all ten are through.
        cluster.deliverAll()
        #expect(cluster[1].commitIndex == 12)
        #expect(cluster.appliedData(2) == (0..<10).map { "w\($0)" })
    }

    @Test func appendsRespectTheByteLimitButAnOversizedEntryStillGoesAlone() throws {
        var cluster = Cluster(voters: [1, 2, 3]) { $0.maxBytesPerAppend = 100 }
        cluster.electLeader(1)

        cluster.sent = []
        for _ in 0..<6 { try cluster[1].propose(Array(repeating: 7, count: 30)) }
        try cluster[1].propose(Array(repeating: 8, count: 500))
        cluster.process(1)
        cluster.deliverAll()

        let batches = cluster.sent.filter { $0.to == 2 && $0.payload.isAppend }.map { $0.payload.appendedEntries }
        // 30 bytes plus 16 of overhead: two entries fit in 100 bytes, three do not.
        #expect(batches.filter { !$0.isEmpty }.map(\.count) == [2, 2, 2, 1])
        #expect(cluster[2].commitIndex == 9)
    }
}
