import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix

/// One multiplexed HTTP/2 (h2c, prior knowledge) connection to an upstream endpoint, from the moment it is
/// reserved in the pool until it closes. Its stream bookkeeping lives in the cluster's `HTTP2ConnectionPool`.
final class HTTP2UpstreamConnection: Sendable {
    let id: HTTP2ConnectionPool.ConnectionID
    let endpoint: Int
    let eventLoop: EventLoop
    /// Completes once the upstream's first SETTINGS frame has arrived (so it does speak HTTP/2), or fails when the
    /// connection could not be made or closed before that.
    private let ready: EventLoopPromise<NIOHTTP2Handler.StreamMultiplexer>
    private let isSettled = NIOLockedValueBox(false)
    /// The channel once connected, and whether `close()` came first (then it closes as soon as it connects).
    private let channel = NIOLockedValueBox<(channel: Channel?, isClosing: Bool)>((nil, false))

    init(id: HTTP2ConnectionPool.ConnectionID, endpoint: Int, eventLoop: EventLoop) {
        self.id = id
        self.endpoint = endpoint
        self.eventLoop = eventLoop
        self.ready = eventLoop.makePromise()
    }

    var multiplexer: EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer> { ready.futureResult }

    /// Connects and installs the client pipeline; `events` hears of SETTINGS, GOAWAY and the close. `timeout` bounds
    /// the TCP connect and, again, the wait for the upstream's first SETTINGS frame.
    func connect(to address: SocketAddress, timeout: TimeAmount, events: any HTTP2UpstreamEvents) {
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    var configuration = NIOHTTP2Handler.ConnectionConfiguration()
                    configuration.initialSettings = [HTTP2Setting(parameter: .enablePush, value: 0)]
                    let multiplexer = try sync.configureHTTP2Pipeline(
                        mode: .client, connectionConfiguration: configuration, streamConfiguration: .init()
                    ) { stream in
                        // Push is off; a stream the upstream opens anyway is refused.
                        stream.close()
                    }
                    try sync.addHandler(HTTP2UpstreamConnectionHandler(connection: self, multiplexer: multiplexer, events: events))
                }
            }
        bootstrap.connect(to: address).whenComplete { result in
            switch result {
            case .success(let channel):
                let isClosing = self.channel.withLockedValue { state in
                    state.channel = channel
                    return state.isClosing
                }
                if isClosing { channel.close(promise: nil) }
                // An endpoint that accepts the connection but never answers in HTTP/2 fails like one that refused it.
                let deadline = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
                self.multiplexer.whenComplete { _ in deadline.cancel() }
                channel.closeFuture.whenComplete { _ in
                    let neverReady = self.settle(.failure(ChannelError.ioOnClosedChannel))
                    events.http2ConnectionClosed(self, neverReady: neverReady)
                }
            case .failure(let error):
                self.settle(.failure(error))
                events.http2ConnectionClosed(self, neverReady: true)
            }
        }
    }

    /// Opens a stream whose pipeline speaks HTTP/1-shaped parts, ending in an `UpstreamHTTPHandler`.
    func openStream() -> EventLoopFuture<Channel> {
        multiplexer.flatMap { multiplexer in
            let promise = self.eventLoop.makePromise(of: Channel.self)
            multiplexer.createStreamChannel(promise: promise) { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http))
                    try stream.pipeline.syncOperations.addHandler(UpstreamHTTPHandler())
                }
            }
            return promise.futureResult
        }
    }

    /// Closes the connection; its open streams fail (their requests get a 502).
    func close() {
        let channel = channel.withLockedValue { state in
            state.isClosing = true
            return state.channel
        }
        channel?.close(promise: nil)
    }

    /// Completes `multiplexer` unless it already is; returns whether this call did.
    @discardableResult
    fileprivate func settle(_ result: Result<NIOHTTP2Handler.StreamMultiplexer, Error>) -> Bool {
        let first = isSettled.withLockedValue { settled in
            defer { settled = true }
            return !settled
        }
        if first { ready.completeWith(result) }
        return first
    }
}

/// What an upstream HTTP/2 connection reports to its cluster.
protocol HTTP2UpstreamEvents: Sendable {
    func http2SettingsReceived(_ connection: HTTP2UpstreamConnection, maxConcurrentStreams: Int)
    func http2GoAwayReceived(_ connection: HTTP2UpstreamConnection)
    /// The connection closed; `neverReady` when it could not be made or closed before speaking HTTP/2. Called once.
    func http2ConnectionClosed(_ connection: HTTP2UpstreamConnection, neverReady: Bool)
}

/// Sits after `NIOHTTP2Handler` on an upstream connection and reports its connection-level frames.
private final class HTTP2UpstreamConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame

    private let connection: HTTP2UpstreamConnection
    private let multiplexer: NIOHTTP2Handler.StreamMultiplexer
    private let events: any HTTP2UpstreamEvents

    init(connection: HTTP2UpstreamConnection, multiplexer: NIOHTTP2Handler.StreamMultiplexer, events: any HTTP2UpstreamEvents) {
        self.connection = connection
        self.multiplexer = multiplexer
        self.events = events
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data).payload {
        case .settings(.settings(let settings)):
            if let limit = settings.last(where: { $0.parameter == .maxConcurrentStreams }) {
                events.http2SettingsReceived(connection, maxConcurrentStreams: limit.value)
            }
            connection.settle(.success(multiplexer))
        case .goAway:
            events.http2GoAwayReceived(connection)
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A connection-level protocol error ends the connection; stream errors reach their stream channels instead.
        context.close(promise: nil)
    }
}
