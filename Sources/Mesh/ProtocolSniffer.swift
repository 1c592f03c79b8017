import NIOCore

/// Chooses HTTP/1.1 or HTTP/2 with prior knowledge (h2c) for a new connection from its first bytes.
///
/// It holds at most the 24 bytes of the HTTP/2 connection preface, then installs the chosen pipeline after
/// itself, passes on everything it held and removes itself.
final class ProtocolSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// Which protocol the connection speaks.
    enum Choice {
        case http1
        case http2
    }

    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    private var buffered: ByteBuffer?
    private let install: (Channel, Choice) throws -> Void

    init(install: @escaping (Channel, Choice) throws -> Void) {
        self.install = install
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffered == nil {
            buffered = incoming
        } else {
            buffered!.writeBuffer(&incoming)
        }
        let bytes = buffered!.readableBytesView
        let count = min(bytes.count, Self.preface.count)
        let matches = bytes.prefix(count).elementsEqual(Self.preface.prefix(count))
        if matches && count < Self.preface.count { return }
        do {
            try install(context.channel, matches ? .http2 : .http1)
        } catch {
            context.close(promise: nil)
            return
        }
        let held = buffered!
        buffered = nil
        context.fireChannelRead(wrapInboundOut(held))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        buffered = nil
        context.fireChannelInactive()
    }
}
