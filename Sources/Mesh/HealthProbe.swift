import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix

/// One active health probe: a TCP connect, or a GET that must answer 2xx within the check's timeout, over HTTP/1.1
/// or, for an HTTP/2 cluster, over h2c with prior knowledge (the way the cluster's traffic goes).
enum HealthProbe {
    static func run(
        check: HealthCheckConfig, proto: UpstreamProtocol, address: SocketAddress, host: String, on loop: EventLoop
    ) -> EventLoopFuture<Bool> {
        let result = loop.makePromise(of: Bool.self)
        let timeout = loop.scheduleTask(in: TimeAmount(check.timeout)) { result.succeed(false) }
        result.futureResult.whenComplete { _ in timeout.cancel() }
        let isHTTP2 = check.kind == .http && proto == .http2
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(TimeAmount(check.timeout))
            .channelInitializer { channel in
                guard check.kind == .http else { return channel.eventLoop.makeSucceededVoidFuture() }
                return channel.eventLoop.makeCompletedFuture {
                    if isHTTP2 {
                        _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                            mode: .client, connectionConfiguration: .init(), streamConfiguration: .init()
                        ) { stream in stream.close() }
                    } else {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(ProbeResponseHandler(result: result))
                    }
                }
            }
        bootstrap.connect(to: address).whenComplete { outcome in
            switch outcome {
            case .failure:
                result.succeed(false)
            case .success(let channel):
                result.futureResult.whenComplete { _ in channel.close(promise: nil) }
                channel.closeFuture.whenComplete { _ in result.succeed(false) }
                guard check.kind == .http else {
                    result.succeed(true)
                    return
                }
                var headers = HTTPHeaders()
                headers.add(name: "host", value: host)
                headers.add(name: "user-agent", value: "divan-mesh-health-check")
                if !isHTTP2 { headers.add(name: "connection", value: "close") }
                let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: check.path, headers: headers)
                guard isHTTP2 else {
                    send(head, on: channel)
                    return
                }
                guard let multiplexer = try? channel.pipeline.syncOperations.handler(type: NIOHTTP2Handler.self).multiplexer else {
                    result.succeed(false)
                    return
                }
                let stream = multiplexer.flatMap { multiplexer in
                    multiplexer.createStreamChannel { stream in
                        stream.eventLoop.makeCompletedFuture {
                            try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http))
                            try stream.pipeline.syncOperations.addHandler(ProbeResponseHandler(result: result))
                        }
                    }
                }
                stream.whenComplete { stream in
                    switch stream {
                    case .success(let stream): send(head, on: stream)
                    case .failure: result.succeed(false)
                    }
                }
            }
        }
        return result.futureResult
    }

    private static func send(_ head: HTTPRequestHead, on channel: Channel) {
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
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
