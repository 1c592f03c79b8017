import Logging
import NIOConcurrencyHelpers
import NIOCore
import RaftCore

/// What every accepted connection's handler shares with the transport.
struct InboundContext: Sendable {
    let receiver: TCPTransport.Receiver
    let counters: NIOLockedValueBox<TransportStatistics>
    let logger: Logger
    let maximumFrameSize: Int
}

/// Decodes frames on an accepted connection and performs what `InboundStateMachine` decides.
final class InboundHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let context: InboundContext
    private var decoder: FrameDecoder
    private var machine = InboundStateMachine()
    private var logger: Logger

    init(context: InboundContext) {
        self.context = context
        self.decoder = FrameDecoder(maximumFrameSize: context.maximumFrameSize)
        self.logger = context.logger
    }

    func channelActive(context channelContext: ChannelHandlerContext) {
        logger[metadataKey: "remote"] = "\(channelContext.remoteAddress.map { "\($0)" } ?? "?")"
        channelContext.fireChannelActive()
    }

    func channelRead(context channelContext: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        decoder.append(buffer.readableBytesView)
        while true {
            let action: InboundStateMachine.Action
            do {
                guard let frame = try decoder.next() else { return }
                if case .batch = frame { context.counters.withLockedValue { $0.framesReceived += 1 } }
                action = machine.received(frame)
            } catch {
                action = machine.decodingFailed(error)
            }
            guard perform(action, channelContext) else { return }
        }
    }

    func errorCaught(context channelContext: ChannelHandlerContext, error: any Error) {
        logger.debug("inbound connection error", metadata: ["error": "\(error)"])
        channelContext.close(promise: nil)
    }

    /// Performs `action`; false once the connection is closing and nothing more should be read.
    private func perform(_ action: InboundStateMachine.Action, _ channelContext: ChannelHandlerContext) -> Bool {
        switch action {
        case .none:
            return machine.state != .closed
        case .accept(let peer):
            logger[metadataKey: "peer"] = "\(peer)"
            logger.debug("peer connected")
            return true
        case .deliver(_, let messages, let spoofed):
            var unknownGroups = 0
            for message in messages where context.receiver(message.group, message.message) == .unknownGroup {
                unknownGroups += 1
            }
            context.counters.withLockedValue {
                $0.messagesDelivered += messages.count - unknownGroups
                $0.unknownGroupMessages += unknownGroups
                $0.unknownSenderMessages += spoofed
            }
            return true
        case .close(let reason):
            context.counters.withLockedValue { $0.connectionsClosedForErrors += 1 }
            logger.warning("closing peer connection", metadata: ["reason": "\(reason)"])
            channelContext.close(promise: nil)
            return false
        }
    }
}
