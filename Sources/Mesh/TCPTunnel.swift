import Logging
import NIOCore

/// The shell of one L4 tunnel: owns the state machine and performs its actions on the two channels.
final class TCPTunnel {
    private(set) var machine: TCPTunnelStateMachine
    var client: TunnelHandler?
    var upstream: TunnelHandler?
    /// Client bytes read before the upstream connected (at most one read: further reads are held).
    var earlyBytes: [ByteBuffer] = []
    /// Hot upgrade: reads are held and bytes read are kept here instead of being relayed, so the tunnel can move.
    private(set) var isFrozen = false
    /// Frozen, and everything relayed before freezing is on the wire.
    private(set) var isFlushed = false
    private(set) var heldToUpstream = ByteBuffer()
    private(set) var heldToClient = ByteBuffer()
    private var freezes = 0

    init(machine: TCPTunnelStateMachine = TCPTunnelStateMachine()) {
        self.machine = machine
    }

    func upstreamConnected() { perform(machine.upstreamConnected()) }
    func upstreamConnectFailed() { perform(machine.upstreamConnectFailed()) }
    func inputClosed(_ side: TCPTunnelStateMachine.Side) { perform(machine.inputClosed(side)) }
    func connectionClosed(_ side: TCPTunnelStateMachine.Side) { perform(machine.connectionClosed(side)) }
    func idleTimeout() { perform(machine.idleTimeout()) }

    /// Stops relaying (for a hot upgrade) and waits until what was relayed is written; open tunnels only.
    func freeze() {
        guard machine.isAtSafePoint, !isFrozen, let client, let upstream,
            let clientFlushed = client.flushBarrier(), let upstreamFlushed = upstream.flushBarrier()
        else { return }
        isFrozen = true
        isFlushed = false
        freezes += 1
        let freeze = freezes
        let bound = NIOLoopBound(self, eventLoop: clientFlushed.eventLoop)
        clientFlushed.and(upstreamFlushed).whenSuccess { _ in
            let tunnel = bound.value
            if tunnel.isFrozen && tunnel.freezes == freeze { tunnel.isFlushed = true }
        }
    }

    /// Relays again: what arrived while frozen goes on first.
    func thaw() {
        guard isFrozen else { return }
        isFrozen = false
        isFlushed = false
        if heldToUpstream.readableBytes > 0 { upstream?.write(heldToUpstream); upstream?.flush() }
        if heldToClient.readableBytes > 0 { client?.write(heldToClient); client?.flush() }
        heldToUpstream.clear()
        heldToClient.clear()
        client?.resumeReading()
        upstream?.resumeReading()
    }

    /// Keeps bytes read from `side` while frozen.
    func hold(_ bytes: ByteBuffer, from side: TCPTunnelStateMachine.Side) {
        var bytes = bytes
        switch side {
        case .client: heldToUpstream.writeBuffer(&bytes)
        case .upstream: heldToClient.writeBuffer(&bytes)
        }
    }

    private func perform(_ actions: [TCPTunnelStateMachine.Action]) {
        var pendingShutdown: EventLoopFuture<Void>?
        for action in actions {
            switch action {
            case .forwardEarlyBytes:
                for buffer in earlyBytes { upstream?.write(buffer) }
                earlyBytes = []
                upstream?.flush()
            case .startReading:
                client?.startReading()
                upstream?.startReading()
            case .shutdownOutput(let side):
                pendingShutdown = handler(side)?.shutdownOutputAfterFlush()
            case .closeBoth:
                let client = client
                let upstream = upstream
                let flushAndClose = {
                    client?.flushThenClose()
                    upstream?.flushThenClose()
                }
                if let pendingShutdown {
                    let bound = NIOLoopBound(flushAndClose, eventLoop: pendingShutdown.eventLoop)
                    pendingShutdown.whenComplete { _ in bound.value() }
                } else {
                    flushAndClose()
                }
            }
        }
    }

    private func handler(_ side: TCPTunnelStateMachine.Side) -> TunnelHandler? {
        side == .client ? client : upstream
    }

    func partner(of side: TCPTunnelStateMachine.Side) -> TunnelHandler? {
        handler(side.other)
    }
}

/// One end of a tunnel: relays bytes to the partner end, pausing reads while the partner can't keep up.
final class TunnelHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let side: TCPTunnelStateMachine.Side
    let tunnel: TCPTunnel
    private var context: ChannelHandlerContext?
    private var pendingRead = false

    init(side: TCPTunnelStateMachine.Side, tunnel: TCPTunnel) {
        self.side = side
        self.tunnel = tunnel
    }

    var channel: Channel? { context?.channel }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if tunnel.isFrozen {
            tunnel.hold(unwrapInboundIn(data), from: side)
        } else if let partner = tunnel.partner(of: side) {
            partner.write(unwrapInboundIn(data))
        } else if tunnel.machine.phase == .connecting {
            tunnel.earlyBytes.append(unwrapInboundIn(data))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        tunnel.partner(of: side)?.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        tunnel.connectionClosed(side)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            // A half-close must follow the bytes before it, so a frozen tunnel relays them first (and moves later).
            tunnel.thaw()
            tunnel.inputClosed(side)
        } else if event is IdleStateHandler.IdleStateEvent {
            if tunnel.machine.phase == .closed {
                // The tunnel ended but a flush toward a peer that stopped reading never completed.
                context.close(promise: nil)
            } else {
                tunnel.idleTimeout()
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        tunnel.connectionClosed(side)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // Backpressure: when this side can't take more, stop reading the side that feeds it.
        if context.channel.isWritable { tunnel.partner(of: side)?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        let partner = tunnel.partner(of: side)?.channel
        if tunnel.isFrozen || tunnel.machine.phase == .connecting || partner?.isWritable == false {
            pendingRead = true
        } else {
            context.read()
        }
    }

    func write(_ buffer: ByteBuffer) {
        context?.write(wrapOutboundOut(buffer), promise: nil)
    }

    func flush() {
        context?.flush()
    }

    func resumeReading() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    func startReading() {
        guard let context else { return }
        context.channel.setOption(.autoRead, value: true).whenFailure { _ in }
        resumeReading()
    }

    /// Succeeds once everything written so far is on the wire.
    func flushBarrier() -> EventLoopFuture<Void>? {
        guard let context else { return nil }
        let flushed = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: flushed)
        return flushed.futureResult
    }

    /// Closes once everything written so far is on the wire: bytes read from the other side just before it
    /// closed are delivered, not dropped.
    func flushThenClose() {
        guard let context else { return }
        let channel = context.channel
        let flushed = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(channel.allocator.buffer(capacity: 0)), promise: flushed)
        flushed.futureResult.whenComplete { _ in channel.close(promise: nil) }
    }

    /// Shuts the write half down once everything written so far is on the wire.
    func shutdownOutputAfterFlush() -> EventLoopFuture<Void>? {
        guard let context else { return nil }
        let channel = context.channel
        // Writes complete in order, so once this empty write is done everything before it is on the wire; only then
        // shut down, because a shutdown that escalates to a full close would drop writes still queued.
        let flushed = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(channel.allocator.buffer(capacity: 0)), promise: flushed)
        return flushed.futureResult.flatMap { channel.close(mode: .output) }.flatMapErrorThrowing { _ in }
    }
}
