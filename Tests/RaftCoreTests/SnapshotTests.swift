import RaftCore
import Testing

@Suite("Snapshots")
struct SnapshotTests {
    @Test func aFollowerWhoseNextEntryIsCompactedAwayGetsTheSnapshotAndCarriesOn() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        cluster.isolate(3)
        for n in 0..<10 { try cluster.propose("w\(n)", on: 1) }

        let isCompacted = cluster.compact(1, data: "state at 12")
        #expect(isCompacted)
        #expect(cluster[1].firstIndex == 13)

        cluster.heal()
        cluster.tickAll(times: 3)

        let installed = cluster.node(3).readies.compactMap(\.snapshot)
        #expect(installed.map(\.metadata.index) == [12])
        #expect(installed.first?.data == Array("state at 12".utf8))
        #expect(cluster.node(1).events.contains(.replicator(peer: 3, .stateChanged(.snapshot(index: 12)))))
        #expect(cluster[3].firstIndex == 13)
        #expect(cluster[3].commitIndex == 12)
        #expect(cluster[3].membership.voters == [1, 2, 3], "the membership comes with the snapshot")

        try cluster.propose("after the snapshot", on: 1)
        cluster.tickAll()
        #expect(cluster.appliedData(3) == ["after the snapshot"])

        // Restarted, node 3 starts from the snapshot on its disk and replays only what follows it.
        cluster.crash(3)
        cluster.restart(3)
        #expect(cluster[3].firstIndex == 13)
        #expect(cluster.node(3).restoredSnapshot?.metadata.index == 12)
        cluster.tickAll()
        #expect(cluster.appliedData(3) == ["after the snapshot"])
    }

    @Test func aNodeJoiningAfterCompactionStartsFromTheSnapshot() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        for n in 0..<3 { try cluster.propose("w\(n)", on: 1) }
        let isCompacted = cluster.compact(1, data: "state at 5")
        #expect(isCompacted)

        cluster.addNode(4)
        try cluster[1].proposeConfigurationChange(.init([.addLearner(4)]))
        cluster.process(1)
        cluster.deliverAll()
        cluster.tickAll(times: 3)

        #expect(cluster.node(4).restoredSnapshot?.data == Array("state at 5".utf8))
        #expect(cluster[4].membership.learners == [4], "the change after the snapshot reached it as an entry")
        try cluster.propose("to the newcomer", on: 1)
        #expect(cluster.appliedData(4) == ["to the newcomer"])
    }

    @Test func compactionRefusesASnapshotThatIsStaleOrAheadOfWhatIsApplied() throws {
        var cluster = Cluster(voters: [1, 2, 3])
        cluster.electLeader(1)
        try cluster.propose("x", on: 1)

        let current = cluster[1].snapshotMetadata
        var ahead = current
        ahead.index += 5
        let isAheadTaken = cluster[1].compact(Snapshot(metadata: ahead, data: []))
        let isCurrentTaken = cluster.compact(1, data: "at 3")
        let isRepeatTaken = cluster.compact(1, data: "at 3 again")
        #expect(!isAheadTaken, "a snapshot cannot cover entries not applied yet")
        #expect(isCurrentTaken)
        #expect(!isRepeatTaken, "a snapshot must be newer than the last one")
        #expect(cluster[1].firstIndex == current.index + 1)
    }
}
