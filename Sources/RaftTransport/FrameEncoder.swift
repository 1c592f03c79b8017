import Checksum
import RaftCore

/// Encodes frames. Pure: no I/O, so it can be tested and fuzzed alone.
public enum FrameEncoder {
    /// The bytes of one frame.
    public static func encode(_ frame: Frame) -> [UInt8] {
        var writer = ByteWriter(capacity: 64)
        beginFrame(&writer)
        switch frame {
        case .handshake(let node):
            writer.write(FrameFormat.handshakeKind)
            writer.writeVarint(node)
        case .batch(let messages):
            writer.write(FrameFormat.batchKind)
            for message in messages { encode(message, to: &writer) }
        }
        return finishFrame(&writer)
    }

    /// Packs messages into as few batch frames as fit under `maximumFrameSize`, in order. A message
    /// that could not fit in a frame of its own is returned in `oversized` instead: sending it would
    /// only make the receiver close the connection.
    public static func encodeBatches(
        _ messages: some Sequence<GroupMessage>, maximumFrameSize: Int = FrameFormat.defaultMaximumFrameSize
    ) -> (frames: [[UInt8]], oversized: [GroupMessage]) {
        var frames: [[UInt8]] = []
        var oversized: [GroupMessage] = []
        var writer = ByteWriter(capacity: 256)
        var scratch = ByteWriter(capacity: 256)
        var messagesInFrame = 0
        let bodyStart = FrameFormat.headerSize + 1
        for message in messages {
            scratch.removeAll()
            encode(message, to: &scratch)
            if bodyStart + scratch.count > maximumFrameSize {
                oversized.append(message)
                continue
            }
            if messagesInFrame > 0 && writer.count + scratch.count > maximumFrameSize {
                frames.append(finishFrame(&writer))
                messagesInFrame = 0
            }
            if messagesInFrame == 0 {
                writer.removeAll()
                beginFrame(&writer)
                writer.write(FrameFormat.batchKind)
            }
            writer.writeRaw(scratch.bytes)
            messagesInFrame += 1
        }
        if messagesInFrame > 0 { frames.append(finishFrame(&writer)) }
        return (frames, oversized)
    }

    private static func encode(_ message: GroupMessage, to writer: inout ByteWriter) {
        writer.writeVarint(message.group)
        message.message.encode(to: &writer)
    }

    private static func beginFrame(_ writer: inout ByteWriter) {
        writer.writeRaw(FrameFormat.magic)
        writer.write(FrameFormat.version)
        writer.write(UInt32(0))  // body length, patched by finishFrame
        writer.write(UInt32(0))  // body checksum, patched by finishFrame
    }

    private static func finishFrame(_ writer: inout ByteWriter) -> [UInt8] {
        let bodyLength = writer.count - FrameFormat.headerSize
        let checksum = writer.bytes.withUnsafeBytes { raw in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[FrameFormat.headerSize...]))
        }
        writer.patch(UInt32(bodyLength), at: 5)
        writer.patch(checksum, at: 9)
        return writer.bytes
    }
}
