import Logging
import NIOCore

/// The shell of one L4 tunnel: owns the state machine and performs its actions on the two channels.
final class TCPTunnel {
    private(set) var machine: TCPTunnelStateMachine
    var client: TunnelHandler?
    var upstream: TunnelHandler?
    var onClose: (() -> Void)?

    init(machine: TCPTunnelStateMachine = TCPTunnelStateMachine()) {
        self.machine = machine
    }

    func upstreamConnected() { perform(machine.upstreamConnected()) }
    func upstreamConnectFailed() { perform(machine.upstreamConnectFailed()) }
    func inputClosed(_ side: TCPTunnelStateMachine.Side) { perform(machine.inputClosed(side)) }
    func connectionClosed(_ side: TCPTunnelStateMachine.Side) { perform(machine.connectionClosed(side)) }
    func idleTimeout() { perform(machine.idleTimeout()) }

    private func perform(_ actions: [TCPTunnelStateMachine.Action]) {
        var pendingShutdown: EventLoopFuture<Void>?
        for action in actions {
            switch action {
            case .startReading:
                client?.startReading()
                upstream?.startReading()
            case .shutdownOutput(let side):
                pendingShutdown = handler(side)?.shutdownOutputAfterFlush()
            case .closeBoth:
                let client = client?.channel
                let upstream = upstream?.channel
                let closeBoth: @Sendable () -> Void = {
                    client?.close(promise: nil)
                    upstream?.close(promise: nil)
                }
                if let pendingShutdown {
                    pendingShutdown.whenComplete { _ in closeBoth() }
                } else {
                    closeBoth()
                }
                onClose?()
                onClose = nil
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
        tunnel.partner(of: side)?.write(unwrapInboundIn(data))
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
            tunnel.inputClosed(side)
        } else if event is IdleStateHandler.IdleStateEvent {
            tunnel.idleTimeout()
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
        if let partner = tunnel.partner(of: side)?.channel, !partner.isWritable {
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
