import HotUpgrade
import NIOCore

/// Frame boundaries in one direction of an HTTP/2 byte stream (RFC 9113 §4.1), found as the bytes go by, with the
/// payloads the hot upgrade reads (SETTINGS, WINDOW_UPDATE). DATA payloads are skipped, never copied.
struct HTTP2FrameScanner: Sendable {
    /// One frame whose last byte was in the bytes just scanned.
    struct Frame: Sendable, Equatable {
        var type: UInt8
        var flags: UInt8
        var streamID: UInt32
        var length: Int
        /// The payload of SETTINGS and WINDOW_UPDATE frames; empty for the others.
        var payload: [UInt8]
        /// Where the frame's header began in the scanned bytes; `nil` when it began in earlier bytes.
        var start: Int?
        /// Where the frame ended in the scanned bytes.
        var end: Int

        var isSettings: Bool { type == 0x4 && flags & 0x1 == 0 }
        var isSettingsAck: Bool { type == 0x4 && flags & 0x1 != 0 }
        /// A HEADERS frame on a client stream above `lastStreamID`: it opens a stream.
        func opensStream(after lastStreamID: UInt32) -> Bool { type == 0x1 && streamID % 2 == 1 && streamID > lastStreamID }
    }

    static let clientPreface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    /// The largest frame payload before the peer's SETTINGS_MAX_FRAME_SIZE is known (RFC 9113 §4.2).
    static let maxKeptPayload = 16_384

    /// Bytes of the client's connection preface still to come (only the client → server direction has one).
    private var prefaceLeft: Int
    private var header: [UInt8] = []
    private var current: Frame?
    private var payloadLeft = 0
    /// In a header block: HEADERS or PUSH_PROMISE without END_HEADERS, and its CONTINUATION frames until one has it.
    private var isInHeaderBlock = false

    /// `expectingPreface` for the client → server direction of a connection that starts here.
    init(expectingPreface: Bool) {
        prefaceLeft = expectingPreface ? Self.clientPreface.count : 0
    }

    /// Between frames and outside any header block: a receiver holds nothing of a frame it has not finished.
    var isAtBoundary: Bool { prefaceLeft == 0 && header.isEmpty && current == nil && !isInHeaderBlock }
    /// Some of a frame has been scanned, not all of it.
    var isInsideFrame: Bool { !header.isEmpty || current != nil }
    var isPastPreface: Bool { prefaceLeft == 0 }

    /// Scans the next bytes of the stream; returns the frames that ended in them.
    mutating func scan(_ bytes: ByteBuffer) -> [Frame] {
        var frames: [Frame] = []
        var offset = 0
        let count = bytes.readableBytes
        let base = bytes.readerIndex
        // Where the header being assembled began in these bytes, if it did.
        var headerStart: Int? = nil
        if prefaceLeft > 0 {
            let skipped = min(prefaceLeft, count)
            prefaceLeft -= skipped
            offset = skipped
        }
        while offset < count {
            if current == nil {
                if header.isEmpty { headerStart = offset }
                let taken = min(9 - header.count, count - offset)
                header += bytes.getBytes(at: base + offset, length: taken)!
                offset += taken
                guard header.count == 9 else { break }
                let length = Int(header[0]) << 16 | Int(header[1]) << 8 | Int(header[2])
                let streamID = (UInt32(header[5]) << 24 | UInt32(header[6]) << 16 | UInt32(header[7]) << 8 | UInt32(header[8])) & 0x7fff_ffff
                let start = headerStart
                current = Frame(type: header[3], flags: header[4], streamID: streamID, length: length, payload: [], start: start, end: 0)
                header = []
                payloadLeft = length
            }
            let taken = min(payloadLeft, count - offset)
            // Only payloads a valid frame can have (NIO refuses longer frames right after): a bogus length costs nothing.
            if taken > 0, current!.type == 0x4 || current!.type == 0x8, current!.length <= Self.maxKeptPayload {
                current!.payload += bytes.getBytes(at: base + offset, length: taken)!
            }
            offset += taken
            payloadLeft -= taken
            guard payloadLeft == 0 else { break }
            var frame = current!
            current = nil
            frame.end = offset
            switch frame.type {
            case 0x1, 0x5: isInHeaderBlock = frame.flags & 0x4 == 0
            case 0x9: isInHeaderBlock = frame.flags & 0x4 == 0
            default: break
            }
            frames.append(frame)
        }
        return frames
    }
}

/// What the proxy's side of an HTTP/2 connection knows about the connection as a whole, kept from the frames that
/// cross the wire: the client's settings, the highest client stream, both connection-level flow-control windows,
/// and which SETTINGS frames are still unacknowledged. At a quiet point it is what a new process needs.
///
/// It mirrors NIO's `NIOHTTP2Handler` by construction: the handler's windows change only by the frames it reads
/// and writes (RFC 9113 §6.9), and those are exactly the frames seen here.
struct HTTP2ConnectionLedger: Sendable, Equatable {
    /// Every connection-level window starts here, whatever the settings say (RFC 9113 §6.9.2).
    static let initialWindow = 65_535

    private(set) var clientSettings: [HandoverConnection.HTTP2State.Setting] = []
    private(set) var lastClientStreamID: UInt32 = 0
    /// How many DATA bytes the proxy may still send.
    private(set) var sendWindow = initialWindow
    /// How many DATA bytes the client may still send, as far as the proxy has granted them.
    private(set) var receiveWindow = initialWindow
    private var settingsSent = 0
    private var acksReceived = 0
    private var settingsReceived = 0
    private var acksSent = 0
    /// The client's connection preface and first SETTINGS have been processed (or the connection was resumed).
    private var hasClientSettings = false
    /// A GOAWAY went either way: the connection is ending and does not move.
    private(set) var isGoingAway = false

    init() {}

    /// A connection resumed from `state`, whose client settings the new handler was just given.
    init(resuming state: HandoverConnection.HTTP2State) {
        clientSettings = state.clientSettings
        lastClientStreamID = state.lastClientStreamID
        sendWindow = Int(state.sendWindow)
        hasClientSettings = true
    }

    /// Every SETTINGS frame has been acknowledged both ways, and the proxy's own have gone out: the client's HPACK
    /// encoder uses the header table size the proxy announced (0), and the client expects no acknowledgement.
    var isSettled: Bool {
        hasClientSettings && settingsSent > 0 && settingsSent == acksReceived && settingsReceived == acksSent && !isGoingAway
    }

    mutating func received(_ frame: HTTP2FrameScanner.Frame) {
        switch frame.type {
        case 0x0: receiveWindow -= frame.length
        case 0x1 where frame.opensStream(after: lastClientStreamID): lastClientStreamID = frame.streamID
        case 0x4 where frame.isSettingsAck: acksReceived += 1
        case 0x4:
            settingsReceived += 1
            hasClientSettings = true
            var index = 0
            while index + 6 <= frame.payload.count {
                let bytes = frame.payload[index..<index + 6]
                let identifier = UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1])
                let value = bytes.dropFirst(2).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                if let existing = clientSettings.firstIndex(where: { $0.identifier == identifier }) {
                    clientSettings[existing].value = value
                } else {
                    clientSettings.append(.init(identifier: identifier, value: value))
                }
                index += 6
            }
        case 0x7: isGoingAway = true
        case 0x8 where frame.streamID == 0: sendWindow += Self.increment(frame.payload)
        default: break
        }
    }

    mutating func sent(_ frame: HTTP2FrameScanner.Frame) {
        switch frame.type {
        case 0x0: sendWindow -= frame.length
        case 0x4 where frame.isSettingsAck: acksSent += 1
        case 0x4: settingsSent += 1
        case 0x7: isGoingAway = true
        case 0x8 where frame.streamID == 0: receiveWindow += Self.increment(frame.payload)
        default: break
        }
    }

    private static func increment(_ payload: [UInt8]) -> Int {
        guard payload.count == 4 else { return 0 }
        return Int(payload.reduce(UInt32(0)) { $0 << 8 | UInt32($1) } & 0x7fff_ffff)
    }

    /// The state to move, once the connection is quiet; `nil` while the send window is below the one a fresh handler
    /// starts with (a fresh handler can be told of more window, never of less; see docs/mesh.md).
    func state(preRead: [UInt8]) -> HandoverConnection.HTTP2State? {
        guard sendWindow >= Self.initialWindow, sendWindow <= Int(HandoverConnection.HTTP2State.maxValue) else { return nil }
        return HandoverConnection.HTTP2State(
            clientSettings: clientSettings, lastClientStreamID: lastClientStreamID, sendWindow: UInt32(sendWindow), preRead: preRead)
    }
}

/// The bytes that bring a fresh NIO HTTP/2 server handler to a moved connection's state, read before anything the
/// client sends: the client's connection preface, one SETTINGS frame with the client's settings in force, and a
/// WINDOW_UPDATE for the part of the send window above the initial one.
///
/// The handler answers the SETTINGS with an acknowledgement the client never asked for; `HTTP2HandoverGate` keeps
/// it off the wire.
enum HTTP2ResumePreface {
    static func bytes(for state: HandoverConnection.HTTP2State) -> ByteBuffer {
        var out = ByteBuffer()
        out.writeBytes(HTTP2FrameScanner.clientPreface)
        out.writeHTTP2FrameHeader(length: state.clientSettings.count * 6, type: 0x4, flags: 0, streamID: 0)
        for setting in state.clientSettings {
            out.writeInteger(setting.identifier)
            out.writeInteger(setting.value)
        }
        let surplus = Int(state.sendWindow) - HTTP2ConnectionLedger.initialWindow
        if surplus > 0 {
            out.writeHTTP2FrameHeader(length: 4, type: 0x8, flags: 0, streamID: 0)
            out.writeInteger(UInt32(surplus))
        }
        return out
    }
}

extension ByteBuffer {
    /// Writes an HTTP/2 frame header (RFC 9113 §4.1).
    mutating func writeHTTP2FrameHeader(length: Int, type: UInt8, flags: UInt8, streamID: UInt32) {
        writeInteger(UInt8(truncatingIfNeeded: length >> 16))
        writeInteger(UInt16(truncatingIfNeeded: length))
        writeInteger(type)
        writeInteger(flags)
        writeInteger(streamID)
    }
}
