import Foundation
import RaftCore
import RaftStorage
import Synchronization
import SystemPackage
import Testing

@testable import Raft

/// Routes messages between groups in one process; a stopped node's messages go nowhere.
final class LoopbackNetwork: RaftMessageSender {
    struct Address: Hashable {
        var group: UInt64
        var node: NodeID
    }

    let members = Mutex<[Address: RaftGroup]>([:])

    func send(_ messages: [Message], group: UInt64) {
        let members = self.members.withLock { $0 }
        for message in messages {
            guard let target = members[Address(group: group, node: message.to)],
                  members[Address(group: group, node: message.from)] != nil else { continue }
            Task { await target.receive(message) }
        }
    }
}

/// Remembers replicator events as "peer event" lines.
final class RecordingListener: ReplicatorStateListener {
    private let lines = Mutex<[String]>([])
    var events: [String] { lines.withLock { $0 } }

    func replicatorCreated(peer: NodeID) { lines.withLock { $0.append("\(peer) created") } }
    func replicatorStateChanged(peer: NodeID, to state: ReplicatorEvent) {
        let name: String
        switch state {
        case .online: name = "online"
        case .offline: name = "offline"
        case .stateChanged(let replication): name = "\(replication)"
        default: name = "other"
        }
        lines.withLock { $0.append("\(peer) \(name)") }
    }
    func replicatorError(peer: NodeID, _ reason: String) { lines.withLock { $0.append("\(peer) error") } }
    func replicatorDestroyed(peer: NodeID) { lines.withLock { $0.append("\(peer) destroyed") } }
}

/// Three nodes in one process, each with its own write-ahead log on disk.
final class LocalCluster: @unchecked Sendable {
    let network = LoopbackNetwork()
    let ticker: RaftTicker
    let directory: String
    var groups: [NodeID: RaftGroup] = [:]
    var machines: [NodeID: ReplicatedMap] = [:]
    var logs: [NodeID: WriteAheadLog] = [:]
    let membership = Membership(voters: [1, 2, 3])
    var options = RaftOptions()

    init() {
        directory = NSTemporaryDirectory() + "divan-raft-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        options.electionTimeout = .milliseconds(300)
        options.heartbeatInterval = .milliseconds(30)
        options.applyTimeout = .seconds(5)
        ticker = RaftTicker(interval: options.heartbeatInterval)
    }

    deinit {
        ticker.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    func start(_ id: NodeID, founder: Bool = true) async throws {
        let log = try WriteAheadLog(directory: FilePath("\(directory)/node-\(id)"), options: WriteAheadLogOptions(segmentSize: 1 << 20))
        let machine = ReplicatedMap()
        let snapshots = try SnapshotStore(directory: FilePath("\(directory)/snapshots-\(id)"))
        let group = try await RaftGroup(
            group: 1, id: id, bootstrap: founder ? membership : nil, options: options, log: log, snapshots: snapshots,
            sender: network, stateMachine: machine)
        logs[id] = log
        machines[id] = machine
        groups[id] = group
        network.members.withLock { $0[.init(group: 1, node: id)] = group }
        try await group.start(ticker: ticker)
    }

    /// Stops a node; the others hear that it is unreachable, as the TCP transport tells them when
    /// a peer's connection closes (a quiesced group relies on that to elect a new leader).
    func stop(_ id: NodeID) async {
        network.members.withLock { $0[.init(group: 1, node: id)] = nil }
        await groups[id]?.stop()
        groups[id] = nil
        logs[id] = nil
        for group in groups.values { await group.reportUnreachable(id) }
    }

    /// Waits until exactly one running node leads, and returns it.
    func leader(within deadline: Duration = .seconds(30)) async throws -> RaftGroup {
        let end = ContinuousClock.now + deadline
        while ContinuousClock.now < end {
            for group in groups.values where await group.status.role == .leader { return group }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ClusterError.noLeader
    }

    func waitUntil(_ deadline: Duration = .seconds(30), _ condition: () async -> Bool) async throws {
        let end = ContinuousClock.now + deadline
        while ContinuousClock.now < end {
            if await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ClusterError.timedOut
    }

    enum ClusterError: Error { case noLeader, timedOut }
}

@Suite(.serialized) struct RaftGroupTests {
    @Test func threeNodesElectALeaderAndCommitWrites() async throws {
        let cluster = LocalCluster()
        for id in NodeID(1)...3 { try await cluster.start(id) }
        let leader = try await cluster.leader()
        #expect(try await leader.apply(ReplicatedMap.Command.put(key: "x", value: "1").encoded) == [])
        #expect(try await leader.apply(ReplicatedMap.Command.put(key: "x", value: "2").encoded) == Array("1".utf8))
        try await cluster.waitUntil { cluster.machines.values.allSatisfy { $0.value(of: "x") == "2" } }
        for id in NodeID(1)...3 { await cluster.stop(id) }
    }

    @Test func aFollowerRefusesWritesDefinitelyWithALeaderHint() async throws {
        let cluster = LocalCluster()
        for id in NodeID(1)...3 { try await cluster.start(id) }
        let leader = try await cluster.leader()
        _ = try await leader.apply(ReplicatedMap.Command.put(key: "a", value: "1").encoded)
        let follower = cluster.groups.values.first { $0.id != leader.id }!
        try await cluster.waitUntil { await follower.status.leader == leader.id }
        do {
            _ = try await follower.apply(ReplicatedMap.Command.put(key: "a", value: "2").encoded)
            Issue.record("a follower accepted a write")
        } catch RaftError.definite(.notLeader(let hint)) {
            #expect(hint == leader.id)
        }
        for id in NodeID(1)...3 { await cluster.stop(id) }
    }

    @Test func aFollowerServesLinearizableReads() async throws {
        let cluster = LocalCluster()
        for id in NodeID(1)...3 { try await cluster.start(id) }
        let leader = try await cluster.leader()
        let follower = cluster.groups.first { $0.value.id != leader.id }!
        for value in 1...5 {
            _ = try await leader.apply(ReplicatedMap.Command.put(key: "k", value: "\(value)").encoded)
            // Every acknowledged write is visible to a read that starts after it, on any node.
            _ = try await follower.value.readIndex()
            #expect(cluster.machines[follower.key]!.value(of: "k") == "\(value)")
        }
        for id in NodeID(1)...3 { await cluster.stop(id) }
    }

    @Test func killingTheLeaderElectsAnotherAndLosesNoAcknowledgedWrite() async throws {
        let cluster = LocalCluster()
        for id in NodeID(1)...3 { try await cluster.start(id) }
        let first = try await cluster.leader()
        for value in 1...10 { _ = try await first.apply(ReplicatedMap.Command.put(key: "n", value: "\(value)").encoded) }
        let firstID = first.id
        let survivor = [NodeID(1), 2, 3].first { $0 != firstID }!
        let leaders = Mutex<[NodeID?]>([])
        await cluster.groups[survivor]!.addLeaderChangeListener { leader, _ in leaders.withLock { $0.append(leader) } }
        await cluster.stop(firstID)
        // How fast a new leader comes is bounded in virtual time by the simulator; wall-clock bounds
        // belong to the tests over real processes, not to a test runner sharing its threads.
        let second = try await cluster.leader()
        #expect(second.id != firstID)
        try await cluster.waitUntil { leaders.withLock { $0.last } == second.id }
        _ = try await second.apply(ReplicatedMap.Command.put(key: "n", value: "11").encoded)

        // The old leader restarts from its own log and catches up.
        try await cluster.start(firstID)
        try await cluster.waitUntil { cluster.machines[firstID]?.value(of: "n") == "11" }
        for id in NodeID(1)...3 { await cluster.stop(id) }
    }

    @Test func aLearnerJoinsCatchesUpAndServesLinearizableReads() async throws {
        let cluster = LocalCluster()
        for id in NodeID(1)...3 { try await cluster.start(id) }
        let leader = try await cluster.leader()
        for value in 1...5 { _ = try await leader.apply(ReplicatedMap.Command.put(key: "l", value: "\(value)").encoded) }
        try await cluster.start(4, founder: false)
        try await leader.changeMembership(ConfigurationChange([.addLearner(4)]))
        let learner = cluster.groups[4]!
        // Until it hears from the leader, a new learner refuses reads definitely ("no leader").
        try await cluster.waitUntil { await learner.status.leader == leader.id }
        for value in 6...10 {
            _ = try await leader.apply(ReplicatedMap.Command.put(key: "l", value: "\(value)").encoded)
            _ = try await learner.readIndex()
            #expect(cluster.machines[4]!.value(of: "l") == "\(value)")
        }
        #expect(await learner.status.membership.isLearner(4))
        for id in NodeID(1)...4 { await cluster.stop(id) }
    }

    @Test func theReplicatorListenerSeesAFollowerGoOfflineAndComeBack() async throws {
        let cluster = LocalCluster()
        for id in NodeID(1)...3 { try await cluster.start(id) }
        let leader = try await cluster.leader()
        let events = RecordingListener()
        await leader.addReplicatorStateListener(events)

        let follower = [NodeID(1), 2, 3].first { $0 != leader.id }!
        await cluster.stop(follower)
        try await cluster.waitUntil { events.events.contains("\(follower) offline") }
        try await cluster.start(follower)
        try await cluster.waitUntil { events.events.contains("\(follower) online") }
        let forFollower = events.events.filter { $0.hasPrefix("\(follower) ") }
        #expect(forFollower.firstIndex(of: "\(follower) offline")! < forFollower.lastIndex(of: "\(follower) online")!)

        for id in NodeID(1)...3 { await cluster.stop(id) }
    }

    @Test func aLearnerWhoseLogWasCompactedAwayCatchesUpFromASnapshot() async throws {
        let cluster = LocalCluster()
        for id in NodeID(1)...3 { try await cluster.start(id) }
        let leader = try await cluster.leader()
        for value in 1...20 { _ = try await leader.apply(ReplicatedMap.Command.put(key: "s\(value % 4)", value: "\(value)").encoded) }
        let snapshotIndex = try #require(try await leader.takeSnapshot())
        #expect(await leader.status.firstIndex == snapshotIndex + 1)

        try await cluster.start(4, founder: false)
        try await leader.changeMembership(ConfigurationChange([.addLearner(4)]))
        let learner = cluster.groups[4]!
        try await cluster.waitUntil { await learner.status.applied >= snapshotIndex }
        #expect(await learner.status.firstIndex > 1, "the learner started from the snapshot, not from index 1")
        _ = try await leader.apply(ReplicatedMap.Command.put(key: "s0", value: "after").encoded)
        try await cluster.waitUntil { await learner.status.leader == leader.id }
        _ = try await learner.readIndex()
        #expect(cluster.machines[4]!.value(of: "s0") == "after")
        #expect(cluster.machines[4]!.value(of: "s3") == "19")
        for id in NodeID(1)...4 { await cluster.stop(id) }
    }

    @Test func aNodeRestartsFromItsSnapshotAndTheLogAfterIt() async throws {
        let cluster = LocalCluster()
        for id in NodeID(1)...3 { try await cluster.start(id) }
        let leader = try await cluster.leader()
        let follower = [NodeID(1), 2, 3].first { $0 != leader.id }!
        for value in 1...10 { _ = try await leader.apply(ReplicatedMap.Command.put(key: "r\(value)", value: "\(value)").encoded) }
        try await cluster.waitUntil { cluster.machines[follower]!.value(of: "r10") == "10" }
        _ = try #require(try await cluster.groups[follower]!.takeSnapshot())
        for value in 11...15 { _ = try await leader.apply(ReplicatedMap.Command.put(key: "r\(value)", value: "\(value)").encoded) }
        try await cluster.waitUntil { cluster.machines[follower]!.value(of: "r15") == "15" }
        await cluster.stop(follower)
        try await cluster.start(follower)
        // Before hearing from anyone, the restarted node already holds the snapshot's state.
        #expect(cluster.machines[follower]!.value(of: "r3") == "3")
        try await cluster.waitUntil { cluster.machines[follower]!.value(of: "r15") == "15" }
        for id in NodeID(1)...3 { await cluster.stop(id) }
    }

    @Test func firstSnapshotsOfManyGroupsSpreadOverTheSecondHalfOfTheInterval() {
        let interval = Duration.seconds(3_600)
        let delays = (UInt64(1)...200).map { group in
            var random = DeterministicRandom(seed: group &* 0x9E37_79B9_7F4A_7C15 ^ 1)
            return RaftGroup.firstSnapshotDelay(interval: interval, random: &random)
        }
        #expect(delays.allSatisfy { $0 >= interval / 2 && $0 < interval })
        #expect(Set(delays).count > 190, "groups must not snapshot together")
    }

    @Test func manyGroupsShareOneTickerAndOneLogPerNode() async throws {
        let cluster = LocalCluster()
        let groupCount = 30
        var groups: [UInt64: [RaftGroup]] = [:]
        for id in NodeID(1)...3 {
            let log = try WriteAheadLog(directory: FilePath("\(cluster.directory)/node-\(id)"), options: WriteAheadLogOptions(segmentSize: 1 << 20))
            cluster.logs[id] = log
            for group in UInt64(1)...UInt64(groupCount) {
                let snapshots = try SnapshotStore(directory: FilePath("\(cluster.directory)/snapshots-\(id)-\(group)"))
                let member = try await RaftGroup(
                    group: group, id: id, bootstrap: cluster.membership, options: cluster.options, log: log,
                    snapshots: snapshots, sender: cluster.network, stateMachine: ReplicatedMap())
                cluster.network.members.withLock { $0[.init(group: group, node: id)] = member }
                groups[group, default: []].append(member)
                try await member.start(ticker: cluster.ticker)
            }
        }
        #expect(cluster.ticker.count == 3 * groupCount)
        for (_, members) in groups {
            try await cluster.waitUntil {
                var leaders = 0
                for member in members where await member.status.role == .leader { leaders += 1 }
                return leaders == 1
            }
            for member in members where await member.status.role == .leader {
                _ = try await member.apply(ReplicatedMap.Command.put(key: "k", value: "v").encoded)
            }
        }
        // All groups of one node share its log: far fewer fsyncs than groups times writes.
        let statistics = cluster.logs[1]!.statistics
        #expect(statistics.syncs < statistics.writes)
        for members in groups.values { for member in members { await member.stop() } }
    }

    @Test func nonsenseOptionsAreRejected() {
        var options = RaftOptions()
        options.electionTimeout = .milliseconds(10)
        options.heartbeatInterval = .milliseconds(10)
        #expect(throws: RaftConfigError.self) { try options.validate() }
    }
}
