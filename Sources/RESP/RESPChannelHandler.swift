import KVWire
import Logging
import NIOCore

/// Performs what `ConnectionStateMachine` decides for one client connection: writes, closes and
/// KV service calls. It holds back reads while the machine wants no input (back-pressure).
final class RESPChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let service: any KVService
    private let server: ServerContext
    private let logger: Logger
    private var machine: ConnectionStateMachine?
    private var context: ChannelHandlerContext?
    /// A read the pipeline asked for while the machine wanted no input.
    private var isReadPending = false
    /// A flush is already scheduled for writes made by call completions.
    private var isFlushScheduled = false
    /// Running calls: their tasks (cancelled when they time out) and their timeouts (cancelled when
    /// they answer).
    private var tasks: [UInt64: Task<Void, Never>] = [:]
    private var timers: [UInt64: Scheduled<Void>] = [:]

    init(service: any KVService, server: ServerContext, logger: Logger) {
        self.service = service
        self.server = server
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        let session = Session(
            id: server.clients.connect(),
            isAuthenticated: server.options.password == nil,
            remoteAddress: Self.describe(context.channel.remoteAddress),
            localAddress: Self.describe(context.channel.localAddress),
            connectedAt: server.now()
        )
        machine = ConnectionStateMachine(session: session, server: server)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if machine != nil { server.clients.disconnect() }
        machine = nil
        // Calls already sent run to the end, as Redis runs a departed client's commands; only the
        // timers that would answer them go.
        for timer in timers.values { timer.cancel() }
        timers = [:]
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let actions = machine?.received(unwrapInboundIn(data)) else { return }
        perform(actions, flushNow: true)
    }

    func read(context: ChannelHandlerContext) {
        if machine?.wantsInput ?? true, context.channel.isWritable {
            context.read()
        } else {
            isReadPending = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        maybeResumeReading()
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("RESP connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    private func perform(_ actions: [ConnectionStateMachine.Action], flushNow: Bool) {
        guard let context else { return }
        for action in actions {
            switch action {
            case .write(let buffer):
                context.write(wrapOutboundOut(buffer), promise: nil)
                if flushNow { context.flush() } else { scheduleFlush() }
            case .start(let id, let call):
                start(id, call, context)
            case .close:
                context.flush()
                context.close(promise: nil)
                return
            }
        }
        maybeResumeReading()
    }

    /// Completions arrive one by one from many tasks; one flush per event-loop turn sends their
    /// replies together.
    private func scheduleFlush() {
        guard !isFlushScheduled, let context else { return }
        isFlushScheduled = true
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.execute {
            handler.value.isFlushScheduled = false
            handler.value.context?.flush()
        }
    }

    private func start(_ id: UInt64, _ call: KVCall, _ context: ChannelHandlerContext) {
        let eventLoop = context.eventLoop
        let handler = NIOLoopBound(self, eventLoop: eventLoop)
        let timeout = server.options.commandTimeout
        let service = self.service
        tasks[id] = Task {
            let reply = await call.run(service)
            eventLoop.execute {
                handler.value.timers.removeValue(forKey: id)?.cancel()
                handler.value.tasks[id] = nil
                handler.value.complete(id, reply: reply)
            }
        }
        // Never hang: a service that does not answer in time gets the timeout reply and is asked
        // to stop; if it answers anyway, the state machine drops the late reply.
        timers[id] = eventLoop.scheduleTask(in: .milliseconds(timeout)) {
            handler.value.timers[id] = nil
            handler.value.tasks.removeValue(forKey: id)?.cancel()
            handler.value.complete(id, reply: call.timeoutReply(milliseconds: timeout))
        }
    }

    private func complete(_ id: UInt64, reply: RESPValue) {
        guard let actions = machine?.completed(id, reply: reply) else { return }
        perform(actions, flushNow: false)
    }

    private func maybeResumeReading() {
        guard let context, isReadPending, machine?.wantsInput ?? false, context.channel.isWritable else { return }
        isReadPending = false
        context.read()
    }

    private static func describe(_ address: SocketAddress?) -> String {
        guard let address, let ip = address.ipAddress, let port = address.port else { return "?" }
        return address.protocol == .inet6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}
