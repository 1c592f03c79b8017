import HotUpgrade
@testable import Mesh
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTP2
import Testing

/// The pure parts of moving an HTTP/2 connection, and the whole move between two NIO servers with one NIO client
/// that never learns of it.
@Suite struct HTTP2HandoverTests {
    /// A SETTINGS frame, a WINDOW_UPDATE, a DATA frame, and HEADERS then CONTINUATION.
    static func sampleFrames() -> ByteBuffer {
        var bytes = ByteBuffer(bytes: HTTP2FrameScanner.clientPreface)
        bytes.writeHTTP2FrameHeader(length: 12, type: 0x4, flags: 0, streamID: 0)
        bytes.writeBytes([0, 1, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0])
        bytes.writeHTTP2FrameHeader(length: 4, type: 0x8, flags: 0, streamID: 0)
        bytes.writeInteger(UInt32(1000))
        bytes.writeHTTP2FrameHeader(length: 3, type: 0x0, flags: 0, streamID: 1)
        bytes.writeBytes([1, 2, 3])
        bytes.writeHTTP2FrameHeader(length: 1, type: 0x1, flags: 0, streamID: 3)
        bytes.writeBytes([0x82])
        bytes.writeHTTP2FrameHeader(length: 1, type: 0x9, flags: 0x4, streamID: 3)
        bytes.writeBytes([0x84])
        return bytes
    }

    @Test func theScannerFindsTheSameFramesHoweverTheBytesAreCut() {
        var whole = HTTP2FrameScanner(expectingPreface: true)
        let frames = whole.scan(Self.sampleFrames())
        #expect(frames.map(\.type) == [0x4, 0x8, 0x0, 0x1, 0x9])
        #expect(frames[0].payload == [0, 1, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0])
        #expect(frames[2].payload.isEmpty, "DATA payloads are not kept")
        #expect(frames[0].start == 24 && frames[4].end == Self.sampleFrames().readableBytes)
        #expect(whole.isAtBoundary)

        var byteByByte = HTTP2FrameScanner(expectingPreface: true)
        var found: [HTTP2FrameScanner.Frame] = []
        var bytes = Self.sampleFrames()
        var wasInHeaderBlock = false
        while let byte = bytes.readSlice(length: 1) {
            let ended = byteByByte.scan(byte)
            found += ended.map { frame in
                var frame = frame
                frame.start = nil
                frame.end = 0
                return frame
            }
            if ended.last?.type == 0x1 { wasInHeaderBlock = !byteByByte.isAtBoundary }
        }
        #expect(found.map(\.type) == frames.map(\.type))
        #expect(found.map(\.payload) == frames.map(\.payload))
        #expect(wasInHeaderBlock, "a HEADERS without END_HEADERS is not a boundary until its CONTINUATION ends")
        #expect(byteByByte.isAtBoundary)
    }

    @Test func theLedgerKeepsSettingsWindowsAndAcknowledgements() {
        var ledger = HTTP2ConnectionLedger()
        var scanner = HTTP2FrameScanner(expectingPreface: true)
        for frame in scanner.scan(Self.sampleFrames()) { ledger.received(frame) }
        #expect(ledger.clientSettings == [.init(identifier: 1, value: 0), .init(identifier: 4, value: 65_536)])
        #expect(ledger.lastClientStreamID == 3)
        #expect(ledger.sendWindow == 65_535 + 1000)
        #expect(ledger.receiveWindow == 65_535 - 3)
        #expect(!ledger.isSettled, "the proxy has neither sent its SETTINGS nor acknowledged the client's")
        var sent = ByteBuffer()
        sent.writeHTTP2FrameHeader(length: 0, type: 0x4, flags: 0, streamID: 0)
        sent.writeHTTP2FrameHeader(length: 0, type: 0x4, flags: 0x1, streamID: 0)
        sent.writeHTTP2FrameHeader(length: 2000, type: 0x0, flags: 0, streamID: 3)
        sent.writeRepeatingByte(0, count: 2000)
        var out = HTTP2FrameScanner(expectingPreface: false)
        for frame in out.scan(sent) { ledger.sent(frame) }
        #expect(!ledger.isSettled, "the client has not acknowledged the proxy's SETTINGS")
        var ack = ByteBuffer()
        ack.writeHTTP2FrameHeader(length: 0, type: 0x4, flags: 0x1, streamID: 0)
        for frame in scanner.scan(ack) { ledger.received(frame) }
        #expect(ledger.isSettled)
        #expect(ledger.sendWindow == 65_535 + 1000 - 2000)
        #expect(ledger.state(preRead: []) == nil, "a fresh handler cannot be told of a send window below 65,535")
        var update = ByteBuffer()
        update.writeHTTP2FrameHeader(length: 4, type: 0x8, flags: 0, streamID: 0)
        update.writeInteger(UInt32(5000))
        for frame in scanner.scan(update) { ledger.received(frame) }
        #expect(ledger.state(preRead: [9]) == HandoverConnection.HTTP2State(
            clientSettings: [.init(identifier: 1, value: 0), .init(identifier: 4, value: 65_536)], lastClientStreamID: 3,
            sendWindow: 65_535 + 4000, preRead: [9]))
    }

    @Test func theResumePrefaceCarriesTheSettingsAndTheSurplusWindow() {
        let state = HandoverConnection.HTTP2State(
            clientSettings: [.init(identifier: 4, value: 1 << 20)], lastClientStreamID: 9, sendWindow: 100_000, preRead: [])
        var scanner = HTTP2FrameScanner(expectingPreface: true)
        var ledger = HTTP2ConnectionLedger()
        for frame in scanner.scan(HTTP2ResumePreface.bytes(for: state)) { ledger.received(frame) }
        #expect(ledger.clientSettings == state.clientSettings)
        #expect(ledger.sendWindow == 100_000)
        #expect(scanner.isAtBoundary)
        var exact = state
        exact.sendWindow = 65_535
        #expect(HTTP2ResumePreface.bytes(for: exact).readableBytes == 24 + 9 + 6, "no WINDOW_UPDATE when there is no surplus")
    }

    /// One NIO client, two NIO servers behind `HTTP2HandoverGate`: requests with bodies both ways and header values
    /// that fill the servers' HPACK tables, a move at a quiet point with a new stream held back as pre-read bytes,
    /// then more requests on the second server. The client sees every response right and no error, GOAWAY or reset.
    @Test func aConnectionMovesToAFreshHandlerAndTheClientNeverNotices() throws {
        let client = EmbeddedChannel()
        var clientConfiguration = NIOHTTP2Handler.ConnectionConfiguration()
        clientConfiguration.targetWindowSize = 1 << 24
        let multiplexer = try client.pipeline.syncOperations.configureHTTP2Pipeline(
            mode: .client, connectionConfiguration: clientConfiguration, streamConfiguration: .init()
        ) { $0.eventLoop.makeSucceededVoidFuture() }
        let rootFrames = RootFrameRecorder()
        try client.pipeline.syncOperations.addHandler(rootFrames)
        try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()

        let first = try Self.server(resuming: nil)
        try Self.shuttle(client, first)
        var responses: [ExchangeResult] = []
        for index in 0..<6 {
            responses.append(try Self.exchange(multiplexer, client, first, path: "/first/\(index)", requestBody: 20_000, responseBody: 30_000))
        }
        let gate = try first.pipeline.syncOperations.handler(type: HTTP2HandoverGate.self)
        #expect(gate.ledger.receiveWindow < 65_535, "request bodies used the window the proxy grants")

        // Marked; a new stream then arrives and is held, and the connection is quiet without it.
        gate.mark()
        let held = try Self.start(multiplexer, client, path: "/held", requestBody: 100, responseBody: 70_000)
        try Self.shuttle(client, first)
        #expect(held.responseParts.withLockedValue { $0.isEmpty })
        var state: HandoverConnection.HTTP2State?
        for _ in 0..<5 {
            if case .quiet(let captured) = gate.captureStep() {
                state = captured
                break
            }
            try Self.shuttle(client, first)
        }
        let moved = try #require(state)
        #expect(!moved.preRead.isEmpty, "the held stream moves as pre-read bytes")
        #expect(moved.lastClientStreamID == 11)
        #expect(moved.sendWindow > 65_535, "the client raised its window past the initial one")
        #expect(gate.ledger.receiveWindow == 65_535, "the window the proxy grants was topped up before the move")

        let second = try Self.server(resuming: moved)
        try second.pipeline.syncOperations.handler(type: HTTP2HandoverGate.self).resumeAfterAdoption()
        let written = Self.frameTypes(try Self.drainOutbound(second))
        #expect(written.contains { $0.type == 0x4 && $0.flags == 0 }, "the new handler sends its own SETTINGS")
        #expect(!written.contains { $0.type == 0x4 && $0.flags == 1 }, "its acknowledgement of the replayed SETTINGS stays here")
        try client.writeInbound(Self.encode(written))
        try Self.shuttle(client, second)
        responses.append(try held.finish(client, second))
        for index in 0..<6 {
            responses.append(try Self.exchange(multiplexer, client, second, path: "/first/\(index)", requestBody: 20_000, responseBody: 100_000))
            responses.append(try Self.exchange(multiplexer, client, second, path: "/second/\(index)", requestBody: 0, responseBody: 10))
        }
        for response in responses {
            #expect(response.echo == response.path, "HPACK tables agree on both sides")
            #expect(response.bodyBytes == response.expectedBody)
            #expect(response.ended)
        }
        #expect(client.isActive)
        #expect(!rootFrames.frames.withLockedValue { $0.contains { if case .goAway = $0.payload { true } else { false } } })
        let gate2 = try second.pipeline.syncOperations.handler(type: HTTP2HandoverGate.self)
        #expect(gate2.ledger.isSettled, "the client acknowledged the new handler's SETTINGS and got no stray acknowledgement")
        _ = try? client.finish()
        _ = try? first.finish()
        _ = try? second.finish()
    }

    // MARK: Helpers

    static func server(resuming state: HandoverConnection.HTTP2State?) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try MeshProxy.configureHTTP2Connection(channel, maxHeaderListSize: 65_536, resuming: state) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                try stream.pipeline.syncOperations.addHandler(Responder())
            }
        }
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2)).wait()
        return channel
    }

    static func drainOutbound(_ channel: EmbeddedChannel) throws -> ByteBuffer {
        var bytes = ByteBuffer()
        while let data = try channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(var chunk) = data { bytes.writeBuffer(&chunk) }
        }
        return bytes
    }

    /// Carries bytes both ways until neither side has anything to say.
    static func shuttle(_ client: EmbeddedChannel, _ server: EmbeddedChannel) throws {
        for _ in 0..<200 {
            client.embeddedEventLoop.run()
            server.embeddedEventLoop.run()
            let toServer = try drainOutbound(client)
            let toClient = try drainOutbound(server)
            if toServer.readableBytes == 0 && toClient.readableBytes == 0 { return }
            if toServer.readableBytes > 0 { try server.writeInbound(toServer) }
            if toClient.readableBytes > 0 { try client.writeInbound(toClient) }
        }
        throw ShuttleError()
    }

    struct ShuttleError: Error {}

    static func frameTypes(_ bytes: ByteBuffer) -> [(type: UInt8, flags: UInt8, bytes: ByteBuffer)] {
        var bytes = bytes
        var frames: [(type: UInt8, flags: UInt8, bytes: ByteBuffer)] = []
        while bytes.readableBytes >= 9 {
            let length = Int(bytes.getInteger(at: bytes.readerIndex, as: UInt16.self)!) << 8
                | Int(bytes.getInteger(at: bytes.readerIndex + 2, as: UInt8.self)!)
            let frame = bytes.readSlice(length: 9 + length)!
            frames.append((frame.getInteger(at: frame.readerIndex + 3)!, frame.getInteger(at: frame.readerIndex + 4)!, frame))
        }
        return frames
    }

    static func encode(_ frames: [(type: UInt8, flags: UInt8, bytes: ByteBuffer)]) -> ByteBuffer {
        var out = ByteBuffer()
        for frame in frames {
            var bytes = frame.bytes
            out.writeBuffer(&bytes)
        }
        return out
    }

    static func start(
        _ multiplexer: NIOHTTP2Handler.StreamMultiplexer, _ client: EmbeddedChannel, path: String, requestBody: Int, responseBody: Int
    ) throws -> Exchange {
        let exchange = Exchange(path: path, expectedBody: responseBody)
        let future = multiplexer.createStreamChannel { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http))
                try stream.pipeline.syncOperations.addHandler(ResponseCollector(parts: exchange.responseParts))
            }
        }
        client.embeddedEventLoop.run()
        let stream = try future.wait()
        var headers = HTTPHeaders()
        headers.add(name: "host", value: "example.com")
        headers.add(name: "x-size", value: "\(responseBody)")
        headers.add(name: "x-unique", value: "\(path)-\(requestBody)")
        if requestBody > 0 { headers.add(name: "content-length", value: "\(requestBody)") }
        stream.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: requestBody > 0 ? .POST : .GET, uri: path, headers: headers)), promise: nil)
        if requestBody > 0 {
            stream.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(repeating: 0x62, count: requestBody))), promise: nil)
        }
        stream.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        client.embeddedEventLoop.run()
        return exchange
    }

    static func exchange(
        _ multiplexer: NIOHTTP2Handler.StreamMultiplexer, _ client: EmbeddedChannel, _ server: EmbeddedChannel,
        path: String, requestBody: Int, responseBody: Int
    ) throws -> ExchangeResult {
        let exchange = try start(multiplexer, client, path: path, requestBody: requestBody, responseBody: responseBody)
        try shuttle(client, server)
        return try exchange.finish(client, server)
    }
}

struct ExchangeResult {
    var path: String
    var echo: String?
    var bodyBytes: Int
    var expectedBody: Int
    var ended: Bool
}

final class Exchange: Sendable {
    let path: String
    let expectedBody: Int
    let responseParts = NIOLockedValueBox<[HTTPClientResponsePart]>([])

    init(path: String, expectedBody: Int) {
        self.path = path
        self.expectedBody = expectedBody
    }

    func finish(_ client: EmbeddedChannel, _ server: EmbeddedChannel) throws -> ExchangeResult {
        try HTTP2HandoverTests.shuttle(client, server)
        let parts = responseParts.withLockedValue { $0 }
        var result = ExchangeResult(path: path, echo: nil, bodyBytes: 0, expectedBody: expectedBody, ended: false)
        for part in parts {
            switch part {
            case .head(let head): result.echo = head.headers.first(name: "x-echo")
            case .body(let body): result.bodyBytes += body.readableBytes
            case .end: result.ended = true
            }
        }
        return result
    }
}

/// Answers a request once it ended: its path in `x-echo` (a new HPACK entry per path), `x-size` bytes of body.
private final class Responder: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    private var head: HTTPRequestHead?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            let size = Int(head.headers.first(name: "x-size") ?? "0") ?? 0
            var headers = HTTPHeaders()
            headers.add(name: "x-echo", value: head.uri)
            headers.add(name: "content-length", value: "\(size)")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(repeating: 0x61, count: size)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}

private final class ResponseCollector: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPClientResponsePart
    let parts: NIOLockedValueBox<[HTTPClientResponsePart]>

    init(parts: NIOLockedValueBox<[HTTPClientResponsePart]>) { self.parts = parts }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        parts.withLockedValue { $0.append(part) }
    }
}

/// Keeps the connection-level frames the client's HTTP/2 handler passes on (GOAWAY among them).
private final class RootFrameRecorder: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTP2Frame
    let frames = NIOLockedValueBox<[HTTP2Frame]>([])

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        frames.withLockedValue { $0.append(frame) }
    }
}
