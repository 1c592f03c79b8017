import HotUpgrade
import NIOCore
import NIOHTTP2

/// Sits right in front of NIO's HTTP/2 handler on every HTTP/2 client connection: watches the frames both ways
/// (`HTTP2ConnectionLedger`), and on a hot upgrade brings the connection to a quiet point so that it can move.
///
/// A marked connection lets through every frame but the HEADERS that would open a new stream: from there on it
/// holds the bytes (and stops reading), so the open streams finish and no new one starts. Quiet means: no open
/// stream, every SETTINGS acknowledged both ways, NIO's handler holding no part of a frame, the send window no
/// smaller than a fresh handler's, and everything written on the wire. The held bytes then move as pre-read bytes.
/// A connection that finds no quiet point within `quietPointTimeout` gets GOAWAY and drains here instead.
///
/// In a new process the gate also resumes a moved connection: it feeds the new handler `HTTP2ResumePreface`
/// and keeps the SETTINGS acknowledgement the handler answers it with off the wire.
final class HTTP2HandoverGate: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// How long a marked connection may take to reach a quiet point before it drains with GOAWAY.
    static let quietPointTimeout = TimeAmount.seconds(2)

    /// What a capture attempt found.
    enum CaptureStep {
        /// Not quiet yet (or the writes are still on their way); try again later.
        case notYet
        /// Quiet: the connection's state; the gate holds everything still.
        case quiet(HandoverConnection.HTTP2State)
        /// Draining with GOAWAY (no quiet point in time, or it was ending anyway): it stays here.
        case draining
    }

    private var context: ChannelHandlerContext?
    private var inbound: HTTP2FrameScanner
    private var outbound = HTTP2FrameScanner(expectingPreface: false)
    private(set) var ledger: HTTP2ConnectionLedger
    /// Open streams, counted by NIO's stream delegate (`streamDelegate`).
    private let openStreams: NIOLoopBoundBox<Int>
    private var resume: HandoverConnection.HTTP2State?
    private var dropsNextSettingsAck = false

    private(set) var isMarked = false
    private var markedAt: NIODeadline?
    private var isDraining = false
    /// A HEADERS opening a stream arrived while marked: it and everything after it wait in `held`.
    private var isHolding = false
    private var held: ByteBuffer?
    private var pendingRead = false

    /// Bytes let through each way; a flush vouches for the moment these had the values it saw.
    private var traffic = Traffic()
    private var flushedAt: Traffic?
    private var flushRequestedAt: Traffic?

    private struct Traffic: Equatable {
        var inbound = 0
        var outbound = 0
    }

    /// A gate for a new connection, or for one moved here from `resume` (fed to the handler by `resumeAfterAdoption`).
    init(eventLoop: EventLoop, resuming resume: HandoverConnection.HTTP2State? = nil) {
        inbound = HTTP2FrameScanner(expectingPreface: resume == nil)
        ledger = resume.map(HTTP2ConnectionLedger.init(resuming:)) ?? HTTP2ConnectionLedger()
        openStreams = NIOLoopBoundBox(0, eventLoop: eventLoop)
        self.resume = resume
        dropsNextSettingsAck = resume != nil
    }

    /// Give this to the HTTP/2 handler, so that the gate knows how many streams are open.
    var streamDelegate: NIOHTTP2StreamDelegate { StreamCounter(open: openStreams) }

    private struct StreamCounter: NIOHTTP2StreamDelegate {
        let open: NIOLoopBoundBox<Int>
        func streamCreated(_ id: HTTP2StreamID, channel: Channel) { open.value += 1 }
        func streamClosed(_ id: HTTP2StreamID, channel: Channel) { open.value -= 1 }
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        // Until the preface has gone through, a marked connection is not quiet anyway, and passing is always safe.
        guard isMarked && !isDraining && inbound.isPastPreface else {
            pass(bytes, context: context)
            return
        }
        if held == nil { held = bytes } else { held!.writeBuffer(&bytes) }
        passHeldUpToANewStream(context: context)
    }

    func read(context: ChannelHandlerContext) {
        if isHolding {
            pendingRead = true
        } else {
            context.read()
        }
    }

    private func pass(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        for frame in inbound.scan(bytes) { ledger.received(frame) }
        traffic.inbound += bytes.readableBytes
        context.fireChannelRead(wrapInboundOut(bytes))
    }

    /// Lets through the whole frames at the front of `held` up to the first that opens a stream (which then holds
    /// everything); a frame is never cut, so NIO's handler holds no part of one.
    private func passHeldUpToANewStream(context: ChannelHandlerContext) {
        guard !isHolding, var bytes = held else { return }
        var probe = inbound
        let frames = probe.scan(bytes)
        var cut = 0
        for frame in frames {
            if let start = frame.start, frame.opensStream(after: ledger.lastClientStreamID) {
                cut = start
                isHolding = true
                break
            }
            cut = frame.end
        }
        // A frame begun before these bytes and still not complete: all of them belong to it.
        if frames.isEmpty && inbound.isInsideFrame {
            cut = bytes.readableBytes
        }
        let front = bytes.readSlice(length: cut)!
        held = bytes.readableBytes > 0 ? bytes : nil
        if front.readableBytes > 0 { pass(front, context: context) }
    }

    // MARK: Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .byteBuffer(var bytes) = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        if dropsNextSettingsAck {
            // NIO encodes each frame header in one piece, so the 9-byte acknowledgement is whole in one write.
            var probe = outbound
            if let ack = probe.scan(bytes).first(where: \.isSettingsAck), let start = ack.start {
                var kept = bytes.getSlice(at: bytes.readerIndex, length: start)!
                var rest = bytes.getSlice(at: bytes.readerIndex + ack.end, length: bytes.readableBytes - ack.end)!
                kept.writeBuffer(&rest)
                bytes = kept
                dropsNextSettingsAck = false
            }
        }
        for frame in outbound.scan(bytes) { ledger.sent(frame) }
        traffic.outbound += bytes.readableBytes
        context.write(wrapOutboundOut(.byteBuffer(bytes)), promise: promise)
    }

    // MARK: Hot upgrade

    /// Asks the connection to reach a quiet point (see the type's comment).
    func mark() {
        guard !isMarked else { return }
        isMarked = true
        markedAt = .now()
    }

    /// The handover was called off: go on as before.
    func unmark() {
        isMarked = false
        markedAt = nil
        release()
    }

    /// Lets everything held through, and reads again.
    private func release() {
        guard let context else { return }
        isHolding = false
        if let bytes = held {
            held = nil
            pass(bytes, context: context)
            context.fireChannelReadComplete()
        }
        if pendingRead {
            pendingRead = false
            context.read()
        }
    }

    /// One attempt to capture the connection; on its event loop. `.quiet` leaves it holding still, to be closed.
    func captureStep() -> CaptureStep {
        guard let context, isMarked else { return .notYet }
        if isDraining { return .draining }
        if ledger.isGoingAway { return drain(context: context, sendGoAway: false) }
        if let markedAt, NIODeadline.now() - markedAt > Self.quietPointTimeout { return drain(context: context, sendGoAway: true) }
        guard openStreams.value == 0, inbound.isAtBoundary, ledger.isSettled else { return .notYet }
        if ledger.receiveWindow < HTTP2ConnectionLedger.initialWindow {
            // A fresh handler believes the client may send 65,535 bytes: make it so here first (raising a window is
            // always allowed), through NIO's handler so that it counts the update as well.
            let increment = HTTP2ConnectionLedger.initialWindow - ledger.receiveWindow
            let update = HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: increment))
            context.channel.writeAndFlush(update, promise: nil)
        }
        guard let state = ledger.state(preRead: []) else { return .notYet }
        guard flushedAt == traffic else {
            requestFlush(context: context)
            return .notYet
        }
        var moved = state
        moved.preRead = held.map { Array($0.readableBytesView) } ?? []
        held = nil
        isHolding = true
        return .quiet(moved)
    }

    /// Writes an empty buffer behind everything written so far; once it is written, so is the rest.
    private func requestFlush(context: ChannelHandlerContext) {
        guard flushRequestedAt != traffic else { return }
        context.channel.flush()
        let seen = traffic
        flushRequestedAt = seen
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(context.channel.allocator.buffer(capacity: 0))), promise: written)
        written.futureResult.assumeIsolated().whenSuccess { [self] in
            if traffic == seen { flushedAt = seen }
        }
    }

    private func drain(context: ChannelHandlerContext, sendGoAway: Bool) -> CaptureStep {
        isDraining = true
        release()
        if sendGoAway {
            let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: .maxID, errorCode: .noError, opaqueData: nil))
            context.channel.writeAndFlush(goAway, promise: nil)
        }
        return .draining
    }

    /// In the new process, once the channel is up: brings NIO's handler to the moved connection's state, then lets
    /// the pre-read bytes through.
    func resumeAfterAdoption() {
        guard let context, let resume else { return }
        self.resume = nil
        context.fireChannelRead(wrapInboundOut(HTTP2ResumePreface.bytes(for: resume)))
        if !resume.preRead.isEmpty { pass(ByteBuffer(bytes: resume.preRead), context: context) }
        context.fireChannelReadComplete()
    }
}
