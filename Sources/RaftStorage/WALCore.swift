import Checksum
import RaftCore
import Synchronization
import SystemPackage

/// Completes when a queued write is durable, or failed. Returned by `WriteAheadLog.enqueue`, so a
/// caller can queue writes in order without waiting, and wait for durability later.
public final class WriteTicket: Sendable {
    private enum Status {
        case pending(CheckedContinuation<Void, any Error>?)
        case done(StorageError?)
    }

    private let status: Mutex<Status>

    init(completed: Bool) { status = Mutex(completed ? .done(nil) : .pending(nil)) }

    /// True once the write is durable.
    public var isDurable: Bool {
        status.withLock { if case .done(nil) = $0 { true } else { false } }
    }

    /// Returns once the write is durable; throws, and the write is not acknowledged, if it failed.
    public func wait() async throws(StorageError) {
        do {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome: StorageError?? = status.withLock { status in
                    switch status {
                    case .done(let error): return .some(error)
                    case .pending:
                        status = .pending(continuation)
                        return .none
                    }
                }
                switch outcome {
                case .none: break
                case .some(.none): continuation.resume()
                case .some(.some(let error)): continuation.resume(throwing: error)
                }
            }
        } catch let error as StorageError {
            throw error
        } catch {
            throw StorageError.failed(cause: "\(error)")
        }
    }

    func complete(_ error: StorageError?) {
        let waiter: CheckedContinuation<Void, any Error>? = status.withLock { status in
            guard case .pending(let continuation) = status else { return nil }
            status = .done(error)
            return continuation
        }
        if let error { waiter?.resume(throwing: error) } else { waiter?.resume() }
    }
}

/// An open segment file. Shared by reference so that a reader's `pread` never races a purge's
/// `close`: the descriptor closes when the last user lets go.
final class SegmentFile: Sendable {
    let sequence: UInt32
    let path: FilePath
    let descriptor: FileDescriptor

    init(sequence: UInt32, path: FilePath, descriptor: FileDescriptor) {
        self.sequence = sequence
        self.path = path
        self.descriptor = descriptor
    }

    deinit { try? descriptor.close() }
}

/// Bytes queued for the writer, at a position reserved when they were queued.
struct PendingWrite {
    var position: LogPosition
    var bytes: [UInt8]
    var ticket: WriteTicket
    var sync: WriteSync
}

/// Everything the lock guards.
struct WALState {
    var groups: [RaftGroupID: GroupLog] = [:]
    var segments: [UInt32: SegmentFile] = [:]
    var segmentOrder: [UInt32] = []
    /// Where the next queued bytes go.
    var tail: LogPosition
    /// Everything before this is written and synced.
    var durable: LogPosition
    var queue: [PendingWrite] = []
    var queueHead = 0
    var failure: StorageError?
    var isClosing = false
    var isWriterDone = false
    var isPurging = false
    var statistics = WriteAheadLogStatistics()

    var hasQueuedWrites: Bool { queueHead < queue.count }
}

/// An entry's slot before its bytes have a position: offsets are relative to the write's buffer.
struct Encoded {
    enum Operation {
        case snapshot(RaftGroupID, index: UInt64, term: UInt64)
        case entries(RaftGroupID, first: UInt64, slots: [Slot], entries: [Entry])
        case rewritten(RaftGroupID, indexes: [UInt64], slots: [Slot], replacing: [Slot])
        case hardState(RaftGroupID, HardState)
        case compact(RaftGroupID, index: UInt64, term: UInt64)
    }

    var builder = RecordBuilder()
    var operations: [Operation] = []

    mutating func addSnapshot(_ group: RaftGroupID, index: UInt64, term: UInt64) {
        builder.begin(.snapshot, group: group)
        builder.writeVarint(index)
        builder.writeVarint(term)
        builder.finish()
        operations.append(.snapshot(group, index: index, term: term))
    }

    mutating func addCompact(_ group: RaftGroupID, index: UInt64, term: UInt64) {
        builder.begin(.compact, group: group)
        builder.writeVarint(index)
        builder.writeVarint(term)
        builder.finish()
        operations.append(.compact(group, index: index, term: term))
    }

    mutating func addHardState(_ group: RaftGroupID, _ hardState: HardState) {
        builder.begin(.hardState, group: group)
        builder.write(hardState)
        builder.finish()
        operations.append(.hardState(group, hardState))
    }

    /// Encodes entries with consecutive indexes as one record; `replacing` marks a purge's copy of
    /// live entries, whose old slots they replace.
    mutating func addEntries(_ group: RaftGroupID, _ entries: [Entry], replacing: [Slot]? = nil) {
        builder.begin(replacing == nil ? .entries : .rewrittenEntries, group: group)
        builder.writeVarint(UInt64(entries.count))
        let start = builder.currentRecordStart
        var slots: [Slot] = []
        slots.reserveCapacity(entries.count)
        for entry in entries {
            let (offset, length) = builder.writeEntry(entry)
            slots.append(Slot(
                term: entry.term, segment: 0, recordOffset: UInt32(start), recordLength: 0,
                entryOffset: UInt32(offset - start), entryLength: UInt32(length)))
        }
        builder.finish()
        let recordLength = UInt32(builder.count - start)
        for i in slots.indices { slots[i].recordLength = recordLength }
        if let replacing {
            operations.append(.rewritten(group, indexes: entries.map(\.index), slots: slots, replacing: replacing))
        } else {
            operations.append(.entries(group, first: entries[0].index, slots: slots, entries: entries))
        }
    }
}

/// The shared machinery behind `WriteAheadLog`: state under one lock, and the writer thread.
final class WALCore: Sendable {
    let directory: FilePath
    let options: WriteAheadLogOptions
    let lock: ConditionLock<WALState>

    init(directory: FilePath, options: WriteAheadLogOptions, state: WALState) {
        self.directory = directory
        self.options = options
        self.lock = ConditionLock(state)
    }

    static func publicState(_ log: GroupLog) -> GroupLogState {
        GroupLogState(
            firstIndex: log.baseIndex + 1, lastIndex: log.lastIndex, lastTerm: log.lastTerm,
            snapshotIndex: log.baseIndex, snapshotTerm: log.baseTerm, hardState: log.hardState)
    }

    // MARK: Writing

    func enqueue(_ writes: [LogWrite], sync: WriteSync = .durable) throws(StorageError) -> WriteTicket {
        // A follower catching up can be handed more entries in one Ready than one batch may hold.
        // They go in consecutive batches; a crash between them keeps a prefix of the entries, which
        // is a valid log, and the hard state rides with the last batch so it never runs ahead.
        let budget = max(1, options.maximumBatchBytes / 2)
        // The common case, one small Ready, goes straight through without copying its writes.
        if writes.reduce(0, { $0 + $1.entries.reduce(64) { $0 + Self.estimate($1) } }) <= budget { return try enqueueBatch(writes, sync: sync) }
        var ticket = WriteTicket(completed: true)
        for batch in Self.batches(of: writes, budget: budget) {
            ticket = try enqueueBatch(batch, sync: sync)
        }
        return ticket
    }

    /// An upper bound of an entry's encoded size in a batch.
    static func estimate(_ entry: Entry) -> Int { entry.approximateSize + 16 }

    /// `writes` cut into batches whose estimated encoding fits `budget` (an entry bigger than the
    /// budget gets a batch of its own); a write's snapshot goes with its first entries, its hard
    /// state with its last.
    static func batches(of writes: [LogWrite], budget: Int) -> [[LogWrite]] {
        var batches: [[LogWrite]] = []
        var current: [LogWrite] = []
        var currentSize = 0
        func add(_ piece: LogWrite, size: Int) {
            if !current.isEmpty && currentSize + size > budget {
                batches.append(current)
                current = []
                currentSize = 0
            }
            current.append(piece)
            currentSize += size
        }
        for write in writes {
            let total = write.entries.reduce(64) { $0 + estimate($1) }
            guard total > budget else {
                add(write, size: total)
                continue
            }
            var start = write.entries.startIndex
            while start < write.entries.endIndex {
                var end = start
                var size = 64
                while end < write.entries.endIndex && (end == start || size + estimate(write.entries[end]) <= budget) {
                    size += estimate(write.entries[end])
                    end += 1
                }
                let isFirst = start == write.entries.startIndex
                let isLast = end == write.entries.endIndex
                add(LogWrite(
                    group: write.group, snapshot: isFirst ? write.snapshot : nil, entries: Array(write.entries[start..<end]),
                    hardState: isLast ? write.hardState : nil), size: size)
                start = end
            }
        }
        if !current.isEmpty { batches.append(current) }
        return batches
    }

    private func enqueueBatch(_ writes: [LogWrite], sync: WriteSync) throws(StorageError) -> WriteTicket {
        var encoded = Encoded()
        for write in writes {
            if let snapshot = write.snapshot {
                encoded.addSnapshot(write.group, index: snapshot.index, term: snapshot.term)
            }
            if !write.entries.isEmpty {
                try Self.checkConsecutive(write.entries, group: write.group)
                encoded.addEntries(write.group, write.entries)
            }
            if let hardState = write.hardState { encoded.addHardState(write.group, hardState) }
        }
        if encoded.operations.isEmpty { return WriteTicket(completed: true) }
        return try enqueue(sync: sync, group: writes.first?.group ?? 0) { state throws(StorageError) in
            try Self.validate(writes, in: state)
            return encoded
        }
    }

    func compact(group: RaftGroupID, through index: UInt64) async throws(StorageError) {
        let term: UInt64? = lock.withLock { state in
            guard let log = state.groups[group], index > log.baseIndex else { return nil }
            return log.term(at: index)
        }
        guard let term else {
            let state = lock.withLock { $0.groups[group].map(Self.publicState) }
            if let state, index <= state.snapshotIndex { return }
            throw StorageError.invalidRequest(
                group: group, reason: "cannot compact through \(index): last index is \(state?.lastIndex ?? 0)")
        }
        var encoded = Encoded()
        encoded.addCompact(group, index: index, term: term)
        try await submit { state throws(StorageError) in
            guard state.groups[group]?.term(at: index) == term else {
                throw StorageError.invalidRequest(group: group, reason: "entry \(index) changed while compacting")
            }
            return encoded
        }
    }

    private static func checkConsecutive(_ entries: [Entry], group: RaftGroupID) throws(StorageError) {
        for i in 1..<max(1, entries.count) where entries[i].index != entries[i - 1].index + 1 {
            throw StorageError.invalidRequest(
                group: group, reason: "entries must have consecutive indexes; \(entries[i - 1].index) is followed by \(entries[i].index)")
        }
    }

    /// Checks writes against the log as it will be once earlier writes in the same call apply.
    private static func validate(_ writes: [LogWrite], in state: borrowing WALState) throws(StorageError) {
        var bounds: [RaftGroupID: (base: UInt64, last: UInt64)] = [:]
        for write in writes {
            var (base, last) = bounds[write.group]
                ?? state.groups[write.group].map { ($0.baseIndex, $0.lastIndex) } ?? (0, 0)
            if let snapshot = write.snapshot { (base, last) = (snapshot.index, snapshot.index) }
            if let first = write.entries.first?.index {
                guard first > base else {
                    throw StorageError.invalidRequest(
                        group: write.group, reason: "entry \(first) is at or before the snapshot index \(base)")
                }
                guard first <= last + 1 else {
                    throw StorageError.invalidRequest(
                        group: write.group, reason: "entry \(first) would leave a gap after the last index \(last)")
                }
                last = write.entries[write.entries.count - 1].index
            }
            bounds[write.group] = (base, last)
        }
    }

    /// Queues records: `encode` validates them against the state and returns them (or nil for nothing
    /// to write), all under the lock; then their position is reserved and the index updated. The
    /// ticket completes when the writer has made them durable (or only written them, for `.deferred`),
    /// or failed. `group` names the (first) group written in errors.
    func enqueue(
        sync: WriteSync = .durable, group: RaftGroupID = 0, _ encode: (borrowing WALState) throws(StorageError) -> Encoded?
    ) throws(StorageError) -> WriteTicket {
        let ticket: WriteTicket = try lock.withLock { state throws(StorageError) in
            if let failure = state.failure { throw StorageError.failed(cause: failure.description) }
            if state.isClosing { throw StorageError.closed }
            guard let encoded = try encode(state) else { return WriteTicket(completed: true) }
            guard encoded.builder.count <= options.maximumBatchBytes else {
                throw StorageError.invalidRequest(
                    group: group,
                    reason: "a write of \(encoded.builder.count) bytes exceeds the maximum batch of \(options.maximumBatchBytes) bytes; split it")
            }
            let position = reserve(encoded.builder.count, in: &state)
            apply(encoded.operations, at: position, to: &state)
            let ticket = WriteTicket(completed: false)
            state.queue.append(PendingWrite(position: position, bytes: encoded.builder.bytes, ticket: ticket, sync: sync))
            state.statistics.writes += 1
            return ticket
        }
        lock.broadcast()
        return ticket
    }

    func submit(_ encode: (borrowing WALState) throws(StorageError) -> Encoded?) async throws(StorageError) {
        try await enqueue(encode).wait()
    }

    /// Reserves room for `count` bytes at the tail, starting a new segment when the current one is full.
    func reserve(_ count: Int, in state: inout WALState) -> LogPosition {
        if state.tail.offset + count > options.segmentSize {
            state.tail = LogPosition(segment: state.tail.segment + 1, offset: SegmentFormat.headerSize)
        }
        let position = state.tail
        state.tail.offset += count
        return position
    }

    /// Applies encoded operations to the in-memory index, as they will read back on recovery.
    func apply(_ operations: [Encoded.Operation], at position: LogPosition, to state: inout WALState) {
        func placed(_ slots: [Slot]) -> [Slot] {
            slots.map { slot in
                var slot = slot
                slot.segment = position.segment
                slot.recordOffset += UInt32(position.offset)
                return slot
            }
        }
        for operation in operations {
            switch operation {
            case .snapshot(let group, let index, let term):
                state.groups[group, default: GroupLog()].reset(toSnapshot: index, term: term)
                state.groups[group]!.baseSegment = position.segment
            case .compact(let group, let index, let term):
                state.groups[group, default: GroupLog()].compact(through: index, term: term)
                state.groups[group]!.baseSegment = position.segment
            case .hardState(let group, let hardState):
                state.groups[group, default: GroupLog()].hardState = hardState
                state.groups[group]!.hardStateSegment = position.segment
            case .entries(let group, let first, let slots, let entries):
                state.groups[group, default: GroupLog()].append(first: first, placed(slots), entries: entries)
                state.groups[group]!.trimCache(limit: options.cachedEntriesPerGroup, written: state.durable)
            case .rewritten(let group, let indexes, let slots, let replacing):
                for (i, slot) in placed(slots).enumerated() {
                    state.groups[group]?.relocate(index: indexes[i], from: replacing[i], to: slot)
                }
            }
        }
    }

    // MARK: The writer thread

    func startWriter() {
        startThread { [self] in runWriter() }
    }

    private func runWriter() {
        var current: SegmentFile? = lock.withLock { state in state.segmentOrder.last.flatMap { state.segments[$0] } }
        // The segment holding deferred records written since the last fdatasync, and their size.
        var unsynced: SegmentFile?
        var unsyncedBytes = 0
        var buffer: [UInt8] = []
        buffer.reserveCapacity(options.maximumBatchBytes)
        while true {
            let batch: [PendingWrite]? = lock.withLock(waitingUntil: { $0.hasQueuedWrites || $0.isClosing }) { state in
                guard state.hasQueuedWrites else { return nil }
                return takeBatch(from: &state)
            }
            guard let batch else {
                if let unsynced { try? FileSystem.dataSync(unsynced.descriptor, unsynced.path) }
                break
            }
            do throws(StorageError) {
                let position = batch[0].position
                if current?.sequence != position.segment {
                    // Deferred records must not stay unsynced behind a later segment: recovery accepts a
                    // torn tail only in the last one.
                    if let unsynced {
                        try FileSystem.dataSync(unsynced.descriptor, unsynced.path)
                        lock.withLock { $0.statistics.syncs += 1 }
                    }
                    unsynced = nil
                    unsyncedBytes = 0
                    let file = try createSegment(sequence: position.segment)
                    lock.withLock { state in
                        state.segments[file.sequence] = file
                        state.segmentOrder.append(file.sequence)
                    }
                    current = file
                }
                buffer.removeAll(keepingCapacity: true)
                for write in batch { buffer.append(contentsOf: write.bytes) }
                let file = current!
                try buffer.withStorageBytes { raw throws(StorageError) in
                    try FileSystem.write(file.descriptor, at: position.offset, raw, file.path)
                }
                // Recovery takes at most one batch of torn bytes at the tail for a tear, so deferred
                // records are synced before they add up to more.
                let syncs = batch.contains { $0.sync == .durable } || unsyncedBytes + buffer.count > options.maximumBatchBytes
                if syncs {
                    if !options.unsafeSkipsDataSync { try FileSystem.dataSync(file.descriptor, file.path) }
                    unsynced = nil
                    unsyncedBytes = 0
                } else {
                    unsynced = file
                    unsyncedBytes += buffer.count
                }
                lock.withLock { state in
                    if syncs {
                        state.durable = LogPosition(segment: position.segment, offset: position.offset + buffer.count)
                        state.statistics.syncs += 1
                    }
                    state.statistics.batches += 1
                    state.statistics.bytesWritten += buffer.count
                }
                for write in batch { write.ticket.complete(nil) }
            } catch {
                fail(with: error, batch: batch)
            }
        }
        lock.withLock { state in
            state.isWriterDone = true
            state.segments.removeAll()
        }
        lock.broadcast()
    }

    /// Takes queued writes that are contiguous in one segment, up to the batch limit.
    private func takeBatch(from state: inout WALState) -> [PendingWrite] {
        var batch = [state.queue[state.queueHead]]
        var size = batch[0].bytes.count
        state.queueHead += 1
        while state.queueHead < state.queue.count {
            let next = state.queue[state.queueHead]
            let last = batch[batch.count - 1]
            guard next.position.segment == last.position.segment,
                next.position.offset == last.position.offset + last.bytes.count,
                size + next.bytes.count <= options.maximumBatchBytes
            else { break }
            batch.append(next)
            size += next.bytes.count
            state.queueHead += 1
        }
        if state.queueHead == state.queue.count {
            state.queue.removeAll(keepingCapacity: true)
            state.queueHead = 0
        }
        return batch
    }

    /// A write failed: nothing queued is acknowledged, and the log refuses writes from now on.
    private func fail(with error: StorageError, batch: [PendingWrite]) {
        let queued: [PendingWrite] = lock.withLock { state in
            state.failure = error
            let rest = Array(state.queue[state.queueHead...])
            state.queue.removeAll()
            state.queueHead = 0
            return rest
        }
        options.log("write-ahead log failed, refusing further writes: \(error)")
        for write in batch + queued { write.ticket.complete(error) }
    }

    /// Creates, preallocates and syncs a new segment with its header, and makes its name durable.
    private func createSegment(sequence: UInt32) throws(StorageError) -> SegmentFile {
        let path = directory.appending(SegmentFormat.fileName(sequence: sequence))
        let descriptor = try FileSystem.open(path, create: true)
        let file = SegmentFile(sequence: sequence, path: path, descriptor: descriptor)
        try FileSystem.preallocate(descriptor, size: options.segmentSize, path)
        let header = SegmentFormat.header(sequence: sequence, maximumBatchBytes: UInt32(options.maximumBatchBytes))
        try header.withStorageBytes { raw throws(StorageError) in try FileSystem.write(descriptor, at: 0, raw, path) }
        try FileSystem.fullSync(descriptor, path)
        try FileSystem.syncDirectory(directory)
        return file
    }

    func close() {
        lock.withLock { $0.isClosing = true }
        lock.broadcast()
        lock.withLock(waitingUntil: { $0.isWriterDone }) { _ in }
    }

    // MARK: Reading

    func entries(group: RaftGroupID, in range: Range<UInt64>, maximumBytes: Int) throws(StorageError) -> [Entry] {
        enum Source { case cached(Entry), disk(Slot, SegmentFile) }
        let sources: [Source] = try lock.withLock { state throws(StorageError) in
            guard let log = state.groups[group] else {
                if range.isEmpty { return [] }
                throw StorageError.unavailable(group: group, index: range.lowerBound, lastIndex: 0)
            }
            if range.isEmpty { return [] }
            guard range.lowerBound > log.baseIndex else {
                throw StorageError.compacted(group: group, index: range.lowerBound, firstIndex: log.baseIndex + 1)
            }
            guard range.upperBound <= log.lastIndex + 1 else {
                throw StorageError.unavailable(group: group, index: range.upperBound - 1, lastIndex: log.lastIndex)
            }
            var sources: [Source] = []
            sources.reserveCapacity(range.count)
            for index in range {
                if let entry = log.cachedEntry(at: index) {
                    sources.append(.cached(entry))
                } else {
                    let slot = log.slot(at: index)!
                    guard let file = state.segments[slot.segment] else {
                        if state.isWriterDone { throw StorageError.closed }
                        throw StorageError.failed(cause: "segment \(slot.segment) of entry \(index) is not open")
                    }
                    sources.append(.disk(slot, file))
                }
            }
            return sources
        }
        var result: [Entry] = []
        var size = 0
        var record: (segment: UInt32, offset: UInt32, bytes: [UInt8])?
        for source in sources {
            let entry: Entry
            switch source {
            case .cached(let cached):
                entry = cached
            case .disk(let slot, let file):
                if record?.segment != slot.segment || record?.offset != slot.recordOffset {
                    record = (slot.segment, slot.recordOffset, try readRecord(slot, file))
                }
                entry = try decodeEntry(slot, record!.bytes, file)
            }
            size += entry.approximateSize
            if !result.isEmpty && size > maximumBytes { break }
            result.append(entry)
        }
        return result
    }

    func readRecord(_ slot: Slot, _ file: SegmentFile) throws(StorageError) -> [UInt8] {
        let bytes = try FileSystem.read(file.descriptor, at: Int(slot.recordOffset), count: Int(slot.recordLength), file.path)
        let valid = bytes.count == Int(slot.recordLength) && bytes.withUnsafeBytes { Recovery.isValidRecord($0) }
        guard valid else {
            throw StorageError.corruption(
                file: file.path.string, offset: Int(slot.recordOffset), expected: "a record of \(slot.recordLength) bytes with a valid CRC32C")
        }
        return bytes
    }

    func decodeEntry(_ slot: Slot, _ record: [UInt8], _ file: SegmentFile) throws(StorageError) -> Entry {
        let start = Int(slot.entryOffset)
        let end = start + Int(slot.entryLength)
        do {
            return try Entry(decoding: record[start..<end])
        } catch {
            throw StorageError.corruption(
                file: file.path.string, offset: Int(slot.recordOffset) + start + error.offset, expected: error.expected)
        }
    }
}
