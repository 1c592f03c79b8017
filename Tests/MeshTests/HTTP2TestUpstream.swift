import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix

/// An HTTP/2 upstream (h2c with prior knowledge) in the test process, for clusters with `protocol: http2`. It is the
/// upstream, not the thing under test; it counts connections and concurrent streams so tests can see multiplexing.
///
/// Paths: `/echo` (the request body streamed back as it arrives, request headers as `x-echo-*`), `/bytes/N`
/// (`upstreamPattern(N)` with a length), `/slow/MS` (answers after MS ms), `/die` (a response head and part of
/// the body, then the whole connection is closed), `/die-early` (the connection closes before any response),
/// `/goaway` (GOAWAY on the connection, then an answer), `/health`, anything else: 200 with the server's name. Every response has `x-upstream` and `x-connection`.
final class HTTP2TestUpstream: Sendable {
    /// What the server saw.
    struct Stats: Sendable {
        var connections = 0
        var closedConnections = 0
        var openStreams: [Int: Int] = [:]
        /// The most streams open at once on any one connection.
        var maxConcurrentStreams = 0
        var requests = 0
    }

    let name: String
    let port: Int
    let stats = NIOLockedValueBox(Stats())
    private let group: MultiThreadedEventLoopGroup
    private let server: Channel
    private let children = NIOLockedValueBox<[Channel]>([])

    /// Starts on `port` (0: one the OS picks), announcing `maxConcurrentStreams` in its SETTINGS.
    init(name: String = "h2", port: Int = 0, maxConcurrentStreams: Int = 100) async throws {
        self.name = name
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.group = group
        let stats = stats
        let children = children
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let connection = stats.withLockedValue { stats in
                        stats.connections += 1
                        return stats.connections
                    }
                    children.withLockedValue { $0.append(channel) }
                    channel.closeFuture.whenComplete { _ in stats.withLockedValue { $0.closedConnections += 1 } }
                    var configuration = NIOHTTP2Handler.ConnectionConfiguration()
                    configuration.initialSettings = [HTTP2Setting(parameter: .maxConcurrentStreams, value: maxConcurrentStreams)]
                    _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                        mode: .server, connectionConfiguration: configuration, streamConfiguration: .init()
                    ) { stream in
                        stream.eventLoop.makeCompletedFuture {
                            try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                            try stream.pipeline.syncOperations.addHandler(
                                TestUpstreamStreamHandler(name: name, connection: connection, stats: stats))
                        }
                    }
                }
            }
            .bind(host: "127.0.0.1", port: port).get()
        self.server = server
        self.port = server.localAddress?.port ?? 0
    }

    /// Closes the listener and every connection, and stops the server's thread.
    func stop() async {
        try? await server.close()
        for channel in children.withLockedValue({ $0 }) { try? await channel.close() }
        try? await group.shutdownGracefully()
    }
}

/// Serves one stream of `HTTP2TestUpstream`.
private final class TestUpstreamStreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let name: String
    private let connection: Int
    private let stats: NIOLockedValueBox<HTTP2TestUpstream.Stats>
    private var isEcho = false

    init(name: String, connection: Int, stats: NIOLockedValueBox<HTTP2TestUpstream.Stats>) {
        self.name = name
        self.connection = connection
        self.stats = stats
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let connection = connection
        let stats = stats
        stats.withLockedValue { stats in
            stats.openStreams[connection, default: 0] += 1
            stats.maxConcurrentStreams = max(stats.maxConcurrentStreams, stats.openStreams[connection]!)
        }
        context.channel.closeFuture.whenComplete { _ in stats.withLockedValue { $0.openStreams[connection]! -= 1 } }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            stats.withLockedValue { $0.requests += 1 }
            respond(to: head, context: context)
        case .body(let buffer):
            if isEcho { context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil) }
        case .end:
            if isEcho { context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil) }
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        var fields = HTTPHeaders()
        fields.add(name: "x-upstream", value: name)
        fields.add(name: "x-connection", value: "\(connection)")
        let path = head.uri
        if path.hasPrefix("/echo") {
            for (field, value) in head.headers { fields.add(name: "x-echo-\(field)", value: value) }
        }
        let headers = fields
        if path.hasPrefix("/echo") {
            isEcho = true
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))), promise: nil)
        } else if path.hasPrefix("/bytes/"), let count = Int(path.dropFirst("/bytes/".count)) {
            var sized = headers
            sized.add(name: "content-length", value: "\(count)")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: sized))), promise: nil)
            let bytes = upstreamPattern(count)
            var offset = 0
            while offset < count {
                let end = min(count, offset + 65_536)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: bytes[offset..<end])))), promise: nil)
                offset = end
            }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else if path.hasPrefix("/slow/"), let milliseconds = Int64(path.dropFirst("/slow/".count)) {
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: .milliseconds(milliseconds)) {
                let (handler, context) = bound.value
                handler.answer("slow\n", headers: headers, version: head.version, context: context)
            }
        } else if path == "/die" {
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))), promise: nil)
            let parent = context.channel.parent
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: upstreamPattern(1000)))))).whenComplete { _ in
                parent?.close(promise: nil)
            }
        } else if path == "/die-early" {
            context.channel.parent?.close(promise: nil)
        } else if path == "/goaway" {
            // Graceful: every stream already open may finish, no new one is taken.
            let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: .maxID, errorCode: .noError, opaqueData: nil))
            context.channel.parent?.writeAndFlush(goAway, promise: nil)
            answer("\(name)\n", headers: headers, version: head.version, context: context)
        } else {
            answer("\(name)\n", headers: headers, version: head.version, context: context)
        }
    }

    private func answer(_ body: String, headers: HTTPHeaders, version: HTTPVersion, context: ChannelHandlerContext) {
        var headers = headers
        headers.add(name: "content-length", value: "\(body.utf8.count)")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: .ok, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}
