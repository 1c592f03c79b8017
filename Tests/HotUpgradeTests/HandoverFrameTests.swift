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
