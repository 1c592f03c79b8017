import Checksum

/// One live connection on its way to the new process: what it needs to continue, besides its sockets.
public struct HandoverConnection: Sendable, Equatable {
    /// The protocol state that moves with the sockets.
    public enum State: Sendable, Equatable {
        /// An HTTP/1.1 connection between requests, with bytes of the next request already read (one socket).
        case http(preRead: [UInt8])
        /// A TCP tunnel: client and upstream sockets, the bytes owed each way, and which inputs are still open.
        case tcp(toUpstream: [UInt8], toClient: [UInt8], isClientInputOpen: Bool, isUpstreamInputOpen: Bool)
        /// An HTTP/2 connection at a quiet point (no open stream, every SETTINGS acknowledged both ways; one socket).
        case http2(HTTP2State)
    }

    /// What an HTTP/2 connection needs to go on in a new HTTP/2 handler, besides its socket.
    ///
    /// NIO's HTTP/2 connection state cannot be exported, so the new process rebuilds one the client's side stays
    /// consistent with: the client's settings are replayed into a fresh handler, and the one window the fresh handler
    /// would not know is carried. The rest is the same by construction at a quiet point (see docs/mesh.md, "HTTP/2").
    public struct HTTP2State: Sendable, Equatable {
        /// One HTTP/2 setting (RFC 9113 §6.5.1).
        public struct Setting: Sendable, Equatable {
            public var identifier: UInt16
            public var value: UInt32

            public init(identifier: UInt16, value: UInt32) {
                self.identifier = identifier
                self.value = value
            }
        }

        /// The largest flow-control window and stream id HTTP/2 allows (2^31 - 1).
        public static let maxValue: UInt32 = 0x7fff_ffff
        /// More settings than any client sends; a longer list is malformed.
        public static let maxSettings = 64

        /// The client's settings in force, one per identifier, in the order the client first sent them.
        public var clientSettings: [Setting]
        /// The highest stream id the client opened (0 if none).
        public var lastClientStreamID: UInt32
        /// The proxy's connection-level send window: how many DATA bytes the client still accepts.
        public var sendWindow: UInt32
        /// Bytes read from the client and not processed yet: whole frames, starting at a frame boundary.
        public var preRead: [UInt8]

        public init(clientSettings: [Setting], lastClientStreamID: UInt32, sendWindow: UInt32, preRead: [UInt8]) {
            self.clientSettings = clientSettings
            self.lastClientStreamID = lastClientStreamID
            self.sendWindow = sendWindow
            self.preRead = preRead
        }
    }

    /// Unique within one handover, for logs.
    public var id: UInt64
    public var listener: String
    public var state: State
    /// The sockets: the client's, then for a tunnel the upstream's. They travel as SCM_RIGHTS, not in the frame.
    public var descriptors: [CInt]

    public init(id: UInt64, listener: String, state: State, descriptors: [CInt]) {
        self.id = id
        self.listener = listener
        self.state = state
        self.descriptors = descriptors
    }

    /// How many sockets this kind of connection carries.
    var descriptorCount: Int {
        switch state {
        case .http, .http2: 1
        case .tcp: 2
        }
    }

    /// Bytes that move with the connection (pre-read or owed), for the metrics.
    public var bufferedBytes: Int {
        switch state {
        case .http(let preRead): preRead.count
        case .tcp(let toUpstream, let toClient, _, _): toUpstream.count + toClient.count
        case .http2(let state): state.preRead.count
        }
    }
}

/// A message on the upgrade socket. File descriptors travel beside the frame (SCM_RIGHTS) in the same `sendmsg`.
public enum HandoverMessage: Sendable, Equatable {
    /// New → old: the first message.
    case hello(version: UInt16, pid: Int32)
    /// Old → new: accepted; listeners follow.
    case welcome(version: UInt16, pid: Int32)
    /// Old → new: refused (version, uid); the old process closes the socket after it.
    case refuse(reason: String)
    /// Old → new: one listening socket per name, in order.
    case listeners(names: [String], descriptors: [CInt])
    /// New → old: holds every listener and is ready to accept on them. The commit point.
    case ready
    /// Old → new: the old process stopped accepting; the new one starts.
    case stoppedAccepting
    /// New → old: cannot go on; the old process keeps everything.
    case abort(reason: String)
    /// Old → new: a batch of connections.
    case connections([HandoverConnection])
    /// New → old: that many connections of the earliest unacknowledged batches are adopted.
    case adopted(count: UInt32)
    /// Old → new: nothing left; the old process exits.
    case done
    /// `divan mesh upgrade` → running process: start a new process from your binary and hand over to it.
    case upgradeRequest
    /// Running process → `divan mesh upgrade`: the outcome, and the pid now serving.
    case upgradeResult(pid: Int32, succeeded: Bool, message: String)

    /// The file descriptors that go with this message.
    public var descriptors: [CInt] {
        switch self {
        case .listeners(_, let descriptors): descriptors
        case .connections(let connections): connections.flatMap(\.descriptors)
        default: []
        }
    }
}

/// Frames: magic `DVHU`, payload length (UInt32 BE), CRC32C of the payload (UInt32 BE), payload.
///
/// The checksum catches a peer that is not ours (or garbage) before anything in the payload is trusted.
public enum HandoverFrame {
    static let magic: [UInt8] = Array("DVHU".utf8)
    static let headerSize = 12
    /// A batch of connections with their pre-read bytes stays well under this.
    public static let maxPayload = 64 << 20

    /// Errors in the byte stream; any of them ends the handover.
    public enum DecodingError: Error, Equatable, CustomStringConvertible {
        case badMagic
        case tooLong(Int)
        case checksumMismatch
        case truncated
        case unknownTag(UInt8)
        case badString
        case missingDescriptors
        case invalidHTTP2State(String)

        public var description: String {
            switch self {
            case .badMagic: "not a handover frame (bad magic)"
            case .tooLong(let length): "frame of \(length) bytes is too long"
            case .checksumMismatch: "frame checksum mismatch"
            case .truncated: "frame payload truncated"
            case .unknownTag(let tag): "unknown message tag \(tag)"
            case .badString: "string is not UTF-8"
            case .missingDescriptors: "fewer file descriptors than the message names"
            case .invalidHTTP2State(let problem): "invalid HTTP/2 connection state: \(problem)"
            }
        }
    }

    public static func encode(_ message: HandoverMessage) -> [UInt8] {
        var payload = Writer()
        switch message {
        case .hello(let version, let pid):
            payload.byte(1); payload.u16(version); payload.u32(UInt32(bitPattern: pid))
        case .welcome(let version, let pid):
            payload.byte(2); payload.u16(version); payload.u32(UInt32(bitPattern: pid))
        case .refuse(let reason):
            payload.byte(3); payload.string(reason)
        case .listeners(let names, _):
            payload.byte(4); payload.u32(UInt32(names.count))
            for name in names { payload.string(name) }
        case .ready:
            payload.byte(5)
        case .abort(let reason):
            payload.byte(6); payload.string(reason)
        case .connections(let connections):
            payload.byte(7); payload.u32(UInt32(connections.count))
            for connection in connections {
                payload.u64(connection.id)
                payload.string(connection.listener)
                switch connection.state {
                case .http(let preRead):
                    payload.byte(1); payload.bytes(preRead)
                case .tcp(let toUpstream, let toClient, let clientOpen, let upstreamOpen):
                    payload.byte(2); payload.bytes(toUpstream); payload.bytes(toClient)
                    payload.byte(clientOpen ? 1 : 0); payload.byte(upstreamOpen ? 1 : 0)
                case .http2(let state):
                    payload.byte(3); payload.u32(UInt32(state.clientSettings.count))
                    for setting in state.clientSettings { payload.u16(setting.identifier); payload.u32(setting.value) }
                    payload.u32(state.lastClientStreamID); payload.u32(state.sendWindow); payload.bytes(state.preRead)
                }
            }
        case .adopted(let count):
            payload.byte(8); payload.u32(count)
        case .done:
            payload.byte(9)
        case .upgradeRequest:
            payload.byte(10)
        case .stoppedAccepting:
            payload.byte(12)
        case .upgradeResult(let pid, let succeeded, let text):
            payload.byte(11); payload.u32(UInt32(bitPattern: pid)); payload.byte(succeeded ? 1 : 0); payload.string(text)
        }
        var frame = Writer()
        frame.out = magic
        frame.u32(UInt32(payload.out.count))
        frame.u32(CRC32C.checksum(payload.out))
        frame.out += payload.out
        return frame.out
    }

    /// The payload length announced by a frame header, once the header is valid.
    static func payloadLength(header: ArraySlice<UInt8>) throws(DecodingError) -> Int {
        guard header.count >= headerSize else { throw .truncated }
        guard Array(header.prefix(4)) == magic else { throw .badMagic }
        var reader = Reader(header.dropFirst(4))
        let length = Int(try reader.u32())
        guard length <= maxPayload else { throw .tooLong(length) }
        return length
    }

    /// Decodes one whole frame; `descriptors` supplies the file descriptors received with it, in order.
    static func decode(frame: ArraySlice<UInt8>, descriptors: inout [CInt]) throws(DecodingError) -> HandoverMessage {
        let length = try payloadLength(header: frame)
        guard frame.count == headerSize + length else { throw .truncated }
        var header = Reader(frame.dropFirst(8))
        let checksum = try header.u32()
        let payload = frame.dropFirst(headerSize)
        guard CRC32C.checksum(payload) == checksum else { throw .checksumMismatch }
        var reader = Reader(payload)
        func take(_ count: Int) throws(DecodingError) -> [CInt] {
            guard descriptors.count >= count else { throw .missingDescriptors }
            defer { descriptors.removeFirst(count) }
            return Array(descriptors.prefix(count))
        }
        let message: HandoverMessage
        switch try reader.byte() {
        case 1: message = .hello(version: try reader.u16(), pid: Int32(bitPattern: try reader.u32()))
        case 2: message = .welcome(version: try reader.u16(), pid: Int32(bitPattern: try reader.u32()))
        case 3: message = .refuse(reason: try reader.string())
        case 4:
            let count = Int(try reader.u32())
            var names: [String] = []
            for _ in 0..<min(count, 4096) { names.append(try reader.string()) }
            guard names.count == count else { throw .truncated }
            message = .listeners(names: names, descriptors: try take(count))
        case 5: message = .ready
        case 6: message = .abort(reason: try reader.string())
        case 7:
            let count = Int(try reader.u32())
            var connections: [HandoverConnection] = []
            for _ in 0..<min(count, 1 << 20) {
                let id = try reader.u64()
                let listener = try reader.string()
                let state: HandoverConnection.State
                switch try reader.byte() {
                case 1: state = .http(preRead: try reader.bytes())
                case 2:
                    state = .tcp(
                        toUpstream: try reader.bytes(), toClient: try reader.bytes(),
                        isClientInputOpen: try reader.byte() != 0, isUpstreamInputOpen: try reader.byte() != 0)
                case 3: state = .http2(try reader.http2State())
                case let tag: throw .unknownTag(tag)
                }
                var connection = HandoverConnection(id: id, listener: listener, state: state, descriptors: [])
                connection.descriptors = try take(connection.descriptorCount)
                connections.append(connection)
            }
            guard connections.count == count else { throw .truncated }
            message = .connections(connections)
        case 8: message = .adopted(count: try reader.u32())
        case 9: message = .done
        case 10: message = .upgradeRequest
        case 12: message = .stoppedAccepting
        case 11:
            message = .upgradeResult(
                pid: Int32(bitPattern: try reader.u32()), succeeded: try reader.byte() != 0, message: try reader.string())
        case let tag: throw .unknownTag(tag)
        }
        guard reader.isAtEnd else { throw .truncated }
        return message
    }

    private struct Writer {
        var out: [UInt8] = []
        mutating func byte(_ value: UInt8) { out.append(value) }
        mutating func u16(_ value: UInt16) { out += [UInt8(value >> 8), UInt8(value & 0xFF)] }
        mutating func u32(_ value: UInt32) { for shift in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) } }
        mutating func u64(_ value: UInt64) { for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) } }
        mutating func bytes(_ value: [UInt8]) { u32(UInt32(value.count)); out += value }
        mutating func string(_ value: String) { bytes(Array(value.utf8)) }
    }

    private struct Reader {
        var rest: ArraySlice<UInt8>
        init(_ bytes: ArraySlice<UInt8>) { rest = bytes }
        var isAtEnd: Bool { rest.isEmpty }
        mutating func take(_ count: Int) throws(DecodingError) -> ArraySlice<UInt8> {
            guard rest.count >= count else { throw .truncated }
            defer { rest = rest.dropFirst(count) }
            return rest.prefix(count)
        }
        mutating func byte() throws(DecodingError) -> UInt8 { try take(1).first! }
        mutating func u16() throws(DecodingError) -> UInt16 { try take(2).reduce(0) { $0 << 8 | UInt16($1) } }
        mutating func u32() throws(DecodingError) -> UInt32 { try take(4).reduce(0) { $0 << 8 | UInt32($1) } }
        mutating func u64() throws(DecodingError) -> UInt64 { try take(8).reduce(0) { $0 << 8 | UInt64($1) } }
        mutating func bytes() throws(DecodingError) -> [UInt8] { Array(try take(Int(try u32()))) }
        mutating func string() throws(DecodingError) -> String {
            let raw = try bytes()
            guard let text = String(validating: raw, as: UTF8.self) else { throw .badString }
            return text
        }
        /// An HTTP/2 state, checked: values a fresh HTTP/2 handler would refuse (or that no client sends) are errors
        /// here, before a socket is adopted with them.
        mutating func http2State() throws(DecodingError) -> HandoverConnection.HTTP2State {
            typealias State = HandoverConnection.HTTP2State
            let count = Int(try u32())
            guard count <= State.maxSettings else { throw .invalidHTTP2State("\(count) settings (at most \(State.maxSettings))") }
            var settings: [State.Setting] = []
            for _ in 0..<count {
                let setting = State.Setting(identifier: try u16(), value: try u32())
                guard !settings.contains(where: { $0.identifier == setting.identifier }) else {
                    throw .invalidHTTP2State("setting \(setting.identifier) twice")
                }
                settings.append(setting)
            }
            let lastStreamID = try u32()
            guard lastStreamID <= State.maxValue, lastStreamID % 2 == 1 || lastStreamID == 0 else {
                throw .invalidHTTP2State("last client stream id \(lastStreamID) is not a client stream id")
            }
            let sendWindow = try u32()
            guard sendWindow <= State.maxValue else { throw .invalidHTTP2State("send window \(sendWindow) is past 2^31-1") }
            return State(clientSettings: settings, lastClientStreamID: lastStreamID, sendWindow: sendWindow, preRead: try bytes())
        }
    }
}
