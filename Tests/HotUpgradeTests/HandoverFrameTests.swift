import Checksum
import Foundation
@testable import HotUpgrade
import Testing

/// The frame codec on its own, and descriptors passed over a real socket pair.
@Suite struct HandoverFrameTests {
    static let messages: [HandoverMessage] = [
        .hello(version: 1, pid: 42),
        .welcome(version: 1, pid: -1),
        .refuse(reason: "peer runs as uid 0 — ünïcode"),
        .listeners(names: ["web", "@admin"], descriptors: [7, 8]),
        .ready,
        .stoppedAccepting,
        .abort(reason: "bad config"),
        .connections([
            HandoverConnection(id: 1, listener: "web", state: .http(preRead: Array("GET / HTTP/1.1\r\n".utf8)), descriptors: [9]),
            HandoverConnection(
                id: .max, listener: "db", state: .tcp(toUpstream: [1, 2, 3], toClient: [], isClientInputOpen: false, isUpstreamInputOpen: true),
                descriptors: [10, 11]),
            HandoverConnection(id: 2, listener: "web", state: .http2(Self.http2State), descriptors: [12]),
        ]),
        .connections([]),
        .adopted(count: 3),
        .done,
        .upgradeRequest,
        .upgradeResult(pid: 7, succeeded: true, message: "ok"),
    ]

    @Test(arguments: messages)
    func everyMessageSurvivesARoundTrip(message: HandoverMessage) throws {
        var descriptors = message.descriptors
        let decoded = try HandoverFrame.decode(frame: HandoverFrame.encode(message)[...], descriptors: &descriptors)
        #expect(decoded == message)
        #expect(descriptors.isEmpty)
    }

    static let http2State = HandoverConnection.HTTP2State(
        clientSettings: [.init(identifier: 4, value: 1 << 30), .init(identifier: 1, value: 0), .init(identifier: 0x99, value: .max)],
        lastClientStreamID: 0x7fff_ffff, sendWindow: 65_535, preRead: [0, 0, 0, 4, 1, 0, 0, 0, 0])

    /// A connections frame holding one HTTP/2 connection whose state is `state`, encoded without the checks.
    static func http2Frame(settings: [(UInt16, UInt32)], lastStreamID: UInt32, sendWindow: UInt32) -> [UInt8] {
        var payload: [UInt8] = [7, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3] + Array("web".utf8) + [3]
        func u32(_ value: UInt32) -> [UInt8] { [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: value >> $0) } }
        payload += u32(UInt32(settings.count))
        for (identifier, value) in settings { payload += [UInt8(identifier >> 8), UInt8(identifier & 0xff)] + u32(value) }
        payload += u32(lastStreamID) + u32(sendWindow) + u32(0)
        return Array("DVHU".utf8) + u32(UInt32(payload.count)) + u32(CRC32C.checksum(payload)) + payload
    }

    @Test(arguments: [
        ([(4, 1)], UInt32(2), UInt32(100), "last client stream id 2 is not a client stream id"),
        ([(4, 1)], UInt32(0x8000_0001), UInt32(100), "last client stream id 2147483649 is not a client stream id"),
        ([(4, 1)], UInt32(1), UInt32(0x8000_0000), "send window 2147483648 is past 2^31-1"),
        ([(4, 1), (4, 2)], UInt32(1), UInt32(100), "setting 4 twice"),
        (Array(repeating: (UInt16(9), UInt32(0)), count: 65), UInt32(1), UInt32(100), "65 settings (at most 64)"),
    ] as [([(UInt16, UInt32)], UInt32, UInt32, String)])
    func malformedHTTP2StateIsRejectedWithTheReason(settings: [(UInt16, UInt32)], lastStreamID: UInt32, sendWindow: UInt32, problem: String) {
        var descriptors: [CInt] = [5]
        let frame = Self.http2Frame(settings: settings, lastStreamID: lastStreamID, sendWindow: sendWindow)
        #expect(throws: HandoverFrame.DecodingError.invalidHTTP2State(problem)) { try HandoverFrame.decode(frame: frame[...], descriptors: &descriptors) }
        #expect(HandoverFrame.DecodingError.invalidHTTP2State(problem).description == "invalid HTTP/2 connection state: \(problem)")
    }

    @Test func theHandBuiltHTTP2FrameIsValidWhenItsValuesAre() throws {
        var descriptors: [CInt] = [5]
        let frame = Self.http2Frame(settings: [(4, 1)], lastStreamID: 7, sendWindow: 9)
        let expected = HandoverMessage.connections([HandoverConnection(
            id: 1, listener: "web",
            state: .http2(.init(clientSettings: [.init(identifier: 4, value: 1)], lastClientStreamID: 7, sendWindow: 9, preRead: [])),
            descriptors: [5])])
        #expect(try HandoverFrame.decode(frame: frame[...], descriptors: &descriptors) == expected)
    }

    @Test func garbageIsNotAFrame() {
        var none: [CInt] = []
        let garbage = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        #expect(throws: HandoverFrame.DecodingError.badMagic) { try HandoverFrame.decode(frame: garbage[...], descriptors: &none) }
    }

    @Test func everyFlippedPayloadBitIsCaught() {
        let frame = HandoverFrame.encode(.abort(reason: "x"))
        for index in HandoverFrame.headerSize..<frame.count {
            for bit in 0..<8 {
                var damaged = frame
                damaged[index] ^= 1 << bit
                var none: [CInt] = []
                #expect(throws: HandoverFrame.DecodingError.checksumMismatch) { try HandoverFrame.decode(frame: damaged[...], descriptors: &none) }
            }
        }
    }

    @Test func oversizedAndShortFramesAreRejected() {
        var header = HandoverFrame.encode(.ready)
        header[4] = 0xFF
        #expect(throws: HandoverFrame.DecodingError.tooLong(Int(UInt32(0xFF00_0000) | UInt32(header[7])))) {
            _ = try HandoverFrame.payloadLength(header: header[...])
        }
        let frame = HandoverFrame.encode(.hello(version: 1, pid: 2))
        var none: [CInt] = []
        #expect(throws: HandoverFrame.DecodingError.truncated) { try HandoverFrame.decode(frame: frame.dropLast(), descriptors: &none) }
    }

    @Test func aMessageWithoutItsDescriptorsIsRejected() {
        var one: [CInt] = [5]
        let frame = HandoverFrame.encode(.listeners(names: ["a", "b"], descriptors: [5, 6]))
        #expect(throws: HandoverFrame.DecodingError.missingDescriptors) { try HandoverFrame.decode(frame: frame[...], descriptors: &one) }
    }

    /// A pipe's write end travels over SCM_RIGHTS; bytes written through the received copy come out of the read end.
    @Test func descriptorsTravelWithTheirFrame() throws {
        var pair: [CInt] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        let sender = HandoverSocket(descriptor: pair[0], timeout: .seconds(5))
        let receiver = HandoverSocket(descriptor: pair[1], timeout: .seconds(5))
        defer {
            sender.close()
            receiver.close()
        }
        var pipes: [CInt] = [0, 0]
        #expect(pipe(&pipes) == 0)
        defer { close(pipes[0]) }
        try sender.send(.listeners(names: ["web"], descriptors: [pipes[1]]))
        try sender.send(.done)
        close(pipes[1])
        guard case .listeners(let names, let descriptors) = try receiver.receive() else {
            Issue.record("expected listeners")
            return
        }
        #expect(names == ["web"])
        #expect(descriptors.count == 1)
        #expect(write(descriptors[0], "moved", 5) == 5)
        close(descriptors[0])
        var buffer = [UInt8](repeating: 0, count: 16)
        #expect(read(pipes[0], &buffer, 16) == 5)
        #expect(String(decoding: buffer.prefix(5), as: UTF8.self) == "moved")
        #expect(try receiver.receive() == .done)
        sender.close()
        #expect(throws: HandoverFailure.peerGone) { try receiver.receive() }
    }
}
