import NIOCore
import NIOPosix
import Synchronization

/// A directed pair of nodes: Raft traffic from `from` to `to`.
struct Link: Hashable, Sendable {
    var from: Int
    var to: Int
}

/// The fault-injecting TCP relay the Raft traffic goes through: one listener per directed pair of
/// nodes, forwarding to the receiving node's Raft port. Divan's transport uses one connection per
/// direction (each process dials its peers to send), so blocking a link cuts exactly one direction.
///
/// A blocked link is a black hole, like a dropped packet: existing connections are cut and new ones
/// are accepted but their bytes are discarded, so the sender sees no error, only silence. Whenever a
/// link changes state its connections are closed, so a stream never resumes in the middle of a
/// frame: the sender reconnects and starts with a fresh handshake.
final class Relay: Sendable {
    let ports: [Link: Int]
    private let group: MultiThreadedEventLoopGroup
    private let listeners: [any Channel]
    private let control = RelayControl()

    /// Opens a listener on an OS-picked loopback port for every ordered pair of `nodes`;
    /// `raftPort(node)` is where that node really listens.
    init(nodes: [Int], raftPort: @escaping @Sendable (Int) -> Int) throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var ports: [Link: Int] = [:]
        var listeners: [any Channel] = []
        let control = control
        do {
            for from in nodes {
                for to in nodes where to != from {
                    let link = Link(from: from, to: to)
                    let target = raftPort(to)
                    let listener = try ServerBootstrap(group: group)
                        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                        .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                        .childChannelInitializer { channel in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(
                                    InboundRelayHandler(link: link, targetPort: target, control: control))
                            }
                        }
                        .bind(host: "127.0.0.1", port: 0).wait()
                    listeners.append(listener)
                    ports[link] = listener.localAddress?.port ?? 0
                }
            }
        } catch {
            for listener in listeners { try? listener.close().wait() }
            try? group.syncShutdownGracefully()
            throw error
        }
        self.group = group
        self.ports = ports
        self.listeners = listeners
    }

    /// Blocks exactly `links` (every other link forwards), cutting the connections of every link
    /// whose state changes.
    func block(_ links: Set<Link>) {
        for channel in control.block(links) { channel.close(promise: nil) }
    }

    /// Closes every listener and connection.
    func shutdown() {
        for listener in listeners { try? listener.close().wait() }
        for channel in control.openConnections { try? channel.close().wait() }
        try? group.syncShutdownGracefully()
    }
}

/// The relay's shared state: which links are blocked, and the open connections of each link.
final class RelayControl: Sendable {
    private let state = Mutex(State())

    private struct State {
        var blocked: Set<Link> = []
        var connections: [Link: [ObjectIdentifier: any Channel]] = [:]
    }

    /// Sets the blocked links; returns the connections of the links whose state changed.
    func block(_ links: Set<Link>) -> [any Channel] {
        state.withLock { state in
            let changed = state.blocked.symmetricDifference(links)
            state.blocked = links
            return changed.flatMap { state.connections[$0]?.values.map { $0 } ?? [] }
        }
    }

    var openConnections: [any Channel] { state.withLock { $0.connections.values.flatMap(\.values) } }

    func isBlocked(_ link: Link) -> Bool { state.withLock { $0.blocked.contains(link) } }

    func register(_ channel: any Channel, on link: Link) {
        state.withLock { $0.connections[link, default: [:]][ObjectIdentifier(channel)] = channel }
    }

    func unregister(_ channel: any Channel, on link: Link) {
        _ = state.withLock { $0.connections[link]?.removeValue(forKey: ObjectIdentifier(channel)) }
    }
}

/// The accepted side of one relayed connection: dials the target on the same event loop and
/// forwards bytes while the link is open.
final class InboundRelayHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let link: Link
    let targetPort: Int
    let control: RelayControl
    private var outbound: (any Channel)?
    private var pending: [ByteBuffer] = []

    init(link: Link, targetPort: Int, control: RelayControl) {
        self.link = link
        self.targetPort = targetPort
        self.control = control
    }

    func channelActive(context: ChannelHandlerContext) {
        let inbound = context.channel
        control.register(inbound, on: link)
        let link = link, control = control
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        ClientBootstrap(group: context.eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(1))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(OutboundRelayHandler(inbound: inbound, link: link, control: control))
                }
            }
            .connect(host: "127.0.0.1", port: targetPort)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    guard inbound.isActive else {
                        channel.close(promise: nil)
                        return
                    }
                    bound.value.connected(to: channel)
                case .failure:
                    inbound.close(promise: nil)
                }
            }
    }

    private func connected(to channel: any Channel) {
        outbound = channel
        control.register(channel, on: link)
        for buffer in pending { channel.write(buffer, promise: nil) }
        pending = []
        channel.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !control.isBlocked(link) else { return }
        let buffer = unwrapInboundIn(data)
        if let outbound {
            outbound.write(buffer, promise: nil)
        } else {
            pending.append(buffer)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        outbound?.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        control.unregister(context.channel, on: link)
        outbound?.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// The dialled side of one relayed connection: forwards what the target sends back.
final class OutboundRelayHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let inbound: any Channel
    let link: Link
    let control: RelayControl

    init(inbound: any Channel, link: Link, control: RelayControl) {
        self.inbound = inbound
        self.link = link
        self.control = control
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !control.isBlocked(link) else { return }
        inbound.writeAndFlush(unwrapInboundIn(data), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        control.unregister(context.channel, on: link)
        inbound.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
