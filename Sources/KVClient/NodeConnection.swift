import KVWire
import NIOCore
import NIOPosix
import Synchronization

/// One pipelined RESP connection to a node: commands are written as they come and replies matched
/// in order, so concurrent calls share the connection (and the node batches their writes into one
/// proposal per region). A connection that breaks or times out is closed and reopened on next use.
final class NodeConnection: Sendable {
    let host: String
    let port: Int
    let group: any EventLoopGroup
    let timeout: TimeAmount
    private let channel = Mutex<EventLoopFuture<any Channel>?>(nil)

    init(host: String, port: Int, group: any EventLoopGroup, timeout: TimeAmount) {
        self.host = host
        self.port = port
        self.group = group
        self.timeout = timeout
    }

    /// Failures of the connection itself, before any reply.
    enum Failure: Error, Sendable {
        /// The connection could not be opened: nothing was sent.
        case unreachable(String)
        /// Sent, then the connection broke or no reply came in time: the command may have run.
        case lost(String)
    }

    func send(_ arguments: [Bytes]) async throws(Failure) -> RESPReply {
        let future = connected()
        let channel: any Channel
        do {
            channel = try await future.get()
        } catch {
            forget(future)
            throw .unreachable("\(host):\(port): \(error)")
        }
        let promise = channel.eventLoop.makePromise(of: RESPReply.self)
        let command = PendingCommand(bytes: RESPReply.encode(arguments), promise: promise)
        channel.writeAndFlush(command).whenFailure { error in
            // A channel that closed before the handler saw the command never answers it.
            if !command.isQueued { promise.fail(error) }
        }
        let timeout = channel.eventLoop.scheduleTask(in: self.timeout) {
            // Replies are matched by order, so one missing reply poisons the connection: close it,
            // which fails every command still waiting on it.
            channel.close(promise: nil)
        }
        do {
            let reply = try await promise.futureResult.get()
            timeout.cancel()
            return reply
        } catch {
            timeout.cancel()
            channel.close(promise: nil)
            forget(future)
            throw .lost("\(host):\(port): \(error)")
        }
    }

    private func connected() -> EventLoopFuture<any Channel> {
        channel.withLock { current in
            if let current { return current }
            let future = ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(timeout)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(RESPClientHandler()) }
                }
                .connect(host: host, port: port)
            current = future
            return future
        }
    }

    /// Drops a connection that failed, unless another caller already replaced it.
    private func forget(_ failed: EventLoopFuture<any Channel>) {
        channel.withLock { current in
            if current === failed { current = nil }
        }
    }

    func close() {
        let future = channel.withLock { current in
            defer { current = nil }
            return current
        }
        future?.whenSuccess { $0.close(promise: nil) }
    }
}

/// A command on its way out, and where its reply goes. Used only on its channel's event loop: the
/// handler marks it queued there, and the write's failure callback reads the mark there.
final class PendingCommand: @unchecked Sendable {
    let bytes: Bytes
    let promise: EventLoopPromise<RESPReply>
    var isQueued = false

    init(bytes: Bytes, promise: EventLoopPromise<RESPReply>) {
        self.bytes = bytes
        self.promise = promise
    }
}

/// Writes commands and hands each reply to the oldest waiting command.
final class RESPClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = PendingCommand
    typealias OutboundOut = ByteBuffer

    private var parser = RESPReplyParser()
    private var waiting = CircularBuffer<EventLoopPromise<RESPReply>>()

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let command = unwrapOutboundIn(data)
        command.isQueued = true
        waiting.append(command.promise)
        context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: command.bytes)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        parser.append(buffer.readBytes(length: buffer.readableBytes) ?? [])
        do {
            while let reply = try parser.next() {
                guard let promise = waiting.popFirst() else {
                    context.close(promise: nil)
                    return
                }
                promise.succeed(reply)
            }
        } catch {
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        while let promise = waiting.popFirst() { promise.fail(ChannelError.ioOnClosedChannel) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
