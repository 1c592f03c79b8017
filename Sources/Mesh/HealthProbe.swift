import NIOCore
import NIOHTTP1
import NIOPosix

/// One active health probe: a TCP connect, or an HTTP GET that must answer 2xx, within the check's timeout.
enum HealthProbe {
    static func run(check: HealthCheckConfig, address: SocketAddress, host: String, on loop: EventLoop) -> EventLoopFuture<Bool> {
        let result = loop.makePromise(of: Bool.self)
        let timeout = loop.scheduleTask(in: TimeAmount(check.timeout)) { result.succeed(false) }
        result.futureResult.whenComplete { _ in timeout.cancel() }
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(TimeAmount(check.timeout))
            .channelInitializer { channel in
                guard check.kind == .http else { return channel.eventLoop.makeSucceededVoidFuture() }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ProbeResponseHandler(result: result))
                }
            }
        bootstrap.connect(to: address).whenComplete { outcome in
            switch outcome {
            case .failure:
                result.succeed(false)
            case .success(let channel):
                result.futureResult.whenComplete { _ in channel.close(promise: nil) }
                guard check.kind == .http else {
                    result.succeed(true)
                    return
                }
                var headers = HTTPHeaders()
                headers.add(name: "host", value: host)
                headers.add(name: "user-agent", value: "divan-mesh-health-check")
                headers.add(name: "connection", value: "close")
                let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: check.path, headers: headers)
                channel.write(HTTPClientRequestPart.head(head), promise: nil)
                channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                channel.closeFuture.whenComplete { _ in result.succeed(false) }
            }
        }
        return result.futureResult
    }
}

/// Completes a probe with the status of the response head.
private final class ProbeResponseHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    let result: EventLoopPromise<Bool>

    init(result: EventLoopPromise<Bool>) { self.result = result }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            result.succeed((200..<300).contains(head.status.code))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        result.succeed(false)
        context.close(promise: nil)
    }
}
