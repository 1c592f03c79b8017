import NIOCore

/// The first handler of every HTTP client connection: lets bytes through, and on a hot upgrade holds the connection
/// still at its next safe point so that it can move to the new process.
///
/// Held still means: nothing more reaches the decoder (bytes that arrive are kept here and move as pre-read bytes),
/// no more reads are asked of the socket, and everything written so far is on the wire. It stops at a moment when
/// the decoder holds nothing: either before any byte passed (a fresh connection) or right after a response ended
/// with no byte passed since, which is the case for every client that waits for a response before it sends again.
final class HandoverGate: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var context: ChannelHandlerContext?
    /// The connection is to move at its next safe point.
    private(set) var isMarked = false
    /// Reads are held (see the type's comment).
    private(set) var isFrozen = false
    /// Frozen, and every write made before freezing has completed.
    private(set) var isFlushed = false
    /// Bytes passed to the decoder since the last response ended (or since the connection opened).
    private var bytesSinceSafePoint = 0
    private var held: ByteBuffer?
    private var pendingRead = false
    /// Counts freezes, so that the flush of an earlier freeze (thawed since) does not vouch for a later one.
    private var freezes = 0

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if isFrozen {
            if held == nil { held = bytes } else { held!.writeBuffer(&bytes) }
            return
        }
        bytesSinceSafePoint += bytes.readableBytes
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if !isFrozen { context.fireChannelReadComplete() }
    }

    func read(context: ChannelHandlerContext) {
        if isFrozen {
            pendingRead = true
        } else {
            context.read()
        }
    }

    /// Asks the connection to stop at its next safe point (now, if it is at one).
    func mark() {
        isMarked = true
        if bytesSinceSafePoint == 0 { freeze() }
    }

    /// The handover was called off: go on as before.
    func unmark() {
        isMarked = false
        thaw()
    }

    /// The proxy wrote the end of a response and expects the next request: a safe point if the decoder is empty.
    func responseEnded() {
        bytesSinceSafePoint = 0
        if isMarked { freeze() }
    }

    /// Lets a frozen connection go on (a pipelined request turned up after all); it freezes again at the next safe point.
    func thaw() {
        guard isFrozen, let context else { return }
        isFrozen = false
        isFlushed = false
        if let bytes = held {
            held = nil
            bytesSinceSafePoint += bytes.readableBytes
            context.fireChannelRead(wrapInboundOut(bytes))
            context.fireChannelReadComplete()
        }
        if pendingRead {
            pendingRead = false
            context.read()
        }
    }

    /// The bytes that arrived while frozen: the start of the next request, which moves with the connection.
    func takeHeldBytes() -> ByteBuffer {
        defer { held = nil }
        return held ?? ByteBuffer()
    }

    private func freeze() {
        guard !isFrozen, let context else { return }
        isFrozen = true
        isFlushed = false
        freezes += 1
        let freeze = freezes
        // Writes complete in order: once this empty one has, the response before it is on the wire.
        let flushed = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: flushed)
        flushed.futureResult.assumeIsolated().whenSuccess { [self] in
            if isFrozen && freezes == freeze { isFlushed = true }
        }
    }
}
