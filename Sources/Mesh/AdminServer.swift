import NIOCore
import NIOHTTP1
import NIOPosix

/// The admin endpoint on its own port: `/metrics`, `/ready`, `/config`, `/connections`.
enum AdminServer {
    static func bind(proxy: MeshProxy, group: EventLoopGroup, address: SocketAddress) async throws -> Channel {
        try await bootstrap(proxy: proxy, group: group).bind(to: address).get()
    }

    /// Serves on a listening socket received from an old process.
    static func adopt(proxy: MeshProxy, group: EventLoopGroup, descriptor: CInt, accepting: Bool) async throws -> Channel {
        try await bootstrap(proxy: proxy, group: group).serverChannelOption(.autoRead, value: accepting).withBoundSocket(descriptor).get()
    }

    private static func bootstrap(proxy: MeshProxy, group: EventLoopGroup) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(proxy: proxy))
                }
            }
    }

    static func answer(path: String, proxy: MeshProxy) async -> (HTTPResponseStatus, String, [UInt8]) {
        switch path {
        case "/metrics":
            return (.ok, "text/plain; version=0.0.4", proxy.metrics.render())
        case "/ready":
            return proxy.isReady ? (.ok, "text/plain", Array("ready\n".utf8)) : (.serviceUnavailable, "text/plain", Array("not ready\n".utf8))
        case "/config":
            return (.ok, "application/yaml", Array(proxy.config.yamlDescription.utf8))
        case "/connections":
            let counts = await proxy.connectionCounts()
            var lines: [String] = []
            for listener in proxy.config.listeners {
                let phases = counts[listener.name] ?? [:]
                let total = phases.values.reduce(0, +)
                let detail = phases.keys.sorted().map { "\"\($0)\": \(phases[$0]!)" }.joined(separator: ", ")
                lines.append("  \"\(listener.name)\": {\"total\": \(total), \"by_state\": {\(detail)}}")
            }
            return (.ok, "application/json", Array("{\n\(lines.joined(separator: ",\n"))\n}\n".utf8))
        default:
            return (.notFound, "text/plain", Array("not found\n".utf8))
        }
    }
}

/// Answers admin requests; each response is computed off the event loop and written back in order.
private final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let proxy: MeshProxy
    private var path = "/"
    private var keepAlive = true

    init(proxy: MeshProxy) { self.proxy = proxy }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = String(head.uri.prefix { $0 != "?" })
            keepAlive = head.isKeepAlive
        case .body:
            break
        case .end:
            let channel = context.channel
            let path = path
            let keepAlive = keepAlive
            let proxy = proxy
            Task {
                let answer = await AdminServer.answer(path: path, proxy: proxy)
                let status = answer.0
                let type = answer.1
                let body = answer.2
                var headers = HTTPHeaders()
                headers.add(name: "content-type", value: type)
                headers.add(name: "content-length", value: "\(body.count)")
                if !keepAlive { headers.add(name: "connection", value: "close") }
                let head = HTTPResponseHead(version: .http1_1, status: status, headers: headers)
                channel.write(HTTPServerResponsePart.head(head), promise: nil)
                channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
                let done = channel.eventLoop.makePromise(of: Void.self)
                channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: done)
                if !keepAlive { done.futureResult.whenComplete { _ in channel.close(promise: nil) } }
            }
        }
    }
}
