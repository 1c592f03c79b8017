import Foundation
import RaftCore
import RaftStorage
import Synchronization
import SystemPackage
import Testing

@testable import Raft

/// Routes messages between groups in one process; a stopped node's messages go nowhere.
final class LoopbackNetwork: RaftMessageSender {
    let members = Mutex<[NodeID: RaftGroup]>([:])

    func send(_ messages: [Message], group: UInt64) {
        let members = self.members.withLock { $0 }
        for message in messages {
            guard let target = members[message.to], members[message.from] != nil else { continue }
            Task { await target.receive(message) }
        }
    }
}

/// A replicated string map: "key=value" sets, and returns the previous value.
final class MapStateMachine: StateMachine {
    let values = Mutex<[String: String]>([:])

    func apply(_ entries: [CommittedEntry]) throws -> [[UInt8]] {
        entries.map { entry in
            let text = String(decoding: entry.data, as: UTF8.self)
            let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { return [] }
            let previous = values.withLock { map in
                defer { map[parts[0]] = parts[1] }
                return map[parts[0]]
            }
            return Array((previous ?? "").utf8)
        }
    }

    func value(_ key: String) -> String? { values.withLock { $0[key] } }
}

/// Three nodes in one process, each with its own write-ahead log on disk.
final class LocalCluster: @unchecked Sendable {
    let network = LoopbackNetwork()
    let directory: String
    var groups: [NodeID: RaftGroup] = [:]
    var machines: [NodeID: MapStateMachine] = [:]
    var logs: [NodeID: WriteAheadLog] = [:]
    let membership = Membership(voters: [1, 2, 3])
    var options = RaftOptions()

    init() {
        directory = NSTemporaryDirectory() + "divan-raft-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        options.electionTimeout = .milliseconds(300)
        options.heartbeatInterval = .milliseconds(30)
        options.applyTimeout = .seconds(5)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    func start(_ id: NodeID) async throws {
        let log = try WriteAheadLog(directory: FilePath("\(directory)/node-\(id)"), options: WriteAheadLogOptions(segmentSize: 1 << 20))
        let machine = MapStateMachine()
        let group = try await RaftGroup(
            group: 1, id: id, bootstrap: membership, options: options, log: log, sender: network, stateMachine: machine)
        logs[id] = log
        machines[id] = machine
        groups[id] = group
        network.members.withLock { $0[id] = group }
        await group.start()
    }

    func stop(_ id: NodeID) async {
        network.members.withLock { $0[id] = nil }
        await groups[id]?.stop()
        groups[id] = nil
        logs[id] = nil
    }

    /// Waits until exactly one running node leads, and returns it.
    func leader(within deadline: Duration = .seconds(10)) async throws -> RaftGroup {
        let end = ContinuousClock.now + deadline
        while ContinuousClock.now < end {
            for group in groups.values where await group.status.role == .leader { return group }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ClusterError.noLeader
    }

    func waitUntil(_ deadline: Duration = .seconds(10), _ condition: () async -> Bool) async throws {
        let end = ContinuousClock.now + deadline
        while ContinuousClock.now < end {
            if await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ClusterError.timedOut
    }

    enum ClusterError: Error { case noLeader, timedOut }
}

@Suite struct RaftGroupTests {
    @Test func threeNodesElectALeaderAndCommitWrites() async throws {
        let cluster = LocalCluster()
        for id in NodeID(1)...3 { try await cluster.start(id) }
        let leader = try await cluster.leader()
        #expect(try await leader.apply(Array("x=1".utf8)) == [])
        #expect(try await leader.apply(Array("x=2".utf8)) == Array("1".utf8))
        try await cluster.waitUntil { cluster.machines.values.allSatisfy { $0.value("x") == "2" } }
        for id in NodeID(1)...3 { await cluster.stop(id) }
    }

    @Test func aFollowerRefusesWritesDefinitelyWithALeaderHint() async throws {
        let cluster = LocalCluster()
        for id in NodeID(1)...3 { try await cluster.start(id) }
        let leader = try await cluster.leader()
        _ = try await leader.apply(Array("a=1".utf8))
        let follower = cluster.groups.values.first { $0.id != leader.id }!
        try await cluster.waitUntil { await follower.status.leader == leader.id }
        do {
            _ = try await follower.apply(Array("a=2".utf8))
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
            _ = try await leader.apply(Array("k=\(value)".utf8))
            // Every acknowledged write is visible to a read that starts after it, on any node.
            _ = try await follower.value.readIndex()
            #expect(cluster.machines[follower.key]!.value("k") == "\(value)")
        }
        for id in NodeID(1)...3 { await cluster.stop(id) }
    }

    @Test func killingTheLeaderElectsAnotherAndLosesNoAcknowledgedWrite() async throws {
        let cluster = LocalCluster()
        for id in NodeID(1)...3 { try await cluster.start(id) }
        let first = try await cluster.leader()
        for value in 1...10 { _ = try await first.apply(Array("n=\(value)".utf8)) }
        let firstID = first.id
        await cluster.stop(firstID)
        let started = ContinuousClock.now
        let second = try await cluster.leader()
        #expect(second.id != firstID)
        #expect(ContinuousClock.now - started < cluster.options.electionTimeout * 3 + .seconds(1))
        _ = try await second.apply(Array("n=11".utf8))

        // The old leader restarts from its own log and catches up.
        try await cluster.start(firstID)
        try await cluster.waitUntil { cluster.machines[firstID]?.value("n") == "11" }
        for id in NodeID(1)...3 { await cluster.stop(id) }
    }

    @Test func nonsenseOptionsAreRejected() {
        var options = RaftOptions()
        options.electionTimeout = .milliseconds(10)
        options.heartbeatInterval = .milliseconds(10)
        #expect(throws: RaftConfigError.self) { try options.validate() }
    }
}
