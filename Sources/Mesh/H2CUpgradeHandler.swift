import NIOCore
import NIOHTTP1

/// Sits in front of `HTTPProxyHandler` on an HTTP/1.1 connection and switches the connection to HTTP/2 when a
/// request asks for h2c and may have it (`H2CUpgrade.settingsPayload`): it answers `101 Switching Protocols`,
/// replaces the HTTP/1.1 handlers with the same HTTP/2 pipeline a prior-knowledge connection gets, and the
/// upgrading request is then served as stream 1 like any other stream. Every other request passes through.
///
/// `HTTPServerPipelineHandler` hands it a request only once the previous response has ended, so the switch never
/// cuts a response short. Afterwards the connection is HTTP/2 in every respect, including the hot upgrade: it moves
/// at a quiet point through its `HTTP2HandoverGate` (a mark its `HandoverGate` got while it was HTTP/1.1 is passed
/// on to that gate at the next capture attempt).
final class H2CUpgradeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let listener: ListenerContext
    /// The upgrading request's head and `HTTP2-Settings` payload, from its head until its end.
    private var upgrading: (head: HTTPRequestHead, settings: [UInt8])?

    init(listener: ListenerContext) {
        self.listener = listener
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if let upgrading {
            // An upgradable request has no body: its end follows its head.
            if case .end = part { switchToHTTP2(context: context, head: upgrading.head, settings: upgrading.settings) }
            return
        }
        if case .head(let head) = part, let settings = H2CUpgrade.settingsPayload(head) {
            upgrading = (head, settings)
            return
        }
        context.fireChannelRead(data)
    }

    private func switchToHTTP2(context: ChannelHandlerContext, head: HTTPRequestHead, settings: [UInt8]) {
        upgrading = nil
        let pipeline = context.pipeline.syncOperations
        do {
            let stream1 = try H2CUpgrade.stream1Frames(for: head)
            // The order matters. The HTTP/1.1 request side goes first (it holds no request: this one stopped here),
            // then the 101 is the last thing the response encoder writes, then the encoder goes, so that the HTTP/2
            // handler's own SETTINGS (written as soon as it is added) reach the socket as bytes.
            try pipeline.removeHandler(pipeline.handler(type: HTTPProxyHandler.self), promise: nil)
            try pipeline.removeHandler(pipeline.handler(type: HTTPServerPipelineHandler.self), promise: nil)
            var headers = HTTPHeaders()
            headers.add(name: "connection", value: "Upgrade")
            headers.add(name: "upgrade", value: "h2c")
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: headers))), promise: nil)
            try pipeline.removeHandler(pipeline.handler(type: HTTPResponseEncoder.self), promise: nil)
            try pipeline.addHandler(H2CUpgradePrefaceHandler(H2CUpgradePreface(settingsPayload: settings, stream1: stream1)))
            try MeshProxy.configureHTTP2(context.channel, listener: listener)
            pipeline.removeHandler(context: context, promise: nil)
            // The decoder stopped parsing at the end of the upgrade request; removing it passes on the bytes it holds
            // (the start of the client's preface, if any arrived) to the preface handler.
            pipeline.removeHandler(name: MeshPipelineNames.decoder, promise: nil)
        } catch {
            context.close(promise: nil)
        }
    }
}

/// The first handler of a connection just upgraded to h2c: rewrites the client's first bytes with
/// `H2CUpgradePreface`, passes them to the HTTP/2 handler and leaves the pipeline.
final class H2CUpgradePrefaceHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var preface: H2CUpgradePreface

    init(_ preface: H2CUpgradePreface) {
        self.preface = preface
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch preface.receive(unwrapInboundIn(data)) {
        case .needMoreBytes:
            return
        case .forward(let bytes):
            context.fireChannelRead(wrapInboundOut(bytes))
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        case .close:
            context.close(promise: nil)
        }
    }
}
