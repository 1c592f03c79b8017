import Foundation
import Logging
import NIOCore
import NIOPosix
import RaftCore
import RaftStorage
import RaftTransport
import Synchronization
import SystemPackage
import Testing

@testable import Raft

/// A state machine whose state is one large blob: the entry "grow N" makes it N MiB of
/// deterministic bytes, so a tiny log builds a snapshot far above the transport's frame size.
final class BlobMachine: StateMachine {
    let blob = Mutex<[UInt8]>([])

    static func bytes(mebibytes: Int) -> [UInt8] {
        var block = [UInt8](repeating: 0, count: 1 << 20)
        var state: UInt64 = 0x5EED
        for i in block.indices {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            block[i] = UInt8(truncatingIfNeeded: state >> 33)
        }
        var result: [UInt8] = []
        result.reserveCapacity(mebibytes << 20)
        for n in 0..<mebibytes {
            block[0] = UInt8(truncatingIfNeeded: n)
            result += block
        }
        return result
    }

    func apply(_ entries: [CommittedEntry]) throws -> [[UInt8]] {
        for entry in entries {
            let text = String(decoding: entry.data, as: UTF8.self)
            if text.hasPrefix("grow "), let size = Int(text.dropFirst(5)) {
                let bytes = Self.bytes(mebibytes: size)
                blob.withLock { $0 = bytes }
            }
        }
        return entries.map { _ in [] }
    }

    func snapshotView() -> any StateMachineView { View(bytes: blob.withLock { $0 }) }
    func restore(from data: [UInt8]) throws { blob.withLock { $0 = data } }

    /// Writes itself in 1 MiB pieces, as a large state machine would.
    struct View: StateMachineView {
        let bytes: [UInt8]
        func serialized() -> [UInt8] { bytes }
        func write(to sink: ([UInt8]) throws -> Void) throws {
            var start = 0
            while start < bytes.count {
                let end = min(start + (1 << 20), bytes.count)
                try sink(Array(bytes[start..<end]))
                start = end
            }
        }
    }
}

/// Sends through a real TCP transport; armed, it flips one bit in the next snapshot chunk, past the
/// transport's own frame checksum, as a bad disk read or bad memory on the leader would.
final class CorruptingSender: RaftMessageSender {
    let transport: TCPTransport
    let isArmed = Mutex(false)
    init(transport: TCPTransport) { self.transport = transport }

    func send(_ messages: [Message], group: UInt64) {
        for var message in messages {
            if case .snapshotChunk(let piece, var data?) = message.payload, !data.isEmpty,
               isArmed.withLock({ armed in defer { armed = false }; return armed }) {
                data[data.count / 2] ^= 0x10
                message.payload = .snapshotChunk(piece, data: data)
            }
            transport.send(message, group: group, to: message.to)
        }
    }
}

/// Nodes of one group, each with its own TCP transport on loopback (ports chosen by the OS), WAL
/// and snapshot store, as separate processes would have.
final class TCPNodes: @unchecked Sendable {
    let loops = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    let directory = NSTemporaryDirectory() + "divan-stream-\(UUID().uuidString)"
    let ticker: RaftTicker
    var options = RaftOptions()
    var groups: [NodeID: RaftGroup] = [:]
    var machines: [NodeID: BlobMachine] = [:]
    var senders: [NodeID: CorruptingSender] = [:]
    var transports: [NodeID: TCPTransport] = [:]
    var addresses: [NodeID: SocketAddress] = [:]
    var logs: [WriteAheadLog] = []

    init() {
        options.electionTimeout = .milliseconds(300)
        options.heartbeatInterval = .milliseconds(30)
        options.applyTimeout = .seconds(20)
        ticker = RaftTicker(interval: options.heartbeatInterval)
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    func start(_ id: NodeID, bootstrap: Membership?) async throws {
        let slot = Mutex<RaftGroup?>(nil)
        let transport = TCPTransport(
            configuration: TransportConfiguration(node: id), eventLoopGroup: loops, logger: Logger(label: "test"),
            receiver: { _, message in
                guard let group = slot.withLock({ $0 }) else { return .unknownGroup }
                Task { await group.receive(message) }
                return .delivered
            },
            onPeerUnreachable: { peer in
                guard let group = slot.withLock({ $0 }) else { return }
                Task { await group.reportUnreachable(peer) }
            })
        let log = try WriteAheadLog(directory: FilePath("\(directory)/wal-\(id)"), options: WriteAheadLogOptions(segmentSize: 1 << 20))
        let machine = BlobMachine()
        let sender = CorruptingSender(transport: transport)
        let group = try await RaftGroup(
            group: 1, id: id, bootstrap: bootstrap, options: options, log: log,
            snapshots: try SnapshotStore(directory: FilePath("\(directory)/snapshots-\(id)")), sender: sender, stateMachine: machine)
        slot.withLock { $0 = group }
        addresses[id] = try await transport.start()
        for (peer, address) in addresses where peer != id {
            transport.setPeer(peer, address: address)
            transports[peer]!.setPeer(id, address: addresses[id]!)
        }
        logs.append(log)
        groups[id] = group
        machines[id] = machine
        senders[id] = sender
        transports[id] = transport
        try await group.start(ticker: ticker)
    }

    func shutDown() async {
        for group in groups.values { await group.stop() }
        ticker.stop()
        for transport in transports.values { await transport.shutdown() }
        for log in logs { log.close() }
        try? await loops.shutdownGracefully()
        try? FileManager.default.removeItem(atPath: directory)
    }

    func waitUntil(_ deadline: Duration = .seconds(60), _ condition: () async -> Bool) async throws {
        let end = ContinuousClock.now + deadline
        while ContinuousClock.now < end {
            if await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw LocalCluster.ClusterError.timedOut
    }
}

@Suite(.serialized) struct SnapshotStreamingTests {
    @Test func aSnapshotLargerThanAFrameStreamsInChunksAndACorruptedOneIsFetchedAgain() async throws {
        let nodes = TCPNodes()
        try await nodes.start(1, bootstrap: Membership(voters: [1]))
        let leader = nodes.groups[1]!
        try await nodes.waitUntil { await leader.status.role == .leader }
        _ = try await leader.apply(Array("grow 20".utf8))
        let snapshotIndex = try #require(try await leader.takeSnapshot())
        let expected = nodes.machines[1]!.blob.withLock { $0 }
        #expect(expected.count > FrameFormat.defaultMaximumFrameSize, "the snapshot cannot travel in one frame")

        try await nodes.start(2, bootstrap: nil)
        nodes.senders[1]!.isArmed.withLock { $0 = true }
        try await leader.changeMembership(ConfigurationChange([.addLearner(2)]))
        let learner = nodes.groups[2]!
        try await nodes.waitUntil { await learner.status.applied >= snapshotIndex }

        #expect(nodes.machines[2]!.blob.withLock { $0 } == expected)
        #expect(!nodes.senders[1]!.isArmed.withLock { $0 }, "a chunk was corrupted on its way")
        #expect(await learner.rejectedSnapshots == 1, "the corrupt copy was refused, the second fetch installed")
        #expect(nodes.transports[1]!.statistics.oversizedMessageDrops == 0)
        #expect(nodes.transports[1]!.statistics.messagesSent > 2 * 20, "two fetches of 20 chunks or more")

        // The learner goes on from the snapshot with the log after it.
        _ = try await leader.apply(Array("grow 1".utf8))
        try await nodes.waitUntil { nodes.machines[2]!.blob.withLock { $0.count } == 1 << 20 }
        await nodes.shutDown()
    }
}
