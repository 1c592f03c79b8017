import KVWire
import RaftCore
import Testing

@testable import KVStore

/// Every wire type survives encoding, and hostile bytes are rejected rather than trapping.
struct KVWireCodecTests {
    static let writes: [KVWrite] = [
        .set(key: [1], value: [2, 3], condition: .ifEqual([9]), expiry: .after(milliseconds: 5), returnPrevious: true),
        .set(key: [], value: [], condition: .ifNotEqual([]), expiry: .at(unixMilliseconds: -1), returnPrevious: false),
        .delete(keys: [[1], [2]]), .deleteIfEqual(key: [1], value: [2]), .deleteRange(start: [0], end: nil),
        .getAndDelete(key: [7]), .incrementBy(key: [1], delta: Int64.min), .append(key: [1], value: [2]),
        .expire(key: [1], expiry: .keep), .setMany(pairs: [KVPair(key: [1], value: [2])], onlyIfNoneExists: true),
        .nextSequence(key: [1], count: 3), .lock(name: [1], owner: [2], leaseMilliseconds: 100),
        .keepAlive(name: [1], owner: [2], token: 9, leaseMilliseconds: 1), .unlock(name: [1], owner: [2], token: 3),
        .removeExpired(keys: [[5]]),
    ]

    @Test(arguments: writes) func writesRoundTrip(_ write: KVWrite) throws {
        #expect(try KVWrite(decoding: write.encodedBytes()) == write)
        let command = RegionCommand.writes(now: 42, origin: ProposalOrigin(node: 1, request: 2), [write, write])
        #expect(try RegionCommand(decoding: command.encodedBytes()) == command)
    }

    @Test func resultsReadsAndErrorsRoundTrip() throws {
        let results: [KVWriteResult] = [
            .set(performed: true, previous: nil), .count(3), .value([1]), .integer(-5), .sequence(start: 1, end: 2),
            .lock(.busy(owner: [1], expiresAt: 7)), .refused(.crossRegion),
        ]
        for result in results { #expect(try KVWriteResult(decoding: result.encodedBytes()) == result) }
        let reads: [KVRead] = [.get(key: [1]), .scan(start: [1], end: [2], limit: 5, reverse: true), .count(start: [], end: nil), .lockState(name: [3])]
        for read in reads { #expect(try KVRead(decoding: read.encodedBytes()) == read) }
        let answers: [KVReadResult] = [.record(KVRecord(value: [1], expiresAt: 5)), .record(nil), .values([nil, [1]]), .pairs([KVPair(key: [1], value: [])])]
        for answer in answers { #expect(try KVReadResult(decoding: answer.encodedBytes()) == answer) }
        let errors: [KVError] = [.definite(.notLeader(region: 3, leader: nil)), .definite(.tooLarge("x")), .indefinite(.timedOut)]
        for error in errors { #expect(try KVError(decoding: error.encodedBytes()) == error) }
        let outcomes: [WriteOutcome] = [.success(.count(1)), .failure(.definite(.regionMoved(region: 2)))]
        #expect(try CommandResult.decode(CommandResult.encode(outcomes)).map { try? $0.get() } == outcomes.map { try? $0.get() })
    }

    @Test func theLeaderRestampsAForwardedCommandWithItsClock() throws {
        let writes: [KVWrite] = [.set(key: [1], value: [2], condition: .always, expiry: .after(milliseconds: 5), returnPrevious: false)]
        var data = RegionCommand.writes(now: 1_000, origin: ProposalOrigin(node: 2, request: 9), writes).encodedBytes()
        RegionCommand.restamp(&data, now: 1_700_000_000_123)
        #expect(try RegionCommand(decoding: data) == .writes(now: 1_700_000_000_123, origin: ProposalOrigin(node: 2, request: 9), writes))
        var split = RegionCommand.split(key: [5], newRegion: 3, rangeVersion: 1, members: SplitMembers(voters: [1], learners: [])).encodedBytes()
        let original = split
        RegionCommand.restamp(&split, now: 42)
        #expect(split == original, "only writes carry a time")
    }

    @Test func garbageIsRejected() {
        for bytes: [UInt8] in [[], [99], [0, 200], [0, 1, 1, 1], [8, 255, 255, 255, 255, 1]] {
            #expect(throws: CodecError.self) { try KVWrite(decoding: bytes) }
            #expect(throws: CodecError.self) { try RegionCommand(decoding: bytes) }
        }
    }
}
