import Synchronization
import Foundation
import RaftCore
import SystemPackage
import Testing

@testable import RaftStorage

/// Where records lie in a segment file: (start, end) of each, found from their length fields.
func recordBounds(_ bytes: [UInt8]) -> [(start: Int, end: Int)] {
    var bounds: [(Int, Int)] = []
    var offset = SegmentFormat.headerSize
    while offset + SegmentFormat.recordHeaderSize <= bytes.count {
        let length = Int(bytes[offset]) | Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2]) << 16 | Int(bytes[offset + 3]) << 24
        if length == 0 { break }
        bounds.append((offset, offset + SegmentFormat.recordHeaderSize + length))
        offset += SegmentFormat.recordHeaderSize + length
    }
    return bounds
}

@Suite struct RecoveryTests {
    /// Writes entries 1...count of group 1, one record per append, and returns the only segment's path.
    private func makeLog(_ dir: TemporaryDirectory, count: UInt64, options: WriteAheadLogOptions = smallOptions()) async throws -> FilePath {
        let log = try WriteAheadLog(directory: dir.path, options: options)
        for index in 1...count { try await log.append(group: 1, entries: [entry(group: 1, index: index)]) }
        log.close()
        return dir.appending(try segmentFiles(dir.path).last!)
    }

    /// The last record cut at every length, with zeros or with garbage after the cut: recovery
    /// drops exactly that record, reports the torn tail, and the log takes new appends.
    @Test(arguments: [false, true]) func tornTailsOfEveryLength(garbage: Bool) async throws {
        let dir = TemporaryDirectory()
        let segment = try await makeLog(dir, count: 5)
        let original = try readFile(segment)
        let last = recordBounds(original).last!
        var state: UInt64 = 7
        for kept in 0..<(last.end - last.start) {
            var torn = original
            for i in (last.start + kept)..<last.end {
                state = state &* 6_364_136_223_846_793_005 &+ 1
                torn[i] = garbage ? UInt8(truncatingIfNeeded: state >> 40) | 1 : 0
            }
            try writeFile(segment, torn)
            let log = try WriteAheadLog(directory: dir.path, options: smallOptions())
            let expectTorn = kept > 0 || garbage
            #expect((log.recovery.tornTail != nil) == expectTorn, "kept \(kept) bytes")
            #expect(log.recovery.tornTail?.offset ?? last.start == last.start)
            #expect(log.state(of: 1)?.lastIndex == 4, "kept \(kept) bytes")
            try await log.append(group: 1, entries: [entry(group: 1, index: 5, term: 2)])
            log.close()
            let reopened = try WriteAheadLog(directory: dir.path, options: smallOptions())
            #expect(reopened.recovery.tornTail == nil)
            #expect(try reopened.entries(group: 1, in: 1..<6) == entries(group: 1, 1...4) + [entry(group: 1, index: 5, term: 2)])
            reopened.close()
        }
    }

    @Test func bitFlipInTheMiddleOfASealedSegmentIsNamed() async throws {
        let dir = TemporaryDirectory()
        _ = try await makeLog(dir, count: 3000)
        let files = try segmentFiles(dir.path)
        #expect(files.count >= 3)
        let first = dir.appending(files[0])
        var bytes = try readFile(first)
        let victim = recordBounds(bytes)[100]
        bytes[victim.start + 20] ^= 0x10
        try writeFile(first, bytes)
        let error = storageError { _ = try WriteAheadLog(directory: dir.path, options: smallOptions()) }
        guard case .corruption(let file, let offset, let expected)? = error else {
            Issue.record("expected corruption, got \(String(describing: error))")
            return
        }
        #expect(file == first.string)
        #expect(offset == victim.start)
        #expect(expected.contains("CRC32C"))
        #expect(error!.description.contains("rejoin"))
    }

    /// In the last segment, a flipped record followed by more than one batch of valid records is
    /// corruption, not a torn tail.
    @Test func bitFlipFarFromTheEndOfTheLastSegmentIsCorruption() async throws {
        let dir = TemporaryDirectory()
        let segment = try await makeLog(dir, count: 400, options: smallOptions(segmentSize: 1 << 20, batch: 4 << 10))
        var bytes = try readFile(segment)
        let victim = recordBounds(bytes)[10]
        bytes[victim.end - 1] ^= 0x01
        try writeFile(segment, bytes)
        let error = storageError { _ = try WriteAheadLog(directory: dir.path, options: smallOptions(segmentSize: 1 << 20, batch: 4 << 10)) }
        guard case .corruption(let file, let offset, _)? = error else {
            Issue.record("expected corruption, got \(String(describing: error))")
            return
        }
        #expect(file == segment.string)
        #expect(offset == victim.start)
    }

    /// Near the end of the last segment, within one batch of it, a flipped record that has valid
    /// records after it is still corruption: cutting it as a torn tail would drop acknowledged
    /// records (found by `divan chaos --faults disk`).
    @Test func bitFlipNearTheEndOfTheLastSegmentWithRecordsAfterItIsCorruption() async throws {
        let dir = TemporaryDirectory()
        let segment = try await makeLog(dir, count: 40)
        var bytes = try readFile(segment)
        let records = recordBounds(bytes)
        let victim = records[records.count - 3]
        bytes[victim.end - 1] ^= 0x01
        try writeFile(segment, bytes)
        let error = storageError { _ = try WriteAheadLog(directory: dir.path, options: smallOptions()) }
        guard case .corruption(let file, let offset, _)? = error else {
            Issue.record("expected corruption, got \(String(describing: error))")
            return
        }
        #expect(file == segment.string)
        #expect(offset == victim.start)
    }

    /// A flip in a record's length field makes the next record appear anywhere, or past the end of
    /// the file; recovery must still see the intact records after it and refuse to cut them (found by
    /// `divan chaos --faults disk`, which flipped bit 1 of a length's third byte).
    @Test(arguments: 0..<32) func bitFlipInALengthFieldNearTheEndIsCorruption(bit: Int) async throws {
        let dir = TemporaryDirectory()
        let segment = try await makeLog(dir, count: 40)
        var bytes = try readFile(segment)
        let records = recordBounds(bytes)
        let victim = records[records.count - 3]
        bytes[victim.start + bit / 8] ^= UInt8(1) << (bit % 8)
        try writeFile(segment, bytes)
        let error = storageError { _ = try WriteAheadLog(directory: dir.path, options: smallOptions()) }
        guard case .corruption(_, let offset, _)? = error else {
            Issue.record("bit \(bit): expected corruption, got \(String(describing: error))")
            return
        }
        #expect(offset == victim.start)
    }

    @Test func bitFlipInASegmentHeaderIsNamed() async throws {
        let dir = TemporaryDirectory()
        _ = try await makeLog(dir, count: 3000)
        let first = dir.appending(try segmentFiles(dir.path)[0])
        var bytes = try readFile(first)
        bytes[17] ^= 0x04
        try writeFile(first, bytes)
        let error = storageError { _ = try WriteAheadLog(directory: dir.path, options: smallOptions()) }
        guard case .corruption(let file, let offset, let expected)? = error else {
            Issue.record("expected corruption, got \(String(describing: error))")
            return
        }
        #expect(file == first.string)
        #expect(offset == 28)
        #expect(expected.contains("header CRC32C"))
    }

    @Test func aMissingSegmentIsNamed() async throws {
        let dir = TemporaryDirectory()
        _ = try await makeLog(dir, count: 3000)
        let files = try segmentFiles(dir.path)
        try FileManager.default.removeItem(atPath: dir.appending(files[1]).string)
        let error = storageError { _ = try WriteAheadLog(directory: dir.path, options: smallOptions()) }
        #expect(error?.description.contains(files[1]) == true)
    }

    /// The torn-tail bound is the batch limit in a segment's header, so a log reopened with another
    /// limit continues in a new segment.
    @Test func aChangedBatchLimitStartsANewSegment() async throws {
        let dir = TemporaryDirectory()
        _ = try await makeLog(dir, count: 3)
        let log = try WriteAheadLog(directory: dir.path, options: smallOptions(batch: 16 << 10))
        try await log.append(group: 1, entries: [entry(group: 1, index: 4)])
        log.close()
        #expect(try segmentFiles(dir.path).count == 2)
        let reopened = try WriteAheadLog(directory: dir.path, options: smallOptions())
        #expect(try reopened.entries(group: 1, in: 1..<5) == entries(group: 1, 1...4))
    }

    /// A crash while a new segment was being created leaves an empty last segment: it is removed.
    @Test func anInterruptedSegmentCreationIsDiscarded() async throws {
        let dir = TemporaryDirectory()
        _ = try await makeLog(dir, count: 10)
        let next = dir.appending(SegmentFormat.fileName(sequence: 2))
        try writeFile(next, [UInt8](repeating: 0, count: 4096))
        let collected = Messages()
        var options = smallOptions()
        options.log = { message in collected.lines.withLock { $0.append(message) } }
        let log = try WriteAheadLog(directory: dir.path, options: options)
        let messages = collected.lines.withLock { $0 }
        #expect(log.state(of: 1)?.lastIndex == 10)
        #expect(messages.contains { $0.contains("removed") })
        try await log.append(group: 1, entries: [entry(group: 1, index: 11)])
    }
}

/// Messages the log reported, collected for a test to inspect.
final class Messages: Sendable {
    let lines = Mutex<[String]>([])
}
