import Checksum
import RaftCore

/// The identity of a Raft group within a process.
public typealias RaftGroupID = UInt64

/// The on-disk layout of WAL segments, format version 1 (docs/storage.md describes it in prose).
enum SegmentFormat {
    static let magic: [UInt8] = Array("DIVANWAL".utf8)
    static let version: UInt32 = 1
    static let headerSize = 32
    /// length (4) + type (1) + reserved (3) + CRC32C (4).
    static let recordHeaderSize = 12

    static func fileName(sequence: UInt32) -> String {
        let hex = String(sequence, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex + ".wal"
    }

    static func sequence(fromFileName name: String) -> UInt32? {
        guard name.hasSuffix(".wal"), name.utf8.count == 20 else { return nil }
        return UInt32(name.prefix(16), radix: 16)
    }

    /// The header: magic, version, the writer's maximum batch size (the bound recovery uses to tell a
    /// torn tail from corruption), the segment's sequence number, and a CRC32C of the bytes before it.
    static func header(sequence: UInt32, maximumBatchBytes: UInt32) -> [UInt8] {
        var writer = ByteWriter(capacity: headerSize)
        writer.writeRaw(magic)
        writer.write(version)
        writer.write(maximumBatchBytes)
        writer.write(UInt64(sequence))
        writer.write(UInt32(0))
        writer.write(CRC32C.checksum(writer.bytes))
        return writer.bytes
    }

    struct Header {
        var sequence: UInt32
        var maximumBatchBytes: Int
    }

    /// Where a header does not match, and what was expected there.
    struct HeaderProblem: Error {
        var offset: Int
        var expected: String
    }

    /// Parses a header, returning what was expected where it does not match.
    static func parseHeader(_ bytes: UnsafeRawBufferPointer) -> Result<Header, HeaderProblem> {
        guard bytes.count >= headerSize else {
            return .failure(HeaderProblem(offset: bytes.count, expected: "a \(headerSize)-byte segment header, found \(bytes.count) bytes"))
        }
        guard bytes.prefix(8).elementsEqual(magic) else { return .failure(HeaderProblem(offset: 0, expected: "magic \"DIVANWAL\"")) }
        let stored = bytes.loadUnaligned(fromByteOffset: 28, as: UInt32.self).littleEndian
        let computed = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<28]))
        guard stored == computed else {
            return .failure(HeaderProblem(offset: 28, expected: "header CRC32C \(hex(computed)), found \(hex(stored))"))
        }
        let version = bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian
        guard version == SegmentFormat.version else {
            return .failure(HeaderProblem(offset: 8, expected: "format version \(SegmentFormat.version), found \(version)"))
        }
        let batch = bytes.loadUnaligned(fromByteOffset: 12, as: UInt32.self).littleEndian
        let sequence = bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self).littleEndian
        guard let sequence = UInt32(exactly: sequence) else {
            return .failure(HeaderProblem(offset: 16, expected: "a segment sequence number below 2^32, found \(sequence)"))
        }
        return .success(Header(sequence: sequence, maximumBatchBytes: Int(batch)))
    }

    static func hex(_ value: UInt32) -> String { "0x" + String(value, radix: 16) }
}

/// The kinds of WAL records. The raw values are part of the format.
enum RecordType: UInt8 {
    /// Entries of one group; entries at or after the first one replace the group's existing suffix.
    case entries = 1
    /// The group's hard state; the last one in log order wins.
    case hardState = 2
    /// Entries up to an index (whose term is recorded) are no longer needed.
    case compact = 3
    /// The group installed a snapshot: its whole log is replaced by the snapshot's index and term.
    case snapshot = 4
    /// Live entries copied out of a segment about to be deleted. They fill their indexes without
    /// truncating anything, because newer records than the copy may already hold later entries.
    case rewrittenEntries = 5
}

/// Builds framed records into one buffer: the unit a caller hands to the writer.
struct RecordBuilder {
    private(set) var writer = ByteWriter(capacity: 256)
    private var recordStart = 0

    var bytes: [UInt8] { writer.bytes }
    var count: Int { writer.count }

    /// Starts a record; the body follows through `writer`, then `finish()` frames it.
    mutating func begin(_ type: RecordType, group: RaftGroupID) {
        recordStart = writer.count
        writer.write(UInt32(0))
        writer.write(type.rawValue)
        writer.writeRaw([0, 0, 0] as [UInt8])
        writer.write(UInt32(0))
        writer.writeVarint(group)
    }

    /// The offset of the current record within the buffer.
    var currentRecordStart: Int { recordStart }

    mutating func writeVarint(_ value: UInt64) { writer.writeVarint(value) }

    mutating func write<T: BinaryEncodable>(_ value: T) { value.encode(to: &writer) }

    /// Fills in the record's length and CRC32C (over length, type, reserved bytes and body).
    mutating func finish() {
        let length = writer.count - recordStart - SegmentFormat.recordHeaderSize
        writer.patch(UInt32(length), at: recordStart)
        let crc = writer.bytes.withUnsafeBytes { raw in
            var crc = CRC32C()
            crc.update(UnsafeRawBufferPointer(rebasing: raw[recordStart..<recordStart + 8]))
            crc.update(UnsafeRawBufferPointer(rebasing: raw[(recordStart + SegmentFormat.recordHeaderSize)...]))
            return crc.value
        }
        writer.patch(crc, at: recordStart + 8)
    }
}

/// Where an entry lives on disk, plus its term, so that term queries never touch the disk.
struct Slot: Sendable, Equatable {
    var term: UInt64
    var segment: UInt32
    var recordOffset: UInt32
    var recordLength: UInt32
    /// The entry's offset from the start of its record's frame.
    var entryOffset: UInt32
    var entryLength: UInt32

    /// A placeholder for an index not yet filled during recovery.
    static let hole = Slot(term: 0, segment: .max, recordOffset: 0, recordLength: 0, entryOffset: 0, entryLength: 0)
    var isHole: Bool { segment == .max }
}

/// A position in the log: (segment, byte offset), ordered.
struct LogPosition: Sendable, Comparable {
    var segment: UInt32
    var offset: Int

    static func < (a: LogPosition, b: LogPosition) -> Bool {
        (a.segment, a.offset) < (b.segment, b.offset)
    }
}

extension RecordBuilder {
    /// Writes one entry prefixed with its 4-byte length; returns where its encoding starts and its length.
    mutating func writeEntry(_ entry: Entry) -> (offset: Int, length: Int) {
        let lengthAt = count
        writer.write(UInt32(0))
        let start = count
        entry.encode(to: &writer)
        let length = count - start
        writer.patch(UInt32(length), at: lengthAt)
        return (start, length)
    }
}
