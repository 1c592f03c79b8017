import NIOCore
import NIOHPACK
import NIOHTTP1

/// The pure rules of the upgrade from HTTP/1.1 to HTTP/2 (h2c, RFC 7540 §3.2): which requests are upgraded, and
/// the HTTP/2 frames that carry the upgrading request as stream 1.
///
/// NIO's HTTP/2 handler has no notion of an upgrade, so the switch is made by what it reads: the client's
/// connection preface and SETTINGS (with the `HTTP2-Settings` values in front), then a HEADERS frame for stream 1
/// built here, then whatever the client sends. See `H2CUpgradePreface`.
public enum H2CUpgrade {
    /// The largest frame the server takes before its own SETTINGS are acknowledged (RFC 9113 §4.2).
    static let maxFrameSize = 16_384

    /// The decoded `HTTP2-Settings` payload when `head` asks for h2c and gets it; `nil` serves it over HTTP/1.1.
    ///
    /// A request with a body is not upgraded: its body would have to arrive in full over HTTP/1.1 before stream 1
    /// could start, so it would be buffered whole, which the proxy never does. RFC 7540 §3.2 lets a server ignore
    /// the Upgrade; such a request is answered over HTTP/1.1 (and the connection closes after it, see
    /// `HTTPRules.isUpgradeRequest`).
    public static func settingsPayload(_ head: HTTPRequestHead) -> [UInt8]? {
        guard head.version == .http1_1, tokens(head.headers, "upgrade").contains("h2c") else { return nil }
        let connection = tokens(head.headers, "connection")
        guard connection.contains("upgrade"), connection.contains("http2-settings") else { return nil }
        // Exactly one HTTP2-Settings, or no upgrade (§3.2.1).
        let values = head.headers["http2-settings"]
        guard values.count == 1, let payload = base64URLDecoded(values[0]), payload.count % 6 == 0 else { return nil }
        guard !head.headers.contains(name: "transfer-encoding"), head.headers["content-length"].allSatisfy({ $0 == "0" }) else {
            return nil
        }
        return payload
    }

    /// The upgrading request as stream 1: a HEADERS frame (and CONTINUATION frames past the frame size) with
    /// END_STREAM, since the request was complete over HTTP/1.1 (the stream is half-closed by the client).
    ///
    /// Every field is encoded without indexing, so the server's HPACK decoder table stays as the client's encoder
    /// believes it to be: empty.
    public static func stream1Frames(for head: HTTPRequestHead) throws -> ByteBuffer {
        var headers = HPACKHeaders()
        headers.add(name: ":method", value: head.method.rawValue, indexing: .nonIndexable)
        headers.add(name: ":scheme", value: "http", indexing: .nonIndexable)
        if let host = head.headers.first(name: "host") {
            headers.add(name: ":authority", value: host, indexing: .nonIndexable)
        }
        headers.add(name: ":path", value: head.uri, indexing: .nonIndexable)
        var fields = head.headers
        HTTPRules.removeHopByHop(&fields)
        fields.remove(name: "host")
        for (name, value) in fields {
            headers.add(name: name.lowercased(), value: value, indexing: .nonIndexable)
        }
        var encoder = HPACKEncoder(allocator: ByteBufferAllocator())
        var block = ByteBuffer()
        try encoder.encode(headers: headers, to: &block)
        var frames = ByteBuffer()
        var isFirst = true
        repeat {
            let fragment = block.readSlice(length: min(maxFrameSize, block.readableBytes))!
            let isLast = block.readableBytes == 0
            let endStream: UInt8 = isFirst ? 0x1 : 0
            let endHeaders: UInt8 = isLast ? 0x4 : 0
            frames.writeFrameHeader(length: fragment.readableBytes, type: isFirst ? 0x1 : 0x9, flags: endStream | endHeaders, streamID: 1)
            frames.writeImmutableBuffer(fragment)
            isFirst = false
        } while block.readableBytes > 0
        return frames
    }

    /// The comma-separated tokens of every `name` field, lowercased.
    static func tokens(_ headers: HTTPHeaders, _ name: String) -> [String] {
        headers[name].flatMap { $0.split(separator: ",") }.map { $0.trimmingSpaces().lowercased() }
    }

    /// Decodes base64url (RFC 4648 §5) with or without padding; `nil` for anything else.
    static func base64URLDecoded(_ text: String) -> [UInt8]? {
        var bits: UInt32 = 0
        var bitCount = 0
        var out: [UInt8] = []
        var sawPadding = false
        for character in text.utf8 {
            let value: UInt8
            switch character {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = character - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = character - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = character - UInt8(ascii: "0") + 52
            case UInt8(ascii: "-"): value = 62
            case UInt8(ascii: "_"): value = 63
            case UInt8(ascii: "="):
                sawPadding = true
                continue
            default: return nil
            }
            guard !sawPadding else { return nil }
            bits = bits << 6 | UInt32(value)
            bitCount += 6
            if bitCount >= 8 {
                bitCount -= 8
                out.append(UInt8(truncatingIfNeeded: bits >> UInt32(bitCount)))
            }
        }
        // A single leftover character (6 bits) cannot end a valid encoding.
        return bitCount == 6 ? nil : out
    }
}

/// The first bytes of an upgraded connection, rewritten for NIO's HTTP/2 server: the client's connection preface,
/// its first SETTINGS frame with the `HTTP2-Settings` values put in front, then stream 1's request, then the rest.
///
/// Merging keeps the protocol exact: the header's settings apply before the client's own (later ones override
/// earlier ones within a frame, RFC 9113 §6.5), and the one SETTINGS ACK the server sends is the one the client
/// waits for (a separate frame for the header would earn the client an ACK it never asked for). Bytes that are not
/// a preface followed by SETTINGS go through unchanged, for the HTTP/2 handler to refuse.
public struct H2CUpgradePreface: Sendable {
    /// What to pass on.
    public enum Output: Sendable, Equatable {
        /// Not enough bytes yet; nothing to pass on.
        case needMoreBytes
        /// Pass these on; the rewriting is done.
        case forward(ByteBuffer)
        /// The client's SETTINGS are too large to carry the header's too (past the 16 KB frame size): close the
        /// connection, since passing them on alone would leave stream 1 unanswered.
        case close
    }

    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    private let settingsPayload: [UInt8]
    private let stream1: ByteBuffer
    private var received = ByteBuffer()

    public init(settingsPayload: [UInt8], stream1: ByteBuffer) {
        self.settingsPayload = settingsPayload
        self.stream1 = stream1
    }

    public mutating func receive(_ bytes: ByteBuffer) -> Output {
        var bytes = bytes
        received.writeBuffer(&bytes)
        let view = received.readableBytesView
        let prefaceLength = Self.preface.count
        guard view.prefix(prefaceLength).elementsEqual(Self.preface.prefix(view.count)) else { return .forward(received) }
        guard received.readableBytes >= prefaceLength + 9 else { return .needMoreBytes }
        let start = received.readerIndex + prefaceLength
        let length = Int(received.getInteger(at: start, as: UInt16.self)!) << 8 | Int(received.getInteger(at: start + 2, as: UInt8.self)!)
        let type = received.getInteger(at: start + 3, as: UInt8.self)!
        let flags = received.getInteger(at: start + 4, as: UInt8.self)!
        let streamID = received.getInteger(at: start + 5, as: UInt32.self)! & 0x7fff_ffff
        let isSettings = type == 0x4 && flags & 0x1 == 0 && streamID == 0 && length % 6 == 0
        guard isSettings else { return .forward(received) }
        guard length + settingsPayload.count <= H2CUpgrade.maxFrameSize else { return .close }
        guard received.readableBytes >= prefaceLength + 9 + length else { return .needMoreBytes }
        var out = ByteBuffer()
        out.writeBytes(Self.preface)
        out.writeFrameHeader(length: settingsPayload.count + length, type: 0x4, flags: 0, streamID: 0)
        out.writeBytes(settingsPayload)
        received.moveReaderIndex(forwardBy: prefaceLength + 9)
        var clientSettings = received.readSlice(length: length)!
        out.writeBuffer(&clientSettings)
        out.writeImmutableBuffer(stream1)
        out.writeBuffer(&received)
        return .forward(out)
    }
}

extension ByteBuffer {
    /// Writes an HTTP/2 frame header (RFC 9113 §4.1).
    fileprivate mutating func writeFrameHeader(length: Int, type: UInt8, flags: UInt8, streamID: UInt32) {
        writeInteger(UInt8(truncatingIfNeeded: length >> 16))
        writeInteger(UInt16(truncatingIfNeeded: length))
        writeInteger(type)
        writeInteger(flags)
        writeInteger(streamID)
    }
}
