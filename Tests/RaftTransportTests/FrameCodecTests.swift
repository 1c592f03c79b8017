import Checksum
import RaftCore
import Testing

@testable import RaftTransport

@Suite struct FrameCodecTests {
    /// Decodes every frame in `bytes`, fed in pieces of `chunk` bytes.
    static func decodeAll(_ bytes: [UInt8], chunk: Int = .max, maximumFrameSize: Int = FrameFormat.defaultMaximumFrameSize) throws -> [Frame] {
        var decoder = FrameDecoder(maximumFrameSize: maximumFrameSize)
        var frames: [Frame] = []
        var offset = 0
        repeat {
            let end = offset + min(chunk, bytes.count - offset)
            decoder.append(bytes[offset..<end])
            offset = end
            while let frame = try decoder.next() { frames.append(frame) }
        } while offset < bytes.count
        #expect(decoder.bufferedByteCount == 0)
        return frames
    }

    @Test(arguments: Samples.payloads)
    func everyMessageKindRoundTrips(_ payload: Message.Payload) throws {
        let frame = Frame.batch([GroupMessage(group: 42, message: Samples.message(payload, term: 9))])
        #expect(try Self.decodeAll(FrameEncoder.encode(frame)) == [frame])
    }

    @Test func handshakeRoundTrips() throws {
        let frame = Frame.handshake(node: 1_000_000_007)
        #expect(try Self.decodeAll(FrameEncoder.encode(frame)) == [frame])
    }

    @Test func batchOfManyGroupsRoundTripsInOrder() throws {
        let messages = Samples.payloads.enumerated().map { index, payload in
            GroupMessage(group: UInt64(index) * 1_000_003, message: Samples.message(payload))
        }
        let (frames, oversized) = FrameEncoder.encodeBatches(messages)
        #expect(frames.count == 1)
        #expect(oversized.isEmpty)
        #expect(try Self.decodeAll(frames[0]) == [.batch(messages)])
    }

    @Test func headerLayoutIsAsDocumented() {
        let bytes = FrameEncoder.encode(.handshake(node: 5))
        #expect(Array(bytes[0..<4]) == Array("DVNR".utf8))
        #expect(bytes[4] == 1)
        #expect(Array(bytes[5..<9]) == [2, 0, 0, 0])  // kind byte + one-byte varint
        let crc = CRC32C.checksum(bytes[13...])
        #expect(Array(bytes[9..<13]) == withUnsafeBytes(of: crc.littleEndian) { Array($0) })
        #expect(Array(bytes[13...]) == [0, 5])
    }

    @Test func batchesSplitAtTheMaximumFrameSizeAndDropWhatCannotFit() throws {
        let small = (0..<50).map { GroupMessage(group: UInt64($0), message: Samples.heartbeat(commit: UInt64($0))) }
        let huge = GroupMessage(group: 9, message: Samples.message(.append(Message.Append(
            previousIndex: 0, previousTerm: 0, entries: [Entry(term: 1, index: 1, payload: .normal(Array(repeating: 1, count: 500)))],
            commit: 0))))
        let (frames, oversized) = FrameEncoder.encodeBatches(small + [huge], maximumFrameSize: 100)
        #expect(oversized == [huge])
        #expect(frames.count > 1)
        #expect(frames.allSatisfy { $0.count <= 100 })
        let decoded = try Self.decodeAll(frames.flatMap { $0 }, maximumFrameSize: 100)
        #expect(decoded.flatMap { frame -> [GroupMessage] in
            guard case .batch(let messages) = frame else { return [] }
            return messages
        } == small)
    }

    @Test func framesFedByteByByteDecodeTheSame() throws {
        let stream = FrameEncoder.encode(.handshake(node: 3))
            + FrameEncoder.encodeBatches(Samples.payloads.map { GroupMessage(group: 1, message: Samples.message($0)) }).frames.flatMap { $0 }
        let whole = try Self.decodeAll(stream)
        #expect(whole.count == 2)
        #expect(try Self.decodeAll(stream, chunk: 1) == whole)
        #expect(try Self.decodeAll(stream, chunk: 7) == whole)
    }

    @Test func truncatedFrameFedByteByByteWaitsWithoutError() throws {
        let bytes = FrameEncoder.encode(.batch([GroupMessage(group: 1, message: Samples.heartbeat())]))
        var decoder = FrameDecoder()
        for byte in bytes.dropLast() {
            decoder.append([byte])
            #expect(try decoder.next() == nil)
        }
        decoder.append([bytes.last!])
        #expect(try decoder.next() != nil)
    }

    // MARK: Decoder errors

    static func firstError(_ bytes: [UInt8], maximumFrameSize: Int = FrameFormat.defaultMaximumFrameSize) -> FrameError? {
        var decoder = FrameDecoder(maximumFrameSize: maximumFrameSize)
        decoder.append(bytes)
        do {
            while try decoder.next() != nil {}
            return nil
        } catch {
            // Errors are final: the same error again, even after more bytes.
            decoder.append(FrameEncoder.encode(.handshake(node: 1)))
            #expect(throws: error) { try decoder.next() }
            return error
        }
    }

    @Test func badMagicIsRefusedFromItsFirstByte() {
        #expect(Self.firstError(Array("GET / HTTP/1.1\r\n".utf8)) == .badMagic(found: Array("GET ".utf8)))
        #expect(Self.firstError([0x44, 0x00]) == .badMagic(found: [0x44, 0x00]))
    }

    @Test func wrongVersionIsRefused() {
        var bytes = FrameEncoder.encode(.handshake(node: 1))
        bytes[4] = 2
        #expect(Self.firstError(bytes) == .unsupportedVersion(2))
        #expect(Self.firstError(Array(bytes[0..<5])) == .unsupportedVersion(2))
    }

    @Test func oversizedLengthIsRefusedBeforeTheBodyArrives() {
        var bytes = FrameEncoder.encode(.handshake(node: 1))
        bytes.replaceSubrange(5..<9, with: [0xFF, 0xFF, 0xFF, 0x7F])
        #expect(Self.firstError(Array(bytes[0..<13])) == .oversizedFrame(size: 13 + 0x7FFF_FFFF, maximum: FrameFormat.defaultMaximumFrameSize))
        let frame = FrameEncoder.encode(.batch([GroupMessage(group: 1, message: Samples.heartbeat())]))
        #expect(Self.firstError(frame, maximumFrameSize: frame.count - 1) == .oversizedFrame(size: frame.count, maximum: frame.count - 1))
        #expect(Self.firstError(frame, maximumFrameSize: frame.count) == nil)
    }

    @Test func corruptedBodyFailsItsChecksum() {
        var bytes = FrameEncoder.encode(.batch([GroupMessage(group: 1, message: Samples.heartbeat())]))
        let expected = CRC32C.checksum(bytes[13...])
        bytes[bytes.count - 1] ^= 0x01
        #expect(Self.firstError(bytes) == .checksumMismatch(expected: expected, actual: CRC32C.checksum(bytes[13...])))
    }

    /// A frame whose checksum is right but whose body is not a valid body.
    static func frame(body: [UInt8]) -> [UInt8] {
        var writer = ByteWriter()
        writer.writeRaw(FrameFormat.magic)
        writer.write(FrameFormat.version)
        writer.write(UInt32(body.count))
        writer.write(CRC32C.checksum(body))
        writer.writeRaw(body)
        return writer.bytes
    }

    @Test(arguments: [
        ("empty body", [UInt8]()),
        ("unknown kind", [7]),
        ("handshake without node", [0]),
        ("handshake with trailing bytes", [0, 1, 9]),
        ("batch with a truncated message", [1, 5, 1, 2]),
        ("batch with a bad payload tag", [1, 5, 1, 2, 3, 99]),
    ])
    func malformedBodiesAreReported(_ name: String, _ body: [UInt8]) {
        guard case .malformedBody = Self.firstError(Self.frame(body: body)) else {
            Issue.record("\(name): expected a malformed-body error")
            return
        }
    }

    @Test func randomBytesNeverTrap() {
        var generator = SplitMix(seed: 0xD1_7A_11)
        let valid = FrameEncoder.encodeBatches(Samples.payloads.map { GroupMessage(group: 3, message: Samples.message($0)) }).frames[0]
        for _ in 0..<2_000 {
            var bytes = valid
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            // Keep the header valid half the time so the body decoder gets exercised, not just the CRC.
            if Bool.random(using: &generator) {
                bytes = Self.frame(body: Array(bytes[13...]))
            }
            _ = Self.firstError(bytes)
        }
    }
}

/// A tiny seeded generator, so the fuzz loop above is the same on every run.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
