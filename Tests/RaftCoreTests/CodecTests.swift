import RaftCore
import Testing

@Suite struct CodecTests {
    static let membership = Membership(
        voters: [3, 1, 2], learners: [7], outgoingVoters: [4, 5], learnersNext: [5],
        priorities: [1: ElectionPriority(100), 2: .neverLeader, 3: .disabled])

    static let samples: [Entry] = [
        Entry(term: 1, index: 1, payload: .empty),
        Entry(term: 2, index: 300, payload: .normal(Array("hello".utf8))),
        Entry(term: .max, index: .max, payload: .normal([])),
        Entry(term: 3, index: 4, payload: .configuration(ConfigurationChange([
            .addVoter(9, priority: ElectionPriority(5)), .addLearner(10), .remove(2),
        ]))),
        Entry(term: 3, index: 5, payload: .configuration(.leaveJoint)),
    ]

    @Test(arguments: samples) func entryRoundTrips(entry: Entry) throws {
        #expect(try Entry(decoding: entry.encodedBytes()) == entry)
    }

    @Test func otherTypesRoundTrip() throws {
        let hardState = HardState(term: 1 << 40, vote: 3, commit: 99)
        #expect(try HardState(decoding: hardState.encodedBytes()) == hardState)
        #expect(try Membership(decoding: Self.membership.encodedBytes()) == Self.membership)
        let metadata = SnapshotMetadata(index: 77, term: 6, membership: Self.membership)
        #expect(try SnapshotMetadata(decoding: metadata.encodedBytes()) == metadata)
        let snapshot = Snapshot(metadata: metadata, data: [1, 2, 3])
        #expect(try Snapshot(decoding: snapshot.encodedBytes()) == snapshot)
    }

    /// Every strict prefix of a valid encoding is rejected with an error, never a trap.
    @Test func everyTruncationThrows() {
        let metadata = SnapshotMetadata(index: 77, term: 6, membership: Self.membership)
        for bytes in Self.samples.map({ $0.encodedBytes() }) + [metadata.encodedBytes()] {
            for cut in 0..<bytes.count {
                #expect(throws: CodecError.self) {
                    if bytes == metadata.encodedBytes() {
                        _ = try SnapshotMetadata(decoding: bytes[..<cut])
                    } else {
                        _ = try Entry(decoding: bytes[..<cut])
                    }
                }
            }
        }
    }

    @Test func trailingBytesAndBadTagsAreNamed() throws {
        let bytes = Entry(term: 1, index: 2, payload: .empty).encodedBytes()
        let trailing = #expect(throws: CodecError.self) { try Entry(decoding: bytes + [0]) }
        #expect(trailing?.expected.contains("end of Entry") == true)
        var badTag = bytes
        badTag[16] = 9
        let tag = #expect(throws: CodecError.self) { try Entry(decoding: badTag) }
        #expect(tag?.offset == 16)
        let hugeCount: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0x0F]
        #expect(throws: CodecError.self) { try Membership(decoding: hugeCount) }
        let overlongVarint = [UInt8](repeating: 0xFF, count: 10) + [0x01]
        #expect(throws: CodecError.self) { try HardState(decoding: overlongVarint) }
    }

    static let messages: [Message] = [
        Message(from: 1, to: 2, term: 3, payload: .append(Message.Append(previousIndex: 4, previousTerm: 2, entries: samples, commit: 3))),
        Message(from: 2, to: 1, term: 3, payload: .appendResponse(Message.AppendResponse(index: 9, isRejected: true, hintIndex: 5, hintTerm: 1))),
        Message(from: 1, to: 3, term: 3, payload: .heartbeat(commit: 7, readRound: 11)),
        Message(from: 3, to: 1, term: 3, payload: .heartbeatResponse(readRound: 11)),
        Message(from: 2, to: 3, term: 4, payload: .voteRequest(Message.VoteRequest(isPreVote: true, lastIndex: 9, lastTerm: 3, isTransfer: false))),
        Message(from: 3, to: 2, term: 4, payload: .voteResponse(isPreVote: true, granted: true)),
        Message(from: 1, to: 2, term: 5, payload: .snapshot(Snapshot(
            metadata: SnapshotMetadata(index: 9, term: 4, membership: membership), data: [9, 9]))),
        Message(from: 2, to: 1, term: 5, payload: .readIndexRequest(context: 42)),
        Message(from: 1, to: 2, term: 5, payload: .readIndexResponse(context: 42, index: 10)),
        Message(from: 1, to: 2, term: 5, payload: .timeoutNow),
        Message(from: 1, to: 2, term: 5, payload: .quiesce(commit: 9)),
        Message(from: 2, to: 1, term: 5, payload: .snapshotChunkRequest(.init(index: 9, term: 4, file: "state", offset: 7))),
        Message(from: 1, to: 2, term: 5, payload: .snapshotChunk(.init(index: 9, term: 4, file: "state", offset: 7), data: [1, 2, 3])),
        Message(from: 1, to: 2, term: 5, payload: .snapshotChunk(.init(index: 9, term: 4, file: "state", offset: 7), data: nil)),
    ]

    @Test(arguments: messages) func messageRoundTripsAndEveryTruncationThrows(message: Message) throws {
        let bytes = message.encodedBytes()
        #expect(try Message(decoding: bytes) == message)
        for cut in 0..<bytes.count {
            #expect(throws: CodecError.self) { try Message(decoding: bytes[..<cut]) }
        }
    }

    /// Random bytes never trap the decoders (a seeded generator, so a failure replays).
    @Test func randomBytesNeverTrap() {
        var state: UInt64 = 0x5EED
        for length in 0..<2000 {
            let bytes = (0..<(length % 64)).map { _ in
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return UInt8(truncatingIfNeeded: state >> 33)
            }
            _ = try? Entry(decoding: bytes)
            _ = try? SnapshotMetadata(decoding: bytes)
            _ = try? ConfigurationChange(decoding: bytes)
            _ = try? Message(decoding: bytes)
        }
    }
}
