import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RaftCore
import Testing

@testable import RaftTransport

struct TimedOut: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Polls `condition` until it holds or the deadline passes; a test never sleeps and hopes.
func eventually(_ what: String, within timeout: Duration = .seconds(10), _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        guard ContinuousClock.now < deadline else { throw TimedOut(what: what) }
        try await Task.sleep(for: .milliseconds(2))
    }
}

/// What a node's receiver and unreachable callback saw.
final class Inbox: Sendable {
    let knownGroups: Set<UInt64>?
    private let received = NIOLockedValueBox<[GroupMessage]>([])
    private let unreachable = NIOLockedValueBox<[NodeID]>([])

    init(knownGroups: Set<UInt64>?) { self.knownGroups = knownGroups }

    func receive(_ group: UInt64, _ message: Message) -> DeliveryResult {
        if let knownGroups, !knownGroups.contains(group) { return .unknownGroup }
        received.withLockedValue { $0.append(GroupMessage(group: group, message: message)) }
        return .delivered
    }

    func reportUnreachable(_ node: NodeID) { unreachable.withLockedValue { $0.append(node) } }

    var messages: [GroupMessage] { received.withLockedValue { $0 } }
    var unreachableReports: [NodeID] { unreachable.withLockedValue { $0 } }
}

/// A transport on its own one-thread event loop group, so "one event-loop turn" is easy to arrange.
struct TestNode {
    let id: NodeID
    let group: MultiThreadedEventLoopGroup
    let transport: TCPTransport
    let inbox: Inbox
    let address: SocketAddress

    static func start(_ id: NodeID, port: Int = 0, knownGroups: Set<UInt64>? = nil) async throws -> TestNode {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let inbox = Inbox(knownGroups: knownGroups)
        var logger = Logger(label: "divan.transport.test")
        logger.logLevel = .warning
        let transport = TCPTransport(
            configuration: TransportConfiguration(
                node: id, port: port, backoff: Backoff(initial: .milliseconds(10), maximum: .milliseconds(100))),
            eventLoopGroup: group, logger: logger,
            receiver: { inbox.receive($0, $1) }, onPeerUnreachable: { inbox.reportUnreachable($0) })
        do {
            let address = try await transport.start()
            return TestNode(id: id, group: group, transport: transport, inbox: inbox, address: address)
        } catch {
            try await group.shutdownGracefully()
            throw error
        }
    }

    func stop() async throws {
        await transport.shutdown()
        try await group.shutdownGracefully()
    }

    func heartbeat(to node: NodeID, commit: UInt64 = 0) -> Message { Samples.heartbeat(from: id, to: node, commit: commit) }
}

/// Starts nodes, runs `body`, and stops every node whatever happens.
func withNodes(_ ids: [NodeID], knownGroups: Set<UInt64>? = nil, _ body: ([TestNode]) async throws -> Void) async throws {
    var nodes: [TestNode] = []
    do {
        for id in ids { nodes.append(try await TestNode.start(id, knownGroups: knownGroups)) }
        for node in nodes {
            for peer in nodes where peer.id != node.id { node.transport.setPeer(peer.id, address: peer.address) }
        }
        try await body(nodes)
    } catch {
        for node in nodes { try? await node.stop() }
        throw error
    }
    for node in nodes { try await node.stop() }
}

/// Opens a plain TCP connection, writes `bytes`, and waits for the server to close it.
func sendRaw(_ bytes: [UInt8], to address: SocketAddress, on group: any EventLoopGroup) async throws {
    let channel = try await ClientBootstrap(group: group).connect(to: address).get()
    try await channel.writeAndFlush(channel.allocator.buffer(bytes: bytes))
    try await eventually("the server to close a connection that sent bad bytes") { !channel.isActive }
}

@Suite(.timeLimit(.minutes(1))) struct TransportTests {
    @Test func twoNodesExchangeMessagesForSeveralGroupsInBothDirections() async throws {
        try await withNodes([1, 2]) { nodes in
            let (a, b) = (nodes[0], nodes[1])
            for group in UInt64(1)...5 {
                for commit in UInt64(1)...3 {
                    a.transport.send(a.heartbeat(to: 2, commit: commit), group: group, to: 2)
                    b.transport.send(b.heartbeat(to: 1, commit: commit), group: group, to: 1)
                }
            }
            try await eventually("15 messages each way") { a.inbox.messages.count == 15 && b.inbox.messages.count == 15 }
            for (node, sender) in [(a, NodeID(2)), (b, NodeID(1))] {
                for group in UInt64(1)...5 {
                    let commits = node.inbox.messages.filter { $0.group == group }.map { message -> UInt64 in
                        #expect(message.message.from == sender)
                        guard case .heartbeat(let commit, _) = message.message.payload else { return 0 }
                        return commit
                    }
                    #expect(commits == [1, 2, 3], "group \(group) keeps its order")
                }
            }
            #expect(a.inbox.unreachableReports.isEmpty)
        }
    }

    @Test func sendsWithinOneEventLoopTurnLeaveAsOneFrame() async throws {
        try await withNodes([1, 2]) { nodes in
            let (a, b) = (nodes[0], nodes[1])
            a.transport.send(a.heartbeat(to: 2), group: 1, to: 2)
            try await eventually("the connection to open") { b.inbox.messages.count == 1 }
            let before = b.transport.statistics.framesReceived

            // 200 sends in one turn of the only event loop: one flush, one frame.
            try await a.group.next().submit {
                for group in UInt64(0)..<200 { a.transport.send(a.heartbeat(to: 2), group: group, to: 2) }
            }.get()
            try await eventually("the batch") { b.inbox.messages.count == 201 }
            let batched = b.transport.statistics.framesReceived - before
            #expect(batched == 1)

            // The same 200 sends, one per turn: one frame each.
            for group in UInt64(0)..<200 {
                try await a.group.next().submit { a.transport.send(a.heartbeat(to: 2), group: group, to: 2) }.get()
            }
            try await eventually("the unbatched sends") { b.inbox.messages.count == 401 }
            let unbatched = b.transport.statistics.framesReceived - before - batched
            #expect(unbatched > 100 * batched)
            #expect(a.transport.statistics.messagesSent == 401)
        }
    }

    @Test func badBytesCloseOnlyTheirConnection() async throws {
        try await withNodes([1, 2]) { nodes in
            let (a, b) = (nodes[0], nodes[1])
            a.transport.send(a.heartbeat(to: 2), group: 1, to: 2)
            try await eventually("the connection to open") { b.inbox.messages.count == 1 }

            var oversized = FrameEncoder.encode(.handshake(node: 9))
            oversized.replaceSubrange(5..<9, with: [0x00, 0x00, 0x00, 0x10])  // a 256 MiB body
            var wrongVersion = FrameEncoder.encode(.handshake(node: 9))
            wrongVersion[4] = 99
            let noHandshake = FrameEncoder.encode(.batch([GroupMessage(group: 1, message: Samples.heartbeat(from: 9))]))
            for bad in [Array("garbage, not a frame".utf8), oversized, wrongVersion, noHandshake] {
                try await sendRaw(bad, to: b.address, on: a.group)
            }
            #expect(b.transport.statistics.connectionsClosedForErrors == 4)

            // The established peer connection and the other direction still work.
            a.transport.send(a.heartbeat(to: 2, commit: 7), group: 1, to: 2)
            b.transport.send(b.heartbeat(to: 1, commit: 7), group: 1, to: 1)
            try await eventually("both directions after the bad peers") {
                b.inbox.messages.count == 2 && a.inbox.messages.count == 1
            }
            #expect(a.inbox.unreachableReports.isEmpty)
        }
    }

    @Test func unknownGroupsAndSpoofedSendersAreDroppedAndCounted() async throws {
        try await withNodes([1, 2], knownGroups: [1]) { nodes in
            let (a, b) = (nodes[0], nodes[1])
            a.transport.send(a.heartbeat(to: 2), group: 1, to: 2)
            a.transport.send(a.heartbeat(to: 2), group: 2, to: 2)
            a.transport.send(a.heartbeat(to: 2), group: 3, to: 2)
            a.transport.send(Samples.heartbeat(from: 99, to: 2), group: 1, to: 2)
            a.transport.send(a.heartbeat(to: 2), group: 1, to: 42)  // no such peer
            try await eventually("the receiver's counters") {
                let statistics = b.transport.statistics
                return statistics.unknownGroupMessages == 2 && statistics.unknownSenderMessages == 1
            }
            #expect(b.inbox.messages.map(\.group) == [1])
            #expect(b.transport.statistics.messagesDelivered == 1)
            #expect(a.transport.statistics.unknownPeerMessages == 1)
        }
    }

    @Test func unreachablePeerIsReportedAndRetriedWithBackoff() async throws {
        // Take a port the OS chose, then free it, so nothing listens there.
        let ghost = try await TestNode.start(3)
        try await ghost.stop()
        try await withNodes([1]) { nodes in
            let a = nodes[0]
            a.transport.setPeer(3, address: ghost.address)
            a.transport.send(a.heartbeat(to: 3), group: 1, to: 3)
            try await eventually("repeated unreachable reports") { a.inbox.unreachableReports.count >= 3 }
            #expect(Set(a.inbox.unreachableReports) == [3])
            #expect(a.transport.statistics.unreachableDrops == 1)
        }
    }

    @Test func aPeerThatStopsReadingFillsOnlyTheBoundedQueue() async throws {
        // A "peer" that accepts and never reads: the kernel's buffers fill, then the channel's.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let silent = try await ServerBootstrap(group: group)
            .childChannelOption(.autoRead, value: false)
            .bind(host: "127.0.0.1", port: 0).get()
        let inbox = Inbox(knownGroups: nil)
        let transport = TCPTransport(
            configuration: TransportConfiguration(node: 1, maximumQueuedMessagesPerPeer: 16),
            eventLoopGroup: group, logger: Logger(label: "divan.transport.test"),
            receiver: { inbox.receive($0, $1) }, onPeerUnreachable: { inbox.reportUnreachable($0) })
        do {
            transport.setPeer(2, address: silent.localAddress!)
            let entry = Entry(term: 1, index: 1, payload: .normal(Array(repeating: 7, count: 64 * 1024)))
            let append = Samples.message(.append(Message.Append(previousIndex: 0, previousTerm: 0, entries: [entry], commit: 0)))
            // One send per event-loop turn, 64 MiB in all: far more than the kernel's socket buffers
            // hold. Without back-pressure every message would be written into the channel's buffer.
            let sends = 1_000
            for _ in 0..<sends {
                try await group.next().submit { transport.send(append, group: 1, to: 2) }.get()
            }
            let statistics = transport.statistics
            #expect(statistics.queueOverflowDrops > 0)
            #expect(statistics.messagesSent < sends / 2, "most messages never reached the channel")
            #expect(statistics.messagesSent + statistics.queueOverflowDrops + 16 >= sends)
        } catch {
            await transport.shutdown()
            try await silent.close()
            try await group.shutdownGracefully()
            throw error
        }
        await transport.shutdown()
        try await silent.close()
        try await group.shutdownGracefully()
    }

    @Test func reconnectsAfterThePeerRestarts() async throws {
        try await withNodes([1]) { nodes in
            let a = nodes[0]
            var b = try await TestNode.start(2)
            do {
                a.transport.setPeer(2, address: b.address)
                a.transport.send(a.heartbeat(to: 2), group: 1, to: 2)
                try await eventually("the first delivery") { b.inbox.messages.count == 1 }

                try await b.stop()
                try await eventually("the lost peer to be reported") { a.inbox.unreachableReports.contains(2) }

                b = try await TestNode.start(2, port: b.address.port!)
                // Raft keeps sending heartbeats; so does this test, until the new process hears one.
                try await eventually("delivery to the restarted peer") {
                    a.transport.send(a.heartbeat(to: 2, commit: 9), group: 1, to: 2)
                    return !b.inbox.messages.isEmpty
                }
                #expect(a.transport.statistics.connectionsEstablished >= 2)
            } catch {
                try? await b.stop()
                throw error
            }
            try await b.stop()
        }
    }
}
