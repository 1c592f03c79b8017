import Mesh
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import Testing

/// The HTTP/2 upstream pool's bookkeeping, without sockets.
@Suite struct HTTP2ConnectionPoolTests {
    final class Loop {}
    let loopA = ObjectIdentifier(Loop.self)
    let loopB = ObjectIdentifier(HTTP2ConnectionPoolTests.self)

    @Test func streamsShareAConnectionUpToTheUpstreamsLimitThenAnotherOpens() {
        var pool = HTTP2ConnectionPool()
        #expect(pool.reserveStream(endpoint: 0, loop: loopA, mayOpen: true) == .open(0))
        pool.settingsReceived(0, maxConcurrentStreams: 2)
        #expect(pool.reserveStream(endpoint: 0, loop: loopA, mayOpen: true) == .existing(0))
        // Full: a second connection, unless the cluster allows no more connections.
        #expect(pool.reserveStream(endpoint: 0, loop: loopA, mayOpen: false) == .full)
        #expect(pool.reserveStream(endpoint: 0, loop: loopA, mayOpen: true) == .open(1))
        // Other endpoints and other event loops have connections of their own.
        #expect(pool.reserveStream(endpoint: 1, loop: loopA, mayOpen: true) == .open(2))
        #expect(pool.reserveStream(endpoint: 0, loop: loopB, mayOpen: true) == .open(3))
        #expect(pool.connections[0]?.streams == 2)
    }

    @Test func beforeItsSettingsAConnectionIsAssumedToTake100Streams() {
        var pool = HTTP2ConnectionPool()
        #expect(pool.reserveStream(endpoint: 0, loop: loopA, mayOpen: true) == .open(0))
        for _ in 1..<HTTP2ConnectionPool.assumedMaxConcurrentStreams {
            #expect(pool.reserveStream(endpoint: 0, loop: loopA, mayOpen: false) == .existing(0))
        }
        #expect(pool.reserveStream(endpoint: 0, loop: loopA, mayOpen: false) == .full)
    }

    @Test func anExtraConnectionClosesOnceEmptyAndTheLastOneStays() {
        var pool = HTTP2ConnectionPool()
        _ = pool.reserveStream(endpoint: 0, loop: loopA, mayOpen: true)
        pool.settingsReceived(0, maxConcurrentStreams: 1)
        #expect(pool.reserveStream(endpoint: 0, loop: loopA, mayOpen: true) == .open(1))
        // The busiest connection with room takes new streams, so extra ones empty out.
        let closesExtra = pool.streamClosed(1)
        #expect(closesExtra)
        #expect(pool.connections[1]?.isDraining == true)
        #expect(pool.reserveStream(endpoint: 0, loop: loopA, mayOpen: false) == .full)
        pool.connectionClosed(1)
        let closesLast = pool.streamClosed(0)
        #expect(!closesLast)
        #expect(pool.reserveStream(endpoint: 0, loop: loopA, mayOpen: false) == .existing(0))
    }

    @Test func goAwayDrainsAConnection() {
        var pool = HTTP2ConnectionPool()
        _ = pool.reserveStream(endpoint: 0, loop: loopA, mayOpen: true)
        let closesBusy = pool.goAwayReceived(0)
        #expect(!closesBusy, "a draining connection finishes its streams")
        #expect(pool.reserveStream(endpoint: 0, loop: loopA, mayOpen: true) == .open(1))
        let closesDrained = pool.streamClosed(0)
        #expect(closesDrained)
        pool.connectionClosed(0)
        #expect(pool.connections.keys.sorted() == [1])
    }
}

/// The h2c upgrade's pure parts, and NIO's HTTP/2 server taking the rewritten bytes in process.
@Suite struct H2CUpgradeTests {
    /// SETTINGS_MAX_CONCURRENT_STREAMS = 100, SETTINGS_INITIAL_WINDOW_SIZE = 0x02000000 (curl's).
    static let curlSettings = "AAMAAABkAAQCAAAA"
    static let curlSettingsBytes: [UInt8] = [0, 3, 0, 0, 0, 100, 0, 4, 2, 0, 0, 0]

    static func head(_ headers: [(String, String)], version: HTTPVersion = .http1_1) -> HTTPRequestHead {
        HTTPRequestHead(version: version, method: .GET, uri: "/a?b=c", headers: HTTPHeaders([("Host", "example.com")] + headers))
    }

    static let upgrade = [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", curlSettings)]

    @Test func anUpgradeRequestWithoutABodyIsUpgraded() {
        #expect(H2CUpgrade.settingsPayload(Self.head(Self.upgrade)) == Self.curlSettingsBytes)
        #expect(H2CUpgrade.settingsPayload(Self.head(Self.upgrade + [("Content-Length", "0")])) == Self.curlSettingsBytes)
        // Padding is tolerated, and an empty payload is a valid (empty) SETTINGS.
        let padded = [("Connection", "upgrade,http2-settings"), ("Upgrade", "websocket, H2C"), ("HTTP2-Settings", "AAMAAABk")]
        #expect(H2CUpgrade.settingsPayload(Self.head(padded)) == [0, 3, 0, 0, 0, 100])
        let empty = [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", "")]
        #expect(H2CUpgrade.settingsPayload(Self.head(empty)) == [])
    }

    @Test(arguments: [
        [("Connection", "Upgrade"), ("Upgrade", "h2c"), ("HTTP2-Settings", curlSettings)],  // not in Connection
        [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2"), ("HTTP2-Settings", curlSettings)],  // h2 is TLS only
        [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c")],  // no settings
        upgrade + [("HTTP2-Settings", curlSettings)],  // two of them
        [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAAB")],  // 5 bytes
        [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMA+ABk")],  // not base64url
        upgrade + [("Content-Length", "5")],  // a body
        upgrade + [("Transfer-Encoding", "chunked")],
    ])
    func otherRequestsAreNotUpgraded(headers: [(String, String)]) {
        #expect(H2CUpgrade.settingsPayload(Self.head(headers)) == nil)
    }

    @Test func http10IsNotUpgraded() {
        #expect(H2CUpgrade.settingsPayload(Self.head(Self.upgrade, version: .http1_0)) == nil)
    }

    @Test func aProtocolSwitchAnsweredOverHTTP1ClosesTheConnection() {
        var machine = HTTPProxyStateMachine(routes: [RouteConfig(cluster: "c")], limits: HTTPLimits())
        let head = HTTPRequestHead(
            version: .http1_1, method: .GET, uri: "/", headers: HTTPHeaders([("Connection", "Upgrade"), ("Upgrade", "websocket")]))
        _ = machine.requestHead(head, clientIP: nil)
        _ = machine.requestEnd()
        _ = machine.upstreamAcquired(head: head)
        let relayed = machine.responseHead(HTTPResponseHead(version: .http1_1, status: .ok))
        #expect(relayed.count == 1)
        if case .relayHead(let out) = relayed.first { #expect(out.headers["connection"] == ["close"]) }
        #expect(machine.responseEnd() == [.relayEnd(reuseUpstream: true, closeClient: true)])
    }

    /// Client bytes after the 101: the preface, a SETTINGS frame (ENABLE_PUSH = 0), then a PING.
    static func clientBytes() -> ByteBuffer {
        var bytes = ByteBuffer(string: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        bytes.writeBytes([0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0])
        bytes.writeBytes([0, 0, 8, 6, 0, 0, 0, 0, 0] + [UInt8](repeating: 7, count: 8))
        return bytes
    }

    @Test func thePrefaceIsRewrittenWhicheverWayTheBytesArrive() throws {
        let stream1 = try H2CUpgrade.stream1Frames(for: Self.head(Self.upgrade))
        let client = Self.clientBytes()
        var whole = H2CUpgradePreface(settingsPayload: Self.curlSettingsBytes, stream1: stream1)
        guard case .forward(var rewritten) = whole.receive(client) else {
            Issue.record("a whole preface and SETTINGS must be forwarded")
            return
        }
        #expect(rewritten.readString(length: 24) == "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        // One SETTINGS frame: the header's values first, then the client's own.
        #expect(rewritten.readBytes(length: 9) == [0, 0, 18, 4, 0, 0, 0, 0, 0])
        #expect(rewritten.readBytes(length: 18) == Self.curlSettingsBytes + [0, 2, 0, 0, 0, 0])
        #expect(rewritten.readSlice(length: stream1.readableBytes) == stream1)
        #expect(rewritten.readableBytes == 17, "the PING follows unchanged")

        var byteByByte = H2CUpgradePreface(settingsPayload: Self.curlSettingsBytes, stream1: stream1)
        var outputs: [H2CUpgradePreface.Output] = []
        for byte in client.readableBytesView {
            outputs.append(byteByByte.receive(ByteBuffer(bytes: [byte])))
            if case .forward = outputs.last { break }
        }
        #expect(outputs.dropLast().allSatisfy { $0 == .needMoreBytes })
        #expect(outputs.count == 24 + 9 + 6)
    }

    @Test func otherBytesGoThroughUnchangedAndOversizedSettingsEndTheConnection() throws {
        var preface = H2CUpgradePreface(settingsPayload: [], stream1: ByteBuffer())
        #expect(preface.receive(ByteBuffer(string: "GET / HTTP/1.1\r\n")) == .forward(ByteBuffer(string: "GET / HTTP/1.1\r\n")))
        var ping = ByteBuffer(string: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        ping.writeBytes([0, 0, 8, 6, 0, 0, 0, 0, 0] + [UInt8](repeating: 7, count: 8))
        var notSettings = H2CUpgradePreface(settingsPayload: [], stream1: ByteBuffer())
        #expect(notSettings.receive(ping) == .forward(ping))
        // SETTINGS that leave no room for the header's in one frame end the connection rather than lose stream 1.
        var huge = ByteBuffer(string: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        huge.writeBytes([0, 0x3f, 0xfc, 4, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 0x3ffc))
        var tooMuch = H2CUpgradePreface(settingsPayload: Self.curlSettingsBytes, stream1: ByteBuffer())
        #expect(tooMuch.receive(huge) == .close)
    }

    @Test func stream1CarriesTheRequestWithoutHopByHopFieldsAndLargeHeadsUseContinuation() throws {
        let big = String(repeating: "v", count: 40_000)
        let head = Self.head(Self.upgrade + [("X-Big", big), ("Keep-Alive", "5"), ("TE", "trailers")])
        var frames = try H2CUpgrade.stream1Frames(for: head)
        var block = ByteBuffer()
        var types: [UInt8] = []
        var flags: [UInt8] = []
        while frames.readableBytes > 0 {
            let length = Int(frames.readInteger(as: UInt16.self)!) << 8 | Int(frames.readInteger(as: UInt8.self)!)
            types.append(frames.readInteger(as: UInt8.self)!)
            flags.append(frames.readInteger(as: UInt8.self)!)
            #expect(frames.readInteger(as: UInt32.self) == 1)
            #expect(length <= 16_384)
            var fragment = frames.readSlice(length: length)!
            block.writeBuffer(&fragment)
        }
        #expect(types == [1, 9, 9])
        #expect(flags == [0x1, 0, 0x4], "END_STREAM on HEADERS, END_HEADERS on the last frame")
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator(), maxDynamicTableSize: 4096, maxHeaderListSize: 100_000)
        let decoded = try decoder.decodeHeaders(from: &block)
        #expect(decoded.map(\.name) == [":method", ":scheme", ":authority", ":path", "x-big"])
        #expect(decoded[":authority"] == ["example.com"])
        #expect(decoded[":path"] == ["/a?b=c"])
        #expect(decoded["x-big"] == [big])
        #expect(decoded.allSatisfy { $0.indexable == .nonIndexable }, "nothing may enter the server decoder's table")
    }

    /// NIO's HTTP/2 server, fed the rewritten bytes, serves the upgrading request as stream 1 and acknowledges the
    /// client's SETTINGS exactly once.
    @Test func nioServesTheUpgradingRequestAsStream1() throws {
        let channel = EmbeddedChannel()
        let received = NIOLockedValueBox<[HTTPServerRequestPart]>([])
        _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
            mode: .server, connectionConfiguration: .init(), streamConfiguration: .init()
        ) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                try stream.pipeline.syncOperations.addHandler(RequestCollector(received: received))
            }
        }
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        var preface = H2CUpgradePreface(
            settingsPayload: Self.curlSettingsBytes, stream1: try H2CUpgrade.stream1Frames(for: Self.head(Self.upgrade)))
        guard case .forward(let bytes) = preface.receive(Self.clientBytes()) else {
            Issue.record("not forwarded")
            return
        }
        try channel.writeInbound(bytes)
        channel.embeddedEventLoop.run()
        let parts = received.withLockedValue { $0 }
        #expect(parts.count == 2)
        if case .head(let head) = parts.first {
            #expect(head.method == .GET)
            #expect(head.uri == "/a?b=c")
            #expect(head.headers["host"] == ["example.com"])
        } else {
            Issue.record("no request head on stream 1: \(parts)")
        }
        if case .end = parts.last {} else { Issue.record("stream 1 is not half-closed by the client: \(parts)") }
        var written = ByteBuffer()
        while var chunk = try channel.readOutbound(as: IOData.self).map({ data -> ByteBuffer in
            guard case .byteBuffer(let buffer) = data else { return ByteBuffer() }
            return buffer
        }) {
            written.writeBuffer(&chunk)
        }
        var settingsAcks = 0
        var pingAcks = 0
        while written.readableBytes >= 9 {
            let length = Int(written.readInteger(as: UInt16.self)!) << 8 | Int(written.readInteger(as: UInt8.self)!)
            let type = written.readInteger(as: UInt8.self)!
            let flags = written.readInteger(as: UInt8.self)!
            written.moveReaderIndex(forwardBy: 4 + length)
            if type == 4 && flags & 1 == 1 { settingsAcks += 1 }
            if type == 6 && flags & 1 == 1 { pingAcks += 1 }
        }
        #expect(settingsAcks == 1)
        #expect(pingAcks == 1, "the bytes after the SETTINGS reached the server")
        _ = try? channel.finish()
    }
}

/// Keeps every request part a stream receives.
private final class RequestCollector: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    let received: NIOLockedValueBox<[HTTPServerRequestPart]>

    init(received: NIOLockedValueBox<[HTTPServerRequestPart]>) { self.received = received }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        received.withLockedValue { $0.append(part) }
    }
}
