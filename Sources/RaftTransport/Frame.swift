import RaftCore

/// A Raft message addressed to one of the many groups that share a connection.
public struct GroupMessage: Sendable, Hashable {
    /// The Raft group the message belongs to.
    public var group: UInt64
    public var message: Message

    public init(group: UInt64, message: Message) {
        self.group = group
        self.message = message
    }
}

/// One unit on the wire: the handshake that opens a connection, or a batch of group messages.
public enum Frame: Sendable, Hashable {
    /// The first frame on every connection: the sending process's node id.
    case handshake(node: NodeID)
    /// Messages for any number of groups, in the order they were sent.
    case batch([GroupMessage])
}

/// Constants of the frame format, version 1. See docs/transport.md.
public enum FrameFormat {
    /// "DVNR" in ASCII, so a hex dump of a capture shows where frames start.
    public static let magic: [UInt8] = Array("DVNR".utf8)
    /// The only version this build speaks; a peer with another version is refused, not guessed at.
    public static let version: UInt8 = 1
    /// Magic (4), version (1), body length (4), CRC32C of the body (4).
    public static let headerSize = 13
    /// The default limit on a whole frame, header included.
    public static let defaultMaximumFrameSize = 16 * 1024 * 1024

    // Body kinds. Part of the format: never renumber them.
    static let handshakeKind: UInt8 = 0
    static let batchKind: UInt8 = 1
}

/// Why a byte stream is not a valid sequence of frames. Every case ends the connection it came from.
public enum FrameError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The first four bytes of a frame are not `FrameFormat.magic`: not a Divan peer, or a lost frame boundary.
    case badMagic(found: [UInt8])
    /// A peer speaking a version this build does not know.
    case unsupportedVersion(UInt8)
    /// The header announces a frame larger than the configured maximum.
    case oversizedFrame(size: Int, maximum: Int)
    /// The body does not match the checksum in the header.
    case checksumMismatch(expected: UInt32, actual: UInt32)
    /// The checksum matched but the body does not decode.
    case malformedBody(CodecError)

    public var description: String {
        switch self {
        case .badMagic(let found): return "bad magic \(found)"
        case .unsupportedVersion(let version): return "unsupported frame version \(version)"
        case .oversizedFrame(let size, let maximum): return "frame of \(size) bytes exceeds the maximum of \(maximum)"
        case .checksumMismatch(let expected, let actual): return "CRC32C mismatch: header says \(expected), body has \(actual)"
        case .malformedBody(let error): return "malformed frame body: \(error)"
        }
    }
}
