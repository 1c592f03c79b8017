import Foundation
import KVWire
import Logging
import Raft
import RaftCore
import RaftStorage
import Synchronization
import SystemPackage
import Testing

@testable import KVStore

/// Routes every group's messages between the stores of one process; a stopped store gets nothing.
final class StoreNetwork: RaftMessageSender {
    let stores = Mutex<[NodeID: Store]>([:])

    func send(_ messages: [Message], group: UInt64) {
        let stores = self.stores.withLock { $0 }
        for message in messages {
            guard stores[message.from] != nil, let target = stores[message.to] else { continue }
            guard let destination = target.group(group) else {
                target.openUnknownRegion(group)
                continue
            }
            Task { await destination.receive(message) }
        }
    }
}

/// Stores in one process over a loopback network, each with its own log, snapshots and memory engine.
final class StoreCluster: @unchecked Sendable {
    let network = StoreNetwork()
    let directory: String
    let ticker: RaftTicker
    var raft = RaftOptions()
    var placement = PlacementOptions()
    var stores: [NodeID: Store] = [:]
    var logs: [NodeID: WriteAheadLog] = [:]
    var engines: [NodeID: MemoryEngine] = [:]

    init(splitKeys: Int64 = 1_000_000) {
        directory = NSTemporaryDirectory() + "divan-kv-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        raft.electionTimeout = .milliseconds(300)
        raft.heartbeatInterval = .milliseconds(30)
        raft.applyTimeout = .seconds(5)
        placement.interval = .milliseconds(100)
        placement.splitKeys = splitKeys
        ticker = RaftTicker(interval: raft.heartbeatInterval)
    }

    deinit {
        ticker.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    func start(_ id: NodeID, founders: [NodeID]?, learners: [NodeID] = []) async throws {
        let log = try WriteAheadLog(directory: FilePath("\(directory)/wal-\(id)"), options: WriteAheadLogOptions(segmentSize: 1 << 20))
        let engine = engines[id] ?? MemoryEngine()
        var options = StoreOptions(node: id, founders: founders, dataDirectory: "\(directory)/node-\(id)", raft: raft)
        options.learners = learners
        options.placement = placement
        let store = try Store(options: options, engine: engine, log: log, sender: network, ticker: ticker, logger: Logger(label: "test"))
        network.stores.withLock { $0[id] = store }
        try await store.start()
        stores[id] = store
        logs[id] = log
        engines[id] = engine
    }

    /// Stops a store; its engine stays, as a disk would.
    func stop(_ id: NodeID) async {
        network.stores.withLock { $0[id] = nil }
        // What the TCP transport does when a peer's connection drops: quiet groups wake and elect.
        for (other, store) in stores where other != id {
            for group in store.groups { await group.reportUnreachable(id) }
        }
        await stores[id]?.stop()
        logs[id]?.close()
        stores[id] = nil
        logs[id] = nil
    }

    /// Waits until every store knows a leader for every group it holds.
    func waitForLeaders() async throws {
        try await waitUntil("every group has a leader") {
            for store in stores.values {
                for group in store.groups where await group.status.leader == nil { return false }
            }
            return true
        }
    }

    /// A running node that leads no group. Stopping it leaves every leader in place, so a write
    /// right after the stop is not forwarded to a dead leader (whose outcome would be unknown).
    func nodeLeadingNoGroup() async throws -> NodeID {
        var found: NodeID?
        try await waitUntil("a node that leads no group") {
            var leaders: Set<NodeID> = []
            for store in stores.values {
                for group in store.groups where await group.status.role == .leader { leaders.insert(store.options.node) }
            }
            found = stores.keys.sorted().first { !leaders.contains($0) }
            return found != nil
        }
        return found!
    }

    /// Sets `key` through node `id`, retrying an outcome that is unknown (a SET may be repeated).
    func set(_ key: String, _ value: String, on id: NodeID) async throws {
        while true {
            do throws(KVError) {
                _ = try await service(id).write(.set(key: Array(key.utf8), value: Array(value.utf8), condition: .always, expiry: .none, returnPrevious: false))
                return
            } catch .indefinite {
                continue
            }
        }
    }

    func service(_ id: NodeID) -> NodeKVService { NodeKVService(store: stores[id]!, retryWindow: .seconds(10)) }

    func waitUntil(_ what: String, within deadline: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws {
        let end = ContinuousClock.now + deadline
        while ContinuousClock.now < end {
            if (try? await condition()) == true { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("timed out waiting until \(what)")
        throw CancellationError()
    }
}

@Suite(.serialized) struct StoreClusterTests {
    func bytes(_ text: String) -> Bytes { Array(text.utf8) }

    func value(_ service: NodeKVService, _ key: String) async throws -> String? {
        guard case .value(let value) = try await service.read(.get(key: bytes(key))) else { return nil }
        return value.map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func writesOnAnyNodeAreReadOnEveryNode() async throws {
        let cluster = StoreCluster()
        for id in NodeID(1)...3 { try await cluster.start(id, founders: [1, 2, 3]) }
        try await cluster.waitForLeaders()
        for id in NodeID(1)...3 {
            let result = try await cluster.service(id).write(.set(key: bytes("k\(id)"), value: bytes("v\(id)"), condition: .always, expiry: .none, returnPrevious: false))
            #expect(result == .set(performed: true, previous: nil))
        }
        for reader in NodeID(1)...3 {
            for id in NodeID(1)...3 { #expect(try await value(cluster.service(reader), "k\(id)") == "v\(id)") }
        }
        // Concurrent writes from a follower are batched into few proposals and all answered.
        let service = cluster.service(2)
        let results = try await withThrowingTaskGroup(of: KVWriteResult.self) { group in
            for _ in 0..<200 { group.addTask { try await service.write(.incrementBy(key: Array("counter".utf8), delta: 1)) } }
            return try await group.reduce(into: [KVWriteResult]()) { $0.append($1) }
        }
        #expect(Set(results) == Set((1...200).map { KVWriteResult.integer(Int64($0)) }))
        for id in NodeID(1)...3 { await cluster.stop(id) }
    }

    @Test func regionsSplitUnderLoadAndEveryKeySurvives() async throws {
        let cluster = StoreCluster(splitKeys: 40)
        for id in NodeID(1)...3 { try await cluster.start(id, founders: [1, 2, 3]) }
        try await cluster.waitForLeaders()
        for n in 0..<300 {
            try await cluster.set(String(format: "key%04d", n), "value\(n)", on: 1)
        }
        // Splits settle when no region is past the threshold, every node agrees on the ranges, and
        // they tile the key space (while a split applies, its new region is not listed yet).
        try await cluster.waitUntil("the regions split several times and settled", within: .seconds(60)) {
            var views: [[RegionDescriptor]] = []
            for id in NodeID(1)...3 { views.append(await cluster.stores[id]!.status().regions.map(\.region)) }
            let settled = await cluster.stores[1]!.status().regions.allSatisfy { $0.keys < 40 }
            let tiled = views[0].first?.start == [] && views[0].last?.end == nil
                && zip(views[0], views[0].dropFirst()).allSatisfy { $0.end == $1.start }
            return settled && tiled && views[0].count >= 4 && views.allSatisfy { $0 == views[0] }
        }
        let regions = await cluster.stores[1]!.status().regions
        // The ranges tile the key space.
        #expect(regions.first?.region.start == [])
        #expect(regions.last?.region.end == nil)
        for (left, right) in zip(regions, regions.dropFirst()) { #expect(left.region.end == right.region.start) }
        for reader in NodeID(1)...3 {
            let service = cluster.service(reader)
            for n in stride(from: 0, to: 300, by: 7) {
                #expect(try await value(service, String(format: "key%04d", n)) == "value\(n)")
            }
            guard case .count(let count) = try await service.read(.count(start: [], end: nil)) else { continue }
            #expect(count == 300)
            guard case .pairs(let pairs) = try await service.read(.scan(start: [], end: nil, limit: 1000, reverse: true)) else { continue }
            #expect(pairs.count == 300)
            #expect(pairs.first?.key == bytes("key0299"))
        }
        for id in NodeID(1)...3 { await cluster.stop(id) }
    }

    /// A voter added before any snapshot replays region 1's log, splits included: the regions it
    /// founds that way must have the same Raft membership as on the founders (a new region used to
    /// start there from an empty voter list, so the node counted as a group of one and led alone).
    @Test func aVoterThatReplaysSplitsFromTheLogAgreesOnEveryRegionsMembership() async throws {
        let cluster = StoreCluster(splitKeys: 40)
        for id in NodeID(1)...3 { try await cluster.start(id, founders: [1, 2, 3]) }
        try await cluster.waitForLeaders()
        try await cluster.start(4, founders: nil)
        try await cluster.stores[1]!.changeMembership(voters: [1, 2, 3, 4], learners: [])
        for n in 0..<200 { try await cluster.set(String(format: "key%04d", n), "value\(n)", on: NodeID(n % 3 + 1)) }
        try await cluster.waitUntil("every store holds every region with the same four voters", within: .seconds(60)) {
            let regions = await cluster.stores[1]!.status().regions.map(\.region.id)
            guard regions.count >= 3 else { return false }
            for id in NodeID(1)...4 {
                let store = cluster.stores[id]!
                guard await store.status().regions.map(\.region.id) == regions else { return false }
                for region in regions where await store.group(region)!.status.membership.voters.sorted() != [1, 2, 3, 4] { return false }
            }
            return true
        }
        // Written anywhere, read on the node that joined: one history per region.
        for n in 0..<30 {
            try await cluster.set(String(format: "key%04d", n * 5), "new\(n)", on: NodeID(n % 4 + 1))
            #expect(try await value(cluster.service(4), String(format: "key%04d", n * 5)) == "new\(n)")
            #expect(try await value(cluster.service(1), String(format: "key%04d", n * 5)) == "new\(n)")
        }
        for id in NodeID(1)...4 { await cluster.stop(id) }
    }

    @Test func aLearnerAddedLaterCatchesUpBySnapshotAndServesLinearizableReads() async throws {
        let cluster = StoreCluster(splitKeys: 50)
        for id in NodeID(1)...3 { try await cluster.start(id, founders: [1, 2, 3]) }
        try await cluster.waitForLeaders()
        for n in 0..<120 { try await cluster.set("k\(n)", "\(n)", on: 1) }
        try await cluster.waitUntil("a split") { await cluster.stores[1]!.status().regions.count >= 2 }
        for id in NodeID(1)...3 {
            for group in cluster.stores[id]!.groups { _ = try await group.takeSnapshot() }
        }
        try await cluster.start(4, founders: nil)
        try await cluster.stores[1]!.changeMembership(voters: [1, 2, 3], learners: [4])
        let regionCount = await cluster.stores[1]!.status().regions.count
        try await cluster.waitUntil("the learner holds every region") {
            let regions = await cluster.stores[4]!.status().regions
            return regions.count == regionCount && regions.allSatisfy { $0.region.rangeVersion > 0 }
        }
        let learner = cluster.service(4)
        for n in 0..<20 {
            try await cluster.set("k\(n)", "new\(n)", on: 1)
            #expect(try await value(learner, "k\(n)") == "new\(n)")
        }
        #expect(try await value(learner, "k100") == "100")
        for id in NodeID(1)...4 { await cluster.stop(id) }
    }

    @Test func aRestartedStoreKeepsItsEngineAndReplaysOnlyWhatItLacks() async throws {
        let cluster = StoreCluster()
        for id in NodeID(1)...3 { try await cluster.start(id, founders: [1, 2, 3]) }
        try await cluster.waitForLeaders()
        let service = cluster.service(1)
        for n in 0..<30 { _ = try await service.write(.append(key: bytes("log"), value: bytes("\(n % 10)"))) }
        // Appends are not idempotent, so no write here may end with an unknown outcome: stop a follower.
        let stopped = try await cluster.nodeLeadingNoGroup()
        await cluster.stop(stopped)
        let writer = cluster.service(stopped == 1 ? 2 : 1)
        for _ in 0..<10 { _ = try await writer.write(.append(key: bytes("log"), value: bytes("x"))) }
        try await cluster.start(stopped, founders: [1, 2, 3])
        let expected = String((0..<30).map { Character("\($0 % 10)") }) + String(repeating: "x", count: 10)
        try await cluster.waitUntil("node \(stopped) caught up") { try await value(cluster.service(stopped), "log") == expected }
        for id in NodeID(1)...3 { await cluster.stop(id) }
    }

    @Test func expiredKeysAreHiddenAtOnceAndRemovedThroughRaft() async throws {
        let cluster = StoreCluster()
        for id in NodeID(1)...3 { try await cluster.start(id, founders: [1, 2, 3]) }
        try await cluster.waitForLeaders()
        let service = cluster.service(2)
        for n in 0..<10 {
            _ = try await service.write(.set(key: bytes("t\(n)"), value: bytes("v"), condition: .always, expiry: .after(milliseconds: 200), returnPrevious: false))
        }
        _ = try await service.write(.set(key: bytes("kept"), value: bytes("v"), condition: .always, expiry: .none, returnPrevious: false))
        try await cluster.waitUntil("the keys expired for readers") { try await service.read(.count(start: [], end: nil)) == .count(1) }
        for id in NodeID(1)...3 {
            try await cluster.waitUntil("node \(id) removed the expired keys") {
                await cluster.stores[id]!.status().regions.reduce(0) { $0 + $1.keys } == 1
            }
        }
        for id in NodeID(1)...3 { await cluster.stop(id) }
    }
}
