import NIOCore
import NIOHTTP1

/// The protocol state of one client connection of an HTTP listener, as a pure value.
///
/// The handler feeds it events and performs the actions it returns. `idle` is the safe point at which
/// the hot upgrade may capture the connection: no request in flight, no upstream attached.
public struct HTTPProxyStateMachine: Sendable {
    /// Where the connection is in its request/response cycle.
    public enum Phase: String, Sendable, Equatable {
        /// Between requests: the safe point for handover.
        case idle
        /// A request head arrived; an upstream connection is being acquired.
        case waitingForUpstream
        /// The request is being forwarded and/or its response relayed.
        case proxying
        /// The connection is being closed.
        case closing
    }

    /// A request body event kept while the upstream connection is being acquired; reads are paused meanwhile.
    enum BufferedPart: Sendable, Equatable {
        case body(ByteBuffer)
        case end
    }

    /// What the handler must do.
    public enum Action: Sendable, Equatable {
        /// Get a connection to `cluster` for `head` (already rewritten for the upstream).
        case acquireUpstream(cluster: String, head: HTTPRequestHead, isIdempotent: Bool)
        /// Answer locally with `status` and close the connection afterwards.
        case respondAndClose(HTTPResponseStatus)
        /// Write `100 Continue` to the client.
        case sendContinue
        /// Write to the upstream.
        case forwardHead(HTTPRequestHead)
        case forwardBody(ByteBuffer)
        case forwardEnd
        /// Write to the client.
        case relayHead(HTTPResponseHead)
        case relayBody(ByteBuffer)
        /// End the response; give the upstream back to the pool when `reuseUpstream`, close the client when `closeClient`.
        case relayEnd(reuseUpstream: Bool, closeClient: Bool)
        /// Close the client connection now, and the upstream (if any) without reuse.
        case abort
        case pauseClientReads
        case resumeClientReads
    }

    /// Why no upstream connection could be had; both answer 503 (a dead upstream is 502, a timeout 504).
    public enum UpstreamFailure: Sendable, Equatable {
        /// No endpoint available or every connect attempt failed.
        case unavailable
        /// Cluster limits reached.
        case overloaded
    }

    struct Exchange: Sendable {
        var requestHead: HTTPRequestHead
        /// The client connection closes after this response: the client asked so, or the request asked to switch
        /// protocols and is answered over HTTP/1.1 (see `HTTPRules.isUpgradeRequest`).
        var closesConnection: Bool
        var requestDone = false
        var responseStarted = false
        var responseHeadClose = false
        var bodyBytes = 0
        var expectsContinue: Bool
        var buffered: [BufferedPart] = []
    }

    let routes: [RouteConfig]
    let limits: HTTPLimits
    public private(set) var phase: Phase = .idle
    var exchange: Exchange?
    /// Requests fully answered on this connection, for access logs and `/connections`.
    public private(set) var completedRequests = 0

    public init(routes: [RouteConfig], limits: HTTPLimits) {
        self.routes = routes
        self.limits = limits
    }

    /// Whether the connection may be captured for handover now.
    public var isAtSafePoint: Bool { phase == .idle }

    public mutating func requestHead(_ head: HTTPRequestHead, clientIP: String?) -> [Action] {
        guard phase == .idle else { return [.abort] }
        if let status = HTTPRules.limitViolation(head, limits: limits) {
            phase = .closing
            return [.respondAndClose(status)]
        }
        guard let route = HTTPRules.route(head, routes: routes) else {
            phase = .closing
            return [.respondAndClose(.notFound)]
        }
        let expects = head.headers["expect"].contains { $0.lowercased() == "100-continue" }
        exchange = Exchange(
            requestHead: head, closesConnection: !head.isKeepAlive || HTTPRules.isUpgradeRequest(head), expectsContinue: expects)
        phase = .waitingForUpstream
        let upstreamHead = HTTPRules.upstreamRequestHead(head, clientIP: clientIP)
        return [
            .pauseClientReads,
            .acquireUpstream(cluster: route.cluster, head: upstreamHead, isIdempotent: HTTPRules.isIdempotent(head.method)),
        ]
    }

    public mutating func requestBody(_ buffer: ByteBuffer) -> [Action] {
        guard var current = exchange, phase == .waitingForUpstream || phase == .proxying else { return [] }
        current.bodyBytes += buffer.readableBytes
        if current.bodyBytes > limits.maxBodyBytes {
            exchange = current
            return failRequest(status: .payloadTooLarge)
        }
        if phase == .waitingForUpstream {
            current.buffered.append(.body(buffer))
            exchange = current
            return []
        }
        exchange = current
        return [.forwardBody(buffer)]
    }

    public mutating func requestEnd() -> [Action] {
        guard var current = exchange, phase == .waitingForUpstream || phase == .proxying else { return [] }
        current.requestDone = true
        if phase == .waitingForUpstream {
            current.buffered.append(.end)
            exchange = current
            return []
        }
        exchange = current
        return [.forwardEnd]
    }

    /// An upstream connection is ready: send the head and whatever body already arrived.
    public mutating func upstreamAcquired(head: HTTPRequestHead) -> [Action] {
        guard var current = exchange, phase == .waitingForUpstream else { return [] }
        var actions: [Action] = [.forwardHead(head)]
        for part in current.buffered {
            switch part {
            case .body(let buffer): actions.append(.forwardBody(buffer))
            case .end: actions.append(.forwardEnd)
            }
        }
        if current.expectsContinue && !current.requestDone && current.buffered.isEmpty {
            actions.append(.sendContinue)
        }
        current.buffered = []
        exchange = current
        phase = .proxying
        actions.append(.resumeClientReads)
        return actions
    }

    public mutating func upstreamFailed(_ failure: UpstreamFailure) -> [Action] {
        guard phase == .waitingForUpstream else { return [] }
        return failRequest(status: .serviceUnavailable)
    }

    public mutating func responseHead(_ head: HTTPResponseHead) -> [Action] {
        guard var current = exchange, phase == .proxying, !current.responseStarted else { return [.abort] }
        current.responseStarted = true
        // An HTTP/2 upstream's response says nothing of its connection (NIO reports HTTP/2 heads as not keep-alive).
        current.responseHeadClose = head.version.major < 2 && !head.isKeepAlive
        // A response that ends before the request body was sent leaves the body unread: the connection can't continue.
        let closeAfter = current.closesConnection
        exchange = current
        return [.relayHead(HTTPRules.clientResponseHead(head, closeAfter: closeAfter, requestVersion: current.requestHead.version))]
    }

    public mutating func responseBody(_ buffer: ByteBuffer) -> [Action] {
        guard phase == .proxying, exchange?.responseStarted == true else { return [] }
        return [.relayBody(buffer)]
    }

    public mutating func responseEnd() -> [Action] {
        guard let current = exchange, phase == .proxying, current.responseStarted else { return [] }
        let closeClient = current.closesConnection || !current.requestDone
        let reuse = !current.responseHeadClose && current.requestDone
        exchange = nil
        completedRequests += 1
        phase = closeClient ? .closing : .idle
        return [.relayEnd(reuseUpstream: reuse, closeClient: closeClient)]
    }

    /// The upstream connection closed or failed while attached to this request.
    public mutating func upstreamClosed() -> [Action] {
        guard phase == .proxying else { return [] }
        return failRequest(status: .badGateway)
    }

    /// The request timeout fired.
    public mutating func requestTimedOut() -> [Action] {
        guard phase == .waitingForUpstream || phase == .proxying else { return [] }
        return failRequest(status: .gatewayTimeout)
    }

    /// The client sent bytes that are not HTTP/1.1 (400) or a head past the decoder's own limits (431).
    public mutating func parseError(headerOverflow: Bool) -> [Action] {
        if phase == .idle {
            phase = .closing
            return [.respondAndClose(headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest)]
        }
        phase = .closing
        return exchange?.responseStarted == true ? [.abort] : [.respondAndClose(.badRequest)]
    }

    /// Answers with an error if the response hasn't started, otherwise cuts the connection so the client sees a truncated message.
    private mutating func failRequest(status: HTTPResponseStatus) -> [Action] {
        let started = exchange?.responseStarted ?? false
        exchange = nil
        phase = .closing
        return started ? [.abort] : [.respondAndClose(status)]
    }
}
