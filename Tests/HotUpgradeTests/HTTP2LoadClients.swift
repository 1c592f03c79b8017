import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix

/// HTTP/2 clients (h2c with prior knowledge) in the test process: a few connections, each with several streams in
/// flight at every moment, a new one started as soon as one ends. They never reconnect, so a connection that closes,
/// or hears GOAWAY, is counted rather than hidden (what h2load would do silently).
final class HTTP2LoadClients: Sendable {
    /// What the clients saw.
    struct Report: Sendable, CustomStringConvertible {
        var completed: [Int]
        var failures: Int
        var goAways: Int
        var closedConnections: Int
        var firstFailure: String?
        var description: String {
            "completed \(completed.reduce(0, +)) (per connection \(completed)), failures \(failures) (first: \(firstFailure ?? "none")), "
                + "GOAWAY \(goAways), connections closed \(closedConnections)"
        }
    }

    struct Stats {
        var completed: [Int]
        var failures = 0
        var goAways = 0
        var closedConnections = 0
        var firstFailure: String?
        var inFlight = 0
    }

    private let stats: NIOLockedValueBox<Stats>
    private let stopping = NIOLockedValueBox(false)
    private let connections: NIOLockedValueBox<[(channel: Channel, multiplexer: NIOHTTP2Handler.StreamMultiplexer)]>
    /// Each connection's local port when it opened.
    let localPorts: [Int]

    /// Opens `connections` connections to 127.0.0.1:`port` and keeps `streams` requests in flight on each.
    static func start(port: Int, connections count: Int, streams: Int) async throws -> HTTP2LoadClients {
        var opened: [(channel: Channel, multiplexer: NIOHTTP2Handler.StreamMultiplexer)] = []
        let stats = NIOLockedValueBox(Stats(completed: Array(repeating: 0, count: count)))
        for _ in 0..<count {
            let configuration = {
                var configuration = NIOHTTP2Handler.ConnectionConfiguration()
                // As curl, h2load and browsers do: a connection window well above the initial 64 KB.
                configuration.targetWindowSize = 1 << 24
                return configuration
            }()
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        _ = try sync.configureHTTP2Pipeline(mode: .client, connectionConfiguration: configuration, streamConfiguration: .init()) {
                            $0.eventLoop.makeSucceededVoidFuture()
                        }
                        try sync.addHandler(GoAwayCounter(stats: stats))
                    }
                }
                .connect(host: "127.0.0.1", port: port).get()
            let multiplexer = try await channel.eventLoop.submit {
                try channel.pipeline.syncOperations.handler(type: NIOHTTP2Handler.self).syncMultiplexer()
            }.get()
            opened.append((channel, multiplexer))
        }
        let clients = HTTP2LoadClients(connections: opened, stats: stats)
        for index in opened.indices {
            for _ in 0..<streams { clients.startStream(on: index) }
        }
        return clients
    }

    private init(connections: [(channel: Channel, multiplexer: NIOHTTP2Handler.StreamMultiplexer)], stats: NIOLockedValueBox<Stats>) {
        self.connections = NIOLockedValueBox(connections)
        self.stats = stats
        localPorts = connections.map { $0.channel.localAddress?.port ?? 0 }
        for connection in connections {
            connection.channel.closeFuture.whenComplete { [stopping] _ in
                if !stopping.withLockedValue({ $0 }) { stats.withLockedValue { $0.closedConnections += 1 } }
            }
        }
    }

    /// Responses completed so far, per connection.
    var completed: [Int] { stats.withLockedValue { $0.completed } }
    var failures: Int { stats.withLockedValue { $0.failures + $0.goAways + $0.closedConnections } }
    var report: Report {
        stats.withLockedValue {
            Report(completed: $0.completed, failures: $0.failures, goAways: $0.goAways, closedConnections: $0.closedConnections, firstFailure: $0.firstFailure)
        }
    }

    /// The connections' local ports now (0 for one that closed).
    var currentLocalPorts: [Int] {
        connections.withLockedValue { $0.map { $0.channel.isActive ? $0.channel.localAddress?.port ?? 0 : 0 } }
    }

    private func startStream(on index: Int) {
        guard !stopping.withLockedValue({ $0 }) else { return }
        let (channel, multiplexer) = connections.withLockedValue { $0[index] }
        let path = "/c\(index)/\(stats.withLockedValue { state -> Int in state.inFlight += 1; return state.completed[index] })"
        let finished: @Sendable (String?) -> Void = { [self] problem in
            stats.withLockedValue { state in
                state.inFlight -= 1
                if let problem {
                    state.failures += 1
                    if state.firstFailure == nil { state.firstFailure = "\(path): \(problem)" }
                } else {
                    state.completed[index] += 1
                }
            }
            if problem == nil { startStream(on: index) }
        }
        channel.eventLoop.execute {
            multiplexer.createStreamChannel { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http))
                    try stream.pipeline.syncOperations.addHandler(ResponseChecker(path: path, finished: finished))
                }
            }.whenComplete { result in
                switch result {
                case .success(let stream):
                    var headers = HTTPHeaders()
                    headers.add(name: "host", value: "test")
                    headers.add(name: "x-client-header", value: path)
                    stream.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)), promise: nil)
                    stream.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                case .failure(let error):
                    finished("stream not created: \(error)")
                }
            }
        }
    }

    /// Stops starting streams, waits (at most 10 s) for those in flight, closes the connections and reports.
    func stop() async -> Report {
        stopping.withLockedValue { $0 = true }
        let deadline = ContinuousClock.now + .seconds(10)
        while stats.withLockedValue({ $0.inFlight > 0 }), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        for connection in connections.withLockedValue({ $0 }) { try? await connection.channel.close() }
        return report
    }
}

/// Checks one response: 200 with the upstream's `ok PATH` body, ended cleanly.
private final class ResponseChecker: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    private let path: String
    private let finished: @Sendable (String?) -> Void
    private var status: HTTPResponseStatus?
    private var body = ""
    private var isDone = false

    init(path: String, finished: @escaping @Sendable (String?) -> Void) {
        self.path = path
        self.finished = finished
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = head.status
        case .body(let bytes): body += String(buffer: bytes)
        case .end:
            finish(status == .ok && body == "ok \(path)\n" ? nil : "status \(status.map { "\($0.code)" } ?? "none"), body \(body.debugDescription)")
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish("stream closed before its response ended (status \(status.map { "\($0.code)" } ?? "none"))")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        finish("\(error)")
        context.close(promise: nil)
    }

    private func finish(_ problem: String?) {
        guard !isDone else { return }
        isDone = true
        finished(problem)
    }
}

/// Counts GOAWAY frames the client's connection receives.
private final class GoAwayCounter: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    private let stats: NIOLockedValueBox<HTTP2LoadClients.Stats>

    init(stats: NIOLockedValueBox<HTTP2LoadClients.Stats>) { self.stats = stats }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .goAway = unwrapInboundIn(data).payload { stats.withLockedValue { $0.goAways += 1 } }
    }
}
