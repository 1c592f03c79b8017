import Mesh
import NIOCore
import NIOHTTP1
import Testing

@Suite struct HTTPRulesTests {
    func head(_ method: HTTPMethod = .GET, _ uri: String = "/", _ headers: [(String, String)] = []) -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: HTTPHeaders(headers))
    }

    @Test func routesByHostPathAndHeader() {
        let routes = [
            RouteConfig(host: "api.example.com", pathPrefix: "/v1", cluster: "api"),
            RouteConfig(pathPrefix: "/", headers: ["x-canary": "1"], cluster: "canary"),
            RouteConfig(cluster: "web"),
        ]
        #expect(HTTPRules.route(head(.GET, "/v1/x", [("Host", "API.example.com:8080")]), routes: routes)?.cluster == "api")
        #expect(HTTPRules.route(head(.GET, "/v2", [("Host", "api.example.com")]), routes: routes)?.cluster == "web")
        #expect(HTTPRules.route(head(.GET, "/v1", [("x-canary", "1")]), routes: routes)?.cluster == "canary")
        #expect(HTTPRules.route(head(.GET, "/"), routes: [RouteConfig(pathPrefix: "/api", cluster: "a")]) == nil)
    }

    @Test func stripsHopByHopAndAppendsForwardedFor() {
        let request = head(.POST, "/", [
            ("Host", "h"), ("Connection", "keep-alive, X-Secret"), ("X-Secret", "s"), ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"), ("Proxy-Authorization", "p"), ("Expect", "100-continue"),
            ("X-Forwarded-For", "10.0.0.1"), ("X-Kept", "k"),
        ])
        let out = HTTPRules.upstreamRequestHead(request, clientIP: "192.0.2.7").headers
        #expect(out["x-secret"].isEmpty)
        #expect(out["keep-alive"].isEmpty)
        #expect(out["connection"].isEmpty)
        #expect(out["proxy-authorization"].isEmpty)
        #expect(out["expect"].isEmpty)
        #expect(out["transfer-encoding"] == ["chunked"])
        #expect(out["x-forwarded-for"] == ["10.0.0.1, 192.0.2.7"])
        #expect(out["x-kept"] == ["k"])
    }

    @Test(arguments: [
        ("/" + String(repeating: "a", count: 300), [(String, String)](), HTTPResponseStatus.uriTooLong),
        ("/", (0..<20).map { ("x-h\($0)", "v") }, .requestHeaderFieldsTooLarge),
        ("/", [("x-big", String(repeating: "b", count: 2000))], .requestHeaderFieldsTooLarge),
        ("/", [("content-length", "5000")], .payloadTooLarge),
        ("/", [("content-length", "5"), ("transfer-encoding", "chunked")], .badRequest),
        ("/", [("content-length", "abc")], .badRequest),
    ])
    func limits(uri: String, headers: [(String, String)], status: HTTPResponseStatus) {
        var limits = HTTPLimits()
        limits.maxURIBytes = 256
        limits.maxHeaderCount = 10
        limits.maxHeaderBytes = 1024
        limits.maxBodyBytes = 4096
        #expect(HTTPRules.limitViolation(head(.POST, uri, headers), limits: limits) == status)
        #expect(HTTPRules.limitViolation(head(.POST, "/", [("content-length", "10")]), limits: limits) == nil)
    }
}

@Suite struct HTTPProxyStateMachineTests {
    typealias Action = HTTPProxyStateMachine.Action
    let routes = [RouteConfig(pathPrefix: "/", cluster: "c")]

    func machine(maxBody: Int = 1 << 20) -> HTTPProxyStateMachine {
        var limits = HTTPLimits()
        limits.maxBodyBytes = maxBody
        return HTTPProxyStateMachine(routes: routes, limits: limits)
    }

    func request(_ method: HTTPMethod = .GET, _ headers: [(String, String)] = [("host", "h")], version: HTTPVersion = .http1_1) -> HTTPRequestHead {
        HTTPRequestHead(version: version, method: method, uri: "/x", headers: HTTPHeaders(headers))
    }

    let ok = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["content-length": "2"])

    @Test func keepAliveExchangeReturnsToIdle() {
        var m = machine()
        let actions = m.requestHead(request(), clientIP: "1.2.3.4")
        guard case .acquireUpstream("c", let upstreamHead, true) = actions.last else {
            Issue.record("expected acquireUpstream, got \(actions)")
            return
        }
        #expect(actions.first == .pauseClientReads)
        #expect(m.requestEnd().isEmpty)
        #expect(m.upstreamAcquired(head: upstreamHead) == [.forwardHead(upstreamHead), .forwardEnd, .resumeClientReads])
        #expect(m.phase == .proxying)
        guard case .relayHead = m.responseHead(ok).first else { Issue.record("no relayHead"); return }
        #expect(m.responseBody(ByteBuffer(string: "ok")) == [.relayBody(ByteBuffer(string: "ok"))])
        #expect(m.responseEnd() == [.relayEnd(reuseUpstream: true, closeClient: false)])
        #expect(m.isAtSafePoint)
        #expect(m.completedRequests == 1)
    }

    @Test func bodyArrivingBeforeTheUpstreamIsForwardedInOrder() {
        var m = machine()
        _ = m.requestHead(request(.POST, [("content-length", "6")]), clientIP: nil)
        #expect(m.requestBody(ByteBuffer(string: "abc")).isEmpty)
        #expect(m.requestBody(ByteBuffer(string: "def")).isEmpty)
        #expect(m.requestEnd().isEmpty)
        let head = request(.POST)
        #expect(m.upstreamAcquired(head: head) == [
            .forwardHead(head), .forwardBody(ByteBuffer(string: "abc")), .forwardBody(ByteBuffer(string: "def")),
            .forwardEnd, .resumeClientReads,
        ])
    }

    @Test func expectContinueIsAnsweredOnceAnUpstreamIsReady() {
        var m = machine()
        _ = m.requestHead(request(.PUT, [("expect", "100-continue"), ("content-length", "3")]), clientIP: nil)
        #expect(m.upstreamAcquired(head: request(.PUT)).contains(.sendContinue))
        #expect(m.requestBody(ByteBuffer(string: "abc")) == [.forwardBody(ByteBuffer(string: "abc"))])
    }

    @Test(arguments: [HTTPProxyStateMachine.UpstreamFailure.unavailable, .overloaded])
    func noUpstreamIs503(failure: HTTPProxyStateMachine.UpstreamFailure) {
        var m = machine()
        _ = m.requestHead(request(), clientIP: nil)
        #expect(m.upstreamFailed(failure) == [.respondAndClose(.serviceUnavailable)])
        #expect(m.phase == .closing)
    }

    @Test func upstreamClosingBeforeTheResponseHeadIs502() {
        var m = machine()
        _ = m.requestHead(request(), clientIP: nil)
        _ = m.upstreamAcquired(head: request())
        #expect(m.upstreamClosed() == [.respondAndClose(.badGateway)])
    }

    @Test func upstreamDyingMidResponseCutsTheClient() {
        var m = machine()
        _ = m.requestHead(request(), clientIP: nil)
        _ = m.requestEnd()
        _ = m.upstreamAcquired(head: request())
        _ = m.responseHead(ok)
        #expect(m.upstreamClosed() == [.abort])
        #expect(m.requestTimedOut().isEmpty)
    }

    @Test func timeoutBeforeTheResponseIs504() {
        var m = machine()
        _ = m.requestHead(request(), clientIP: nil)
        _ = m.upstreamAcquired(head: request())
        #expect(m.requestTimedOut() == [.respondAndClose(.gatewayTimeout)])
    }

    @Test func oversizedChunkedBodyIs413() {
        var m = machine(maxBody: 4)
        _ = m.requestHead(request(.POST, [("transfer-encoding", "chunked")]), clientIP: nil)
        _ = m.upstreamAcquired(head: request(.POST))
        #expect(m.requestBody(ByteBuffer(string: "1234")) == [.forwardBody(ByteBuffer(string: "1234"))])
        #expect(m.requestBody(ByteBuffer(string: "5")) == [.respondAndClose(.payloadTooLarge)])
    }

    @Test func connectionCloseAndHTTP10CloseAfterTheResponse() {
        for head in [request(.GET, [("connection", "close")]), request(.GET, [], version: .http1_0)] {
            var m = machine()
            _ = m.requestHead(head, clientIP: nil)
            _ = m.requestEnd()
            _ = m.upstreamAcquired(head: head)
            guard case .relayHead(let relayed) = m.responseHead(ok).first else { Issue.record("no head"); continue }
            #expect(relayed.headers["connection"] == ["close"])
            #expect(m.responseEnd() == [.relayEnd(reuseUpstream: true, closeClient: true)])
        }
    }

    @Test func noRouteIs404AndParseErrorsAre400Or431() {
        var m = HTTPProxyStateMachine(routes: [RouteConfig(pathPrefix: "/api", cluster: "c")], limits: HTTPLimits())
        #expect(m.requestHead(request(), clientIP: nil) == [.respondAndClose(.notFound)])
        var bad = machine()
        #expect(bad.parseError(headerOverflow: false) == [.respondAndClose(.badRequest)])
        var big = machine()
        #expect(big.parseError(headerOverflow: true) == [.respondAndClose(.requestHeaderFieldsTooLarge)])
    }
}

@Suite struct TCPTunnelStateMachineTests {
    @Test func halfCloseFromEitherSideThenBoth() {
        var m = TCPTunnelStateMachine()
        #expect(m.upstreamConnected() == [.forwardEarlyBytes, .startReading])
        #expect(m.inputClosed(.client) == [.shutdownOutput(.upstream)])
        #expect(m.phase == .open)
        #expect(m.inputClosed(.upstream) == [.shutdownOutput(.client), .closeBoth])
        #expect(m.phase == .closed)

        var reverse = TCPTunnelStateMachine()
        _ = reverse.upstreamConnected()
        #expect(reverse.inputClosed(.upstream) == [.shutdownOutput(.client)])
        #expect(reverse.isClientInputOpen && !reverse.isUpstreamInputOpen)
    }

    @Test func clientEOFWhileConnectingIsPassedOnOnceConnected() {
        var m = TCPTunnelStateMachine()
        #expect(m.inputClosed(.client).isEmpty)
        #expect(m.upstreamConnected() == [.forwardEarlyBytes, .shutdownOutput(.upstream), .startReading])
        #expect(m.inputClosed(.upstream) == [.shutdownOutput(.client), .closeBoth])
    }

    @Test func failuresCloseOnce() {
        var m = TCPTunnelStateMachine()
        #expect(m.upstreamConnectFailed() == [.closeBoth])
        #expect(m.connectionClosed(.client).isEmpty)
        var idle = TCPTunnelStateMachine()
        _ = idle.upstreamConnected()
        #expect(idle.idleTimeout() == [.closeBoth])
        #expect(idle.inputClosed(.client).isEmpty)
    }

    @Test func adoptedTunnelKeepsItsHalfClosedDirection() {
        var m = TCPTunnelStateMachine(adoptedWithClientInputOpen: false, upstreamInputOpen: true)
        #expect(m.isAtSafePoint)
        #expect(m.inputClosed(.upstream) == [.shutdownOutput(.client), .closeBoth])
    }
}
