import Logging
import NIOCore
import NIOHTTP1

/// Everything a client connection's handlers need from the proxy, shared by all connections of a listener.
struct ListenerContext: Sendable {
    let config: ListenerConfig
    let clusters: [String: Cluster]
    let metrics: MeshMetrics.ListenerInstruments?
    let logger: Logger
}

/// The upstream side of a proxied HTTP request, on a pooled HTTP/1.1 connection or an HTTP/2 stream: relays
/// response parts to the client handler that leases it.
final class UpstreamHTTPHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    /// The client connection using this upstream now; `nil` while pooled. Both live on the same event loop.
    weak var owner: HTTPProxyHandler?
    private var readsPaused = false
    private var pendingRead = false
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let owner else {
            // Bytes on a pooled connection answer nothing we sent: the connection is no longer trustworthy.
            context.close(promise: nil)
            return
        }
        let part = unwrapInboundIn(data)
        // Interim responses (103 Early Hints and the like) are not relayed: HTTP/1.1 upstreams have them dropped by
        // the decoder, and an HTTP/2 stream hands them over like a final head.
        if case .head(let head) = part, (100..<200).contains(head.status.code) { return }
        owner.upstreamRead(part)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        owner?.upstreamReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        owner?.upstreamInactive()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        owner?.upstreamWritabilityChanged(isWritable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if readsPaused {
            pendingRead = true
        } else {
            context.read()
        }
    }

    /// Stops reading from the upstream while the client can't take more (backpressure).
    func setReadsPaused(_ paused: Bool) {
        readsPaused = paused
        if !paused && pendingRead, let context {
            pendingRead = false
            context.read()
        }
    }

    func write(_ part: HTTPClientRequestPart, flush: Bool) {
        guard let context else { return }
        context.write(wrapOutboundOut(part), promise: nil)
        if flush { context.flush() }
    }
}

/// The client side of an HTTP listener's connection: performs the actions of its `HTTPProxyStateMachine`.
final class HTTPProxyHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let listener: ListenerContext
    private(set) var machine: HTTPProxyStateMachine
    private var context: ChannelHandlerContext?
    private var lease: Cluster.Lease?
    private var leaseCluster: Cluster?
    private var upstream: UpstreamHTTPHandler?
    private var readsPaused = false
    private var pendingRead = false
    private var requestStart: ContinuousClock.Instant?
    private var requestTimer: Scheduled<Void>?
    private var idleTimer: Scheduled<Void>?
    private var clientIP: String?
    private var currentHead: HTTPRequestHead?
    private var responseStatus: HTTPResponseStatus?
    private var needsFlush = false
    /// The connection's hot-upgrade gate; `nil` on an HTTP/2 stream (HTTP/2 connections drain instead of moving).
    private var gate: HandoverGate?

    init(listener: ListenerContext) {
        self.listener = listener
        self.machine = HTTPProxyStateMachine(routes: listener.config.routes, limits: listener.config.limits)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        clientIP = context.channel.remoteAddress?.ipAddress
        gate = try? context.pipeline.syncOperations.handler(type: HandoverGate.self)
        armIdleTimer()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        requestTimer?.cancel()
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            idleTimer?.cancel()
            requestStart = .now
            currentHead = head
            responseStatus = nil
            let timeout = listener.config.requestTimeout
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            requestTimer = context.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
                let handler = bound.value
                handler.perform(handler.machine.requestTimedOut())
            }
            perform(machine.requestHead(head, clientIP: clientIP))
        case .body(let buffer):
            perform(machine.requestBody(buffer))
        case .end:
            perform(machine.requestEnd())
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        lease?.channel.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        releaseUpstream(reusable: false, success: true)
        idleTimer?.cancel()
        requestTimer?.cancel()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let parseError = error as? HTTPParserError {
            perform(machine.parseError(headerOverflow: parseError == .headerOverflow))
        } else {
            perform([.abort])
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        upstream?.setReadsPaused(!context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if readsPaused {
            pendingRead = true
        } else {
            context.read()
        }
    }

    // MARK: Upstream events

    func upstreamRead(_ part: HTTPClientResponsePart) {
        switch part {
        case .head(let head):
            responseStatus = head.status
            perform(machine.responseHead(head))
        case .body(let buffer):
            perform(machine.responseBody(buffer))
        case .end:
            perform(machine.responseEnd())
        }
    }

    func upstreamReadComplete() {
        if needsFlush {
            needsFlush = false
            context?.flush()
        }
    }

    func upstreamInactive() {
        upstream = nil
        perform(machine.upstreamClosed())
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        setClientReadsPaused(!isWritable || machine.phase == .waitingForUpstream)
    }

    // MARK: Performing actions

    private func perform(_ actions: [HTTPProxyStateMachine.Action]) {
        for action in actions { perform(action) }
    }

    private func perform(_ action: HTTPProxyStateMachine.Action) {
        guard let context else { return }
        switch action {
        case .pauseClientReads:
            setClientReadsPaused(true)
        case .resumeClientReads:
            setClientReadsPaused(!(lease?.channel.isWritable ?? true))
        case .acquireUpstream(let clusterName, let head, let isIdempotent):
            acquire(clusterName: clusterName, head: head, isIdempotent: isIdempotent, context: context)
        case .respondAndClose(let status):
            releaseUpstream(reusable: false, success: status != .badGateway && status != .gatewayTimeout)
            respond(status: status, context: context)
        case .sendContinue:
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
        case .forwardHead(let head):
            upstream?.write(.head(head), flush: false)
        case .forwardBody(let buffer):
            upstream?.write(.body(.byteBuffer(buffer)), flush: false)
        case .forwardEnd:
            upstream?.write(.end(nil), flush: true)
        case .relayHead(let head):
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            needsFlush = true
        case .relayBody(let buffer):
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            needsFlush = true
        case .relayEnd(let reuseUpstream, let closeClient):
            needsFlush = false
            requestFinished(status: responseStatus ?? .ok)
            releaseUpstream(reusable: reuseUpstream, success: true)
            if closeClient {
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
            } else {
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                armIdleTimer()
                gate?.responseEnded()
            }
        case .abort:
            releaseUpstream(reusable: false, success: false)
            context.close(promise: nil)
        }
    }

    private func acquire(clusterName: String, head: HTTPRequestHead, isIdempotent: Bool, context: ChannelHandlerContext) {
        guard let cluster = listener.clusters[clusterName] else {
            perform(machine.upstreamFailed(.unavailable))
            return
        }
        let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
        cluster.acquireHTTP(on: context.eventLoop, mayRetry: isIdempotent).whenComplete { result in
            let handler = loopBoundSelf.value
            switch result {
            case .success(let lease):
                guard handler.context != nil, handler.machine.phase == .waitingForUpstream,
                    let upstream = try? lease.channel.pipeline.syncOperations.handler(type: UpstreamHTTPHandler.self)
                else {
                    cluster.releaseUnused(lease)
                    return
                }
                upstream.owner = handler
                upstream.setReadsPaused(!(handler.context?.channel.isWritable ?? true))
                handler.lease = lease
                handler.leaseCluster = cluster
                handler.upstream = upstream
                handler.perform(handler.machine.upstreamAcquired(head: head))
            case .failure(let error):
                let overloaded = (error as? Cluster.AcquireError) == .overloaded
                handler.perform(handler.machine.upstreamFailed(overloaded ? .overloaded : .unavailable))
            }
        }
    }

    private func releaseUpstream(reusable: Bool, success: Bool) {
        guard let lease, let cluster = leaseCluster else { return }
        upstream?.owner = nil
        upstream?.setReadsPaused(false)
        self.lease = nil
        self.leaseCluster = nil
        self.upstream = nil
        cluster.release(lease, reusable: reusable, success: success)
    }

    private func setClientReadsPaused(_ paused: Bool) {
        readsPaused = paused
        if !paused && pendingRead, let context {
            pendingRead = false
            context.read()
        }
    }

    private func respond(status: HTTPResponseStatus, context: ChannelHandlerContext) {
        let body = "\(status.code) \(status.reasonPhrase)\n"
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/plain")
        headers.add(name: "content-length", value: "\(body.utf8.count)")
        headers.add(name: "connection", value: "close")
        let version = currentHead?.version ?? .http1_1
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        requestFinished(status: status)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    private func requestFinished(status: HTTPResponseStatus) {
        requestTimer?.cancel()
        requestTimer = nil
        let elapsed = requestStart.map { ContinuousClock.now - $0 }
        requestStart = nil
        if let metrics = listener.metrics {
            metrics.responses[min(5, max(0, Int(status.code / 100)))].increment()
            if let elapsed { metrics.latency.record(elapsed) }
        }
        if listener.logger.logLevel <= .info, let head = currentHead {
            listener.logger.info(
                "access",
                metadata: [
                    "client": "\(clientIP ?? "-")", "method": "\(head.method.rawValue)", "uri": "\(head.uri)",
                    "status": "\(status.code)", "duration_us": "\(elapsed.map { $0.microseconds } ?? 0)",
                ])
        }
    }

    private func armIdleTimer() {
        guard let context else { return }
        idleTimer?.cancel()
        // For HTTP the idle clock runs while no request is active, so a slowloris head that never completes is cut too.
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.scheduleTask(in: TimeAmount(listener.config.idleTimeout)) {
            let handler = bound.value
            guard handler.machine.phase == .idle else { return }
            handler.context?.close(promise: nil)
        }
    }
}

extension Duration {
    var microseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000 + attoseconds / 1_000_000_000_000
    }
}
