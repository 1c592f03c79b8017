#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RaftCore

/// Raft messages over TCP: one outgoing connection per peer process, shared by all groups.
///
/// Thread-safe. `send` may be called from any thread; messages to one peer that are queued within
/// one event-loop turn leave as one frame.
public final class TCPTransport: Sendable {
    /// Receives every message from a peer, on an event-loop thread; it must not block.
    public typealias Receiver = @Sendable (_ group: UInt64, _ message: Message) -> DeliveryResult

    private struct Shared {
        var peers: [NodeID: Peer] = [:]
        var server: (any Channel)?
        var inbound: [ObjectIdentifier: any Channel] = [:]
        var isShutDown = false
    }

    private let configuration: TransportConfiguration
    private let group: any EventLoopGroup
    private let logger: Logger
    private let receiver: Receiver
    private let onPeerUnreachable: @Sendable (NodeID) -> Void
    private let shared = NIOLockedValueBox(Shared())
    private let counters = NIOLockedValueBox(TransportStatistics())

    /// `onPeerUnreachable` is called, on an event-loop thread, for every failed connection attempt
    /// and every lost connection, so the runtime can call `RaftNode.reportUnreachable`.
    public init(
        configuration: TransportConfiguration, eventLoopGroup: any EventLoopGroup, logger: Logger,
        receiver: @escaping Receiver, onPeerUnreachable: @escaping @Sendable (NodeID) -> Void
    ) {
        self.configuration = configuration
        self.group = eventLoopGroup
        var logger = logger
        logger[metadataKey: "node"] = "\(configuration.node)"
        self.logger = logger
        self.receiver = receiver
        self.onPeerUnreachable = onPeerUnreachable
    }

    /// The counters so far.
    public var statistics: TransportStatistics { counters.withLockedValue { $0 } }

    /// Starts listening for peers and returns the bound address.
    public func start() async throws -> SocketAddress {
        let context = InboundContext(
            receiver: receiver, counters: counters, logger: logger, maximumFrameSize: configuration.maximumFrameSize)
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [shared] channel in
                let id = ObjectIdentifier(channel)
                let isOpen = shared.withLockedValue { state in
                    if state.isShutDown { return false }
                    state.inbound[id] = channel
                    return true
                }
                guard isOpen else { return channel.close() }
                channel.closeFuture.whenComplete { _ in
                    shared.withLockedValue { _ = $0.inbound.removeValue(forKey: id) }
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(InboundHandler(context: context))
                }
            }
            .bind(host: configuration.host, port: configuration.port)
            .get()
        shared.withLockedValue { $0.server = server }
        guard let address = server.localAddress else { throw ChannelError.unknownLocalAddress }
        logger.info("transport listening", metadata: ["address": "\(address)"])
        return address
    }

    /// Sets where a peer listens. A changed address replaces the old connection.
    public func setPeer(_ node: NodeID, address: SocketAddress) {
        let replaced: Peer? = shared.withLockedValue { state in
            if state.isShutDown { return nil }
            if let existing = state.peers[node], existing.address == address { return nil }
            let old = state.peers[node]
            state.peers[node] = Peer(
                node: node, address: address, eventLoop: group.next(),
                machine: OutboundStateMachine(
                    maximumQueuedMessages: configuration.maximumQueuedMessagesPerPeer, backoff: configuration.backoff))
            return old
        }
        replaced?.shutDown()
    }

    /// Forgets a peer and closes its connection.
    public func removePeer(_ node: NodeID) {
        shared.withLockedValue { $0.peers.removeValue(forKey: node) }?.shutDown()
    }

    /// Queues `message` of `group` for `node`. Never blocks; a message that cannot be sent is dropped
    /// and counted, since Raft retransmits what matters.
    public func send(_ message: Message, group: UInt64, to node: NodeID) {
        guard let peer = shared.withLockedValue({ $0.peers[node] }) else {
            counters.withLockedValue { $0.unknownPeerMessages += 1 }
            return
        }
        let (action, dropped) = peer.machine.withLockedValue {
            $0.enqueue(GroupMessage(group: group, message: message))
        }
        if dropped > 0 { counters.withLockedValue { $0.queueOverflowDrops += dropped } }
        switch action {
        case .none: break
        case .connect: connect(peer)
        case .scheduleFlush(let connection):
            connection.channel.eventLoop.execute { self.flush(peer) }
        }
    }

    /// Stops listening and closes every connection. Call before shutting down the event loop group.
    public func shutdown() async {
        let (server, inbound, peers) = shared.withLockedValue { state in
            state.isShutDown = true
            defer { state.peers.removeAll() }
            return (state.server, Array(state.inbound.values), Array(state.peers.values))
        }
        for peer in peers { peer.shutDown() }
        try? await server?.close()
        for channel in inbound { try? await channel.close() }
    }

    private func connect(_ peer: Peer) {
        // Keepalive probes an idle connection, so that a peer cut off without a FIN or RST (a silent
        // partition) is still reported unreachable: quiet Raft groups send nothing else that would fail.
        ClientBootstrap(group: peer.eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelOption(ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: TCP_KEEPIDLE)), value: 2)
            .channelOption(ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: TCP_KEEPINTVL)), value: 1)
            .channelOption(ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: TCP_KEEPCNT)), value: 3)
            .connect(to: peer.address)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    self.connected(peer, ChannelBox(channel))
                case .failure(let error):
                    self.failed(peer, peer.machine.withLockedValue { $0.connectFailed() }, error: error)
                }
            }
    }

    private func connected(_ peer: Peer, _ connection: ChannelBox) {
        switch peer.machine.withLockedValue({ $0.connectSucceeded(connection) }) {
        case .close(let connection):
            connection.channel.close(promise: nil)
        case .handshake(let connection, let pending):
            counters.withLockedValue { $0.connectionsEstablished += 1 }
            logger.debug("connected to peer", metadata: ["peer": "\(peer.node)", "address": "\(peer.address)"])
            connection.channel.closeFuture.whenComplete { _ in
                self.failed(peer, peer.machine.withLockedValue { $0.connectionClosed(connection) }, error: nil)
            }
            // Connect results arrive on the channel's own loop (the bootstrap's), so the pipeline is ours here.
            connection.channel.eventLoop.preconditionInEventLoop()
            try? connection.channel.pipeline.syncOperations.addHandler(
                WritabilityHandler { isWritable in
                    let action = peer.machine.withLockedValue { $0.writabilityChanged(connection, isWritable: isWritable) }
                    if case .write(let connection, let messages) = action {
                        self.write(messages, to: connection.channel, peer: peer)
                    }
                })
            let handshake = FrameEncoder.encode(.handshake(node: configuration.node))
            connection.channel.write(connection.channel.allocator.buffer(bytes: handshake), promise: nil)
            write(pending, to: connection.channel, peer: peer)
        }
    }

    private func flush(_ peer: Peer) {
        guard case .write(let connection, let messages) = peer.machine.withLockedValue({ $0.flushDue() }) else { return }
        write(messages, to: connection.channel, peer: peer)
    }

    private func write(_ messages: [GroupMessage], to channel: any Channel, peer: Peer) {
        let (frames, oversized) = FrameEncoder.encodeBatches(messages, maximumFrameSize: configuration.maximumFrameSize)
        // Counted before writing, so a peer never sees a frame the counters do not show yet.
        counters.withLockedValue {
            $0.framesSent += frames.count
            $0.messagesSent += messages.count - oversized.count
            $0.oversizedMessageDrops += oversized.count
        }
        for frame in frames {
            channel.write(channel.allocator.buffer(bytes: frame), promise: nil)
        }
        channel.flush()
        // The next snapshot chunk leaves on a later turn, once this one is on its way and if the
        // socket still takes more; heartbeats queued meanwhile go ahead of it.
        if peer.machine.withLockedValue({ $0.hasQueuedBulk }) {
            channel.eventLoop.execute { self.flush(peer) }
        }
        if !oversized.isEmpty {
            logger.warning(
                "dropped messages larger than the maximum frame size",
                metadata: ["peer": "\(peer.node)", "count": "\(oversized.count)",
                           "maximumFrameSize": "\(configuration.maximumFrameSize)"])
        }
    }

    private func failed(_ peer: Peer, _ action: OutboundStateMachine<ChannelBox>.FailureAction, error: (any Error)?) {
        guard case .reportUnreachable(let delay, let dropped) = action else { return }
        counters.withLockedValue {
            $0.unreachableReports += 1
            $0.unreachableDrops += dropped
        }
        logger.debug(
            "peer unreachable",
            metadata: ["peer": "\(peer.node)", "retryIn": "\(delay)", "error": "\(error.map { "\($0)" } ?? "connection closed")"])
        onPeerUnreachable(peer.node)
        peer.eventLoop.scheduleTask(in: delay) {
            if peer.machine.withLockedValue({ $0.retryDue() }) { self.connect(peer) }
        }
    }
}

/// Tells the transport when an outgoing connection's send buffer fills up or drains.
final class WritabilityHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let onChange: @Sendable (Bool) -> Void

    init(onChange: @escaping @Sendable (Bool) -> Void) { self.onChange = onChange }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        onChange(context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    /// Outgoing connections carry no traffic back; bytes from the peer mean it is not a Divan transport.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.close(promise: nil)
    }
}

/// A channel with an identity, so the state machine can tell an old connection from the current one.
final class ChannelBox: Sendable {
    let channel: any Channel
    init(_ channel: any Channel) { self.channel = channel }
}

/// One peer process we send to.
final class Peer: Sendable {
    let node: NodeID
    let address: SocketAddress
    /// The loop that runs this peer's connection attempts and retries.
    let eventLoop: any EventLoop
    let machine: NIOLockedValueBox<OutboundStateMachine<ChannelBox>>

    init(node: NodeID, address: SocketAddress, eventLoop: any EventLoop, machine: OutboundStateMachine<ChannelBox>) {
        self.node = node
        self.address = address
        self.eventLoop = eventLoop
        self.machine = NIOLockedValueBox(machine)
    }

    func shutDown() {
        machine.withLockedValue { $0.shutDown() }?.channel.close(promise: nil)
    }
}
