import Checksum
import RaftCore

/// Turns a byte stream, fed in pieces of any size, into frames. Pure: no I/O, so it can be fuzzed.
///
/// Any error is final: after one, the stream has no trustworthy frame boundary left, so the decoder
/// throws the same error again and the connection must be closed.
public struct FrameDecoder: Sendable {
    /// The largest frame accepted, header included.
    public let maximumFrameSize: Int
    private var buffer: [UInt8] = []
    /// Where the next frame starts in `buffer`; consumed bytes are dropped lazily to avoid a copy per frame.
    private var start = 0
    private var failure: FrameError?

    public init(maximumFrameSize: Int = FrameFormat.defaultMaximumFrameSize) {
        precondition(maximumFrameSize > FrameFormat.headerSize, "a frame must have room for its header")
        self.maximumFrameSize = maximumFrameSize
    }

    /// Bytes received but not yet part of a returned frame.
    public var bufferedByteCount: Int { buffer.count - start }

    /// Adds bytes as they arrive.
    public mutating func append(_ bytes: some Sequence<UInt8>) {
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete frame, or nil until more bytes arrive.
    public mutating func next() throws(FrameError) -> Frame? {
        if let failure { throw failure }
        do throws(FrameError) {
            return try decodeNext()
        } catch {
            failure = error
            throw error
        }
    }

    private mutating func decodeNext() throws(FrameError) -> Frame? {
        let available = buffer.count - start
        // Check each header field as soon as its bytes are here, so garbage is refused at once
        // rather than after waiting for a length's worth of bytes that may never come.
        let magicBytes = min(available, 4)
        if buffer[start..<start + magicBytes] != FrameFormat.magic[0..<magicBytes] {
            throw .badMagic(found: Array(buffer[start..<start + magicBytes]))
        }
        guard available > 4 else { return nil }
        let version = buffer[start + 4]
        guard version == FrameFormat.version else { throw .unsupportedVersion(version) }
        guard available >= FrameFormat.headerSize else { return nil }
        let bodyLength = Int(readUInt32(at: start + 5))
        let frameSize = FrameFormat.headerSize + bodyLength
        guard frameSize <= maximumFrameSize else { throw .oversizedFrame(size: frameSize, maximum: maximumFrameSize) }
        guard available >= frameSize else { return nil }
        let expected = readUInt32(at: start + 9)
        let bodyStart = start + FrameFormat.headerSize
        let result: Result<Frame, FrameError> = buffer.withUnsafeBytes { raw in
            let body = UnsafeRawBufferPointer(rebasing: raw[bodyStart..<bodyStart + bodyLength])
            let actual = CRC32C.checksum(body)
            guard actual == expected else { return .failure(.checksumMismatch(expected: expected, actual: actual)) }
            var reader = ByteReader(body)
            do throws(CodecError) {
                return .success(try Self.decodeBody(&reader))
            } catch {
                return .failure(.malformedBody(error))
            }
        }
        let frame = try result.get()
        start += frameSize
        return frame
    }

    private func readUInt32(at offset: Int) -> UInt32 {
        UInt32(buffer[offset]) | UInt32(buffer[offset + 1]) << 8 | UInt32(buffer[offset + 2]) << 16
            | UInt32(buffer[offset + 3]) << 24
    }

    private static func decodeBody(_ reader: inout ByteReader) throws(CodecError) -> Frame {
        let kindOffset = reader.offset
        switch try reader.readUInt8("frame kind") {
        case FrameFormat.handshakeKind:
            let node = try reader.readVarint("handshake node id")
            try reader.expectEnd("handshake")
            return .handshake(node: node)
        case FrameFormat.batchKind:
            var messages: [GroupMessage] = []
            while !reader.isAtEnd {
                let group = try reader.readVarint("group id")
                messages.append(GroupMessage(group: group, message: try Message(from: &reader)))
            }
            return .batch(messages)
        case let kind:
            throw CodecError(offset: kindOffset, expected: "frame kind 0 or 1, found \(kind)")
        }
    }
}
