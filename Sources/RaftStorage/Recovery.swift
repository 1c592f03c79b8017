import Checksum
import RaftCore
import SystemPackage

/// Rebuilds the in-memory index from the segments, verifying every record.
///
/// The rules (docs/storage.md): segments must be consecutive; every record of every segment but
/// the last must verify, and the bytes after a segment's last record must be zero. In the last
/// segment, an invalid record starts a torn tail — the batch the writer was syncing when the
/// process died — provided nothing but zeros lies further than one maximum batch beyond it. The
/// torn tail is zeroed on disk and reported. Anything else is corruption, named by file and offset.
///
/// A first, fast pass checks CRCs on a second thread while the first replays, which roughly halves
/// recovery time on two cores. It handles only a clean log; at the first anomaly (a failed CRC, a
/// torn tail, an interrupted segment creation) recovery starts over with the careful, sequential
/// pass, which alone decides what to cut and what to report as corruption.
enum Recovery {
    static func run(directory: FilePath, options: WriteAheadLogOptions) throws(StorageError) -> (WALState, RecoveryReport) {
        let started = FileSystem.monotonicNanoseconds()
        if let clean = try pass(directory: directory, options: options, careful: false, started: started) { return clean }
        return try pass(directory: directory, options: options, careful: true, started: started)!
    }

    /// One recovery pass; a fast (not careful) pass returns nil when the log needs the careful one.
    private static func pass(
        directory: FilePath, options: WriteAheadLogOptions, careful: Bool, started: UInt64
    ) throws(StorageError) -> (WALState, RecoveryReport)? {
        var sequences: [UInt32] = []
        for name in try FileSystem.list(directory) {
            if let sequence = SegmentFormat.sequence(fromFileName: name) { sequences.append(sequence) }
        }
        sequences.sort()
        for (previous, next) in zip(sequences, sequences.dropFirst()) where next != previous + 1 {
            throw StorageError.corruption(
                file: directory.appending(SegmentFormat.fileName(sequence: previous + 1)).string, offset: 0,
                expected: "segment \(previous + 1) between segments \(previous) and \(next), but the file is missing")
        }

        var replay = Replay()
        var report = RecoveryReport(segments: 0, bytes: 0, records: 0, groups: 0, tornTail: nil, durationNanoseconds: 0)
        var segments: [UInt32: SegmentFile] = [:]
        var order: [UInt32] = []
        var tail: LogPosition?
        for (i, sequence) in sequences.enumerated() {
            let isLast = i == sequences.count - 1
            let path = directory.appending(SegmentFormat.fileName(sequence: sequence))
            let descriptor = try FileSystem.open(path)
            let file = SegmentFile(sequence: sequence, path: path, descriptor: descriptor)
            let size = try FileSystem.size(descriptor, path)
            let mapping = try FileSystem.MappedFile(descriptor, size: size, path)
            let outcome = try withExtendedLifetime(mapping) { () throws(StorageError) -> Outcome? in
                if careful { return try scan(mapping.bytes, sequence: sequence, path: path, isLast: isLast, replay: &replay) }
                return fastScan(mapping.bytes, sequence: sequence, path: path, replay: &replay)
            }
            guard let outcome else { return nil }
            switch outcome {
            case .discardedEmptyLast:
                options.log("removed \(path.string): its creation was interrupted before it held any record")
                try FileSystem.remove(path)
                try FileSystem.syncDirectory(directory)
                continue
            case .scanned(let end, let records, let torn, let maximumBatchBytes):
                report.records += records
                report.bytes += end - SegmentFormat.headerSize
                if let torn {
                    let zeros = [UInt8](repeating: 0, count: torn.bytesCut)
                    try zeros.withStorageBytes { raw throws(StorageError) in try FileSystem.write(descriptor, at: end, raw, path) }
                    try FileSystem.dataSync(descriptor, path)
                    report.tornTail = torn
                }
                // The torn-tail bound of a segment is the batch limit in its header: a writer with a
                // different limit must not continue in it, so it starts a new segment instead.
                if isLast {
                    let offset = maximumBatchBytes == options.maximumBatchBytes ? end : options.segmentSize + 1
                    tail = LogPosition(segment: sequence, offset: offset)
                }
            }
            segments[sequence] = file
            order.append(sequence)
        }
        try replay.finish(directory: directory)

        // With no segment to continue, the tail sits past the end of the last one, so the first write starts a new one.
        let start = tail ?? LogPosition(segment: order.last ?? 0, offset: options.segmentSize + 1)
        var state = WALState(tail: start, durable: tail ?? LogPosition(segment: 0, offset: 0))
        state.groups = replay.groups
        state.segments = segments
        state.segmentOrder = order
        report.segments = order.count
        report.groups = replay.groups.count
        report.durationNanoseconds = FileSystem.monotonicNanoseconds() - started
        return (state, report)
    }

    enum Outcome {
        case discardedEmptyLast
        case scanned(end: Int, records: Int, torn: RecoveryReport.TornTail?, maximumBatchBytes: Int)
    }

    /// A segment's address, handed to the verifying thread, which only reads it while the caller
    /// keeps the mapping alive and waits for the result.
    private struct SharedBytes: @unchecked Sendable {
        let bytes: UnsafeRawBufferPointer
    }

    /// Replays a segment while another thread checks its CRCs. Returns nil for anything but a
    /// clean segment: valid header, valid records, zeros after them.
    private static func fastScan(_ raw: UnsafeRawBufferPointer, sequence: UInt32, path: FilePath, replay: inout Replay) -> Outcome? {
        guard case .success(let header) = SegmentFormat.parseHeader(raw), header.sequence == sequence else { return nil }
        var bounds: [(start: Int, end: Int, type: RecordType)] = []
        var offset = SegmentFormat.headerSize
        while offset + SegmentFormat.recordHeaderSize <= raw.count {
            let length = Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian)
            if length == 0 && firstNonZero(raw, in: offset..<offset + SegmentFormat.recordHeaderSize) == nil { break }
            let end = offset + SegmentFormat.recordHeaderSize + length
            guard end <= raw.count, let type = RecordType(rawValue: raw[offset + 4]) else { return nil }
            bounds.append((offset, end, type))
            offset = end
        }
        guard firstNonZero(raw, in: offset..<raw.count) == nil else { return nil }

        // The verifier publishes how many records it has checked; replay never applies one before
        // it is checked, because unverified bytes could describe anything (a gap of a billion entries).
        let progress = ConditionLock<(verified: Int, failed: Bool)>((0, false))
        let shared = SharedBytes(bytes: raw)
        let ranges = bounds.map { $0.start..<$0.end }
        startThread {
            var verified = 0
            for range in ranges {
                guard isValidRecord(UnsafeRawBufferPointer(rebasing: shared.bytes[range])) else {
                    progress.withLock { $0.failed = true }
                    progress.broadcast()
                    return
                }
                verified += 1
                if verified % 256 == 0 || verified == ranges.count {
                    progress.withLock { $0.verified = verified }
                    progress.broadcast()
                }
            }
            progress.withLock { $0.verified = ranges.count }
            progress.broadcast()
        }
        var known = 0
        var replayed = true
        for (i, bound) in bounds.enumerated() {
            if i >= known {
                let (verified, failed) = progress.withLock(waitingUntil: { $0.verified > i || $0.failed }) { ($0.verified, $0.failed) }
                if verified <= i && failed {
                    replayed = false
                    break
                }
                known = verified
            }
            do throws(StorageError) {
                try replay.apply(
                    bound.type, record: UnsafeRawBufferPointer(rebasing: raw[bound.start..<bound.end]), segment: sequence,
                    offset: bound.start, path: path)
            } catch {
                replayed = false
                break
            }
        }
        // The verifier must be done with the mapping before the caller unmaps it.
        let failed = progress.withLock(waitingUntil: { $0.verified == ranges.count || $0.failed }) { $0.failed }
        guard replayed && !failed else { return nil }
        return .scanned(end: offset, records: bounds.count, torn: nil, maximumBatchBytes: header.maximumBatchBytes)
    }

    /// True when a framed record's length and CRC32C match its bytes.
    static func isValidRecord(_ raw: UnsafeRawBufferPointer) -> Bool {
        guard raw.count >= SegmentFormat.recordHeaderSize else { return false }
        let length = Int(raw.loadUnaligned(fromByteOffset: 0, as: UInt32.self).littleEndian)
        guard raw.count == SegmentFormat.recordHeaderSize + length else { return false }
        let stored = raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian
        var crc = CRC32C()
        crc.update(UnsafeRawBufferPointer(rebasing: raw[0..<8]))
        crc.update(UnsafeRawBufferPointer(rebasing: raw[SegmentFormat.recordHeaderSize...]))
        return crc.value == stored
    }

    /// True when a valid record starts where the bad record at `offset` would end, under its stated
    /// length or under any length one flipped bit away from it. A tear cuts the end of the log, so
    /// an intact record after the bad one means the bad one was damaged in place. Trying those 33
    /// ends covers every single-bit flip, in the length or anywhere else, at the cost of 33 checks;
    /// scanning every later offset instead costs a CRC per candidate and stalled recovery for
    /// hours on a large segment.
    static func hasValidRecord(_ raw: UnsafeRawBufferPointer, after offset: Int) -> Bool {
        guard offset + SegmentFormat.recordHeaderSize <= raw.count else { return false }
        let stated = raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian
        let lengths = [stated] + (0..<32).map { stated ^ (UInt32(1) << UInt32($0)) }
        return lengths.contains { length in
            let next = offset + SegmentFormat.recordHeaderSize + Int(length)
            guard next + SegmentFormat.recordHeaderSize <= raw.count else { return false }
            let nextLength = Int(raw.loadUnaligned(fromByteOffset: next, as: UInt32.self).littleEndian)
            let nextEnd = next + SegmentFormat.recordHeaderSize + nextLength
            guard nextLength > 0, nextEnd <= raw.count else { return false }
            return isValidRecord(UnsafeRawBufferPointer(rebasing: raw[next..<nextEnd]))
        }
    }

    /// The offset of the first non-zero byte in `raw[range]`, if any.
    static func firstNonZero(_ raw: UnsafeRawBufferPointer, in range: Range<Int>) -> Int? {
        var i = range.lowerBound
        while i < range.upperBound && i & 7 != 0 {
            if raw[i] != 0 { return i }
            i += 1
        }
        while i + 8 <= range.upperBound {
            if raw.load(fromByteOffset: i, as: UInt64.self) != 0 { break }
            i += 8
        }
        while i < range.upperBound {
            if raw[i] != 0 { return i }
            i += 1
        }
        return nil
    }

    private static func scan(
        _ raw: UnsafeRawBufferPointer, sequence: UInt32, path: FilePath, isLast: Bool, replay: inout Replay
    ) throws(StorageError) -> Outcome {
        let header: SegmentFormat.Header
        switch SegmentFormat.parseHeader(raw) {
        case .success(let parsed):
            header = parsed
        case .failure(let problem):
            let body = min(raw.count, SegmentFormat.headerSize)..<raw.count
            if isLast && firstNonZero(raw, in: body) == nil { return .discardedEmptyLast }
            throw StorageError.corruption(file: path.string, offset: problem.offset, expected: problem.expected)
        }
        guard header.sequence == sequence else {
            throw StorageError.corruption(
                file: path.string, offset: 16, expected: "segment sequence \(sequence) as in the file name, found \(header.sequence)")
        }

        var offset = SegmentFormat.headerSize
        var records = 0
        var isInvalid = false
        while offset + SegmentFormat.recordHeaderSize <= raw.count {
            let length = Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian)
            if length == 0 && firstNonZero(raw, in: offset..<offset + SegmentFormat.recordHeaderSize) == nil { break }
            let end = offset + SegmentFormat.recordHeaderSize + length
            guard end <= raw.count, isValidRecord(UnsafeRawBufferPointer(rebasing: raw[offset..<end])),
                let type = RecordType(rawValue: raw[offset + 4])
            else {
                isInvalid = true
                break
            }
            try replay.apply(
                type, record: UnsafeRawBufferPointer(rebasing: raw[offset..<end]), segment: sequence, offset: offset, path: path)
            records += 1
            offset = end
        }

        if !isInvalid {
            guard let garbage = firstNonZero(raw, in: offset..<raw.count) else {
                return .scanned(end: offset, records: records, torn: nil, maximumBatchBytes: header.maximumBatchBytes)
            }
            if !isLast {
                throw StorageError.corruption(
                    file: path.string, offset: garbage, expected: "only zero bytes after the last record, which ends at \(offset)")
            }
        } else if !isLast || hasValidRecord(raw, after: offset) {
            // A tear only cuts the end of the log. A bad record with an intact one anywhere after it
            // was damaged in place (a bit flip), and cutting there would drop acknowledged records.
            throw StorageError.corruption(
                file: path.string, offset: offset, expected: "a record whose length, type and CRC32C are valid")
        }
        // The last segment: at most one batch beyond the first invalid byte may hold torn data.
        let limit = min(raw.count, offset + max(header.maximumBatchBytes, SegmentFormat.recordHeaderSize))
        if let stray = firstNonZero(raw, in: limit..<raw.count) {
            throw StorageError.corruption(
                file: path.string, offset: offset,
                expected: "a valid record, or a torn tail of at most \(header.maximumBatchBytes) bytes; found data again at offset \(stray)")
        }
        let cut = (firstNonZero(raw, in: offset..<limit).map { _ in limit } ?? offset) - offset
        let torn = cut == 0 ? nil : RecoveryReport.TornTail(file: path.string, offset: offset, bytesCut: cut)
        return .scanned(end: offset, records: records, torn: torn, maximumBatchBytes: header.maximumBatchBytes)
    }
}

/// The groups as the records so far describe them.
struct Replay {
    var groups: [RaftGroupID: GroupLog] = [:]
    /// Scratch space reused for every entries record.
    private var slots: [Slot] = []
    private var indexes: [UInt64] = []

    mutating func apply(
        _ type: RecordType, record: UnsafeRawBufferPointer, segment: UInt32, offset: Int, path: FilePath
    ) throws(StorageError) {
        var reader = ByteReader(record)
        do throws(CodecError) {
            try reader.skip(SegmentFormat.recordHeaderSize)
            let group = try reader.readVarint("group id")
            if groups[group] == nil { groups[group] = GroupLog() }
            switch type {
            case .entries, .rewrittenEntries:
                let count = try reader.readCount("entries", minimumElementSize: 4 + Entry.headerSize + 1)
                slots.removeAll(keepingCapacity: true)
                indexes.removeAll(keepingCapacity: true)
                for _ in 0..<count {
                    let length = Int(try reader.readUInt32("entry length"))
                    let start = reader.offset
                    guard length > Entry.headerSize else {
                        throw CodecError(offset: start, expected: "an entry longer than \(Entry.headerSize) bytes, found \(length)")
                    }
                    let term = try reader.readUInt64("entry term")
                    let index = try reader.readUInt64("entry index")
                    try reader.skip(length - Entry.headerSize, "entry payload")
                    if type == .entries, let previous = indexes.last, index != previous + 1 {
                        throw CodecError(offset: start + 8, expected: "entry index \(previous + 1), found \(index)")
                    }
                    indexes.append(index)
                    slots.append(Slot(
                        term: term, segment: segment, recordOffset: UInt32(offset), recordLength: UInt32(record.count),
                        entryOffset: UInt32(start), entryLength: UInt32(length)))
                }
                guard let first = indexes.first else { break }
                if type == .entries {
                    groups[group]!.append(first: first, slots, entries: nil)
                } else {
                    for (index, slot) in zip(indexes, slots) {
                        groups[group]!.fill(first: index, [slot])
                    }
                }
            case .hardState:
                let hardState = try HardState(from: &reader)
                groups[group]!.hardState = hardState
                groups[group]!.hardStateSegment = segment
            case .compact, .snapshot:
                let index = try reader.readVarint("index")
                let term = try reader.readVarint("term")
                if type == .compact {
                    groups[group]!.compact(through: index, term: term)
                } else {
                    groups[group]!.reset(toSnapshot: index, term: term)
                }
                groups[group]!.baseSegment = segment
            }
            try reader.expectEnd("record")
        } catch {
            // The CRC matched, so these bytes are what a writer produced: a format bug or a foreign file.
            throw StorageError.corruption(file: path.string, offset: offset + error.offset, expected: error.expected)
        }
    }

    /// Checks that every group's log is whole: no index missing, starting right after its snapshot.
    func finish(directory: FilePath) throws(StorageError) {
        for (group, log) in groups where log.count > 0 {
            if let hole = log.firstHole() {
                throw StorageError.corruption(
                    file: directory.string, offset: 0, expected: "entry \(hole) of group \(group) in some segment, but none holds it")
            }
            if log.firstIndex != log.baseIndex + 1 {
                throw StorageError.corruption(
                    file: directory.string, offset: 0,
                    expected: "group \(group)'s entries to start at \(log.baseIndex + 1), after its snapshot; they start at \(log.firstIndex)")
            }
        }
    }
}
