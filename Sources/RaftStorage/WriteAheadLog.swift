import Glibc
import RaftCore
import SystemPackage

/// Tuning of a `WriteAheadLog`.
public struct WriteAheadLogOptions: Sendable {
    /// The size each segment file is preallocated to.
    public var segmentSize: Int
    /// The most bytes one write (one pwrite + fdatasync) carries; also the largest single append.
    public var maximumBatchBytes: Int
    /// How many recent entries per group stay in memory, so replication seldom reads the disk.
    public var cachedEntriesPerGroup: Int
    /// A prefix of old segments is purged once at most this share of its bytes is still live.
    public var purgeLiveRatio: Double
    /// Where the log reports what an operator should know (a torn tail cut on recovery, a failure).
    public var log: @Sendable (String) -> Void
    /// UNSAFE, for testing the chaos harness only: acknowledge writes without fdatasync, so a power
    /// loss can lose them (`divan server --unsafe-no-fsync`).
    public var unsafeSkipsDataSync = false

    public init(
        segmentSize: Int = 64 << 20, maximumBatchBytes: Int = 4 << 20, cachedEntriesPerGroup: Int = 1024,
        purgeLiveRatio: Double = 0.25, log: @escaping @Sendable (String) -> Void = standardErrorLog
    ) {
        self.segmentSize = segmentSize
        self.maximumBatchBytes = min(maximumBatchBytes, segmentSize - SegmentFormat.headerSize)
        self.cachedEntriesPerGroup = cachedEntriesPerGroup
        self.purgeLiveRatio = purgeLiveRatio
        self.log = log
    }
}

/// Writes a line to standard error: the default destination of storage messages.
public func standardErrorLog(_ message: String) {
    let line = "[divan storage] " + message + "\n"
    _ = line.utf8CString.withUnsafeBufferPointer { Glibc.write(2, $0.baseAddress, $0.count - 1) }
}

/// What one group persists in one step: the parts of a Raft `Ready` that go to disk. They are
/// applied in this order: the snapshot (which replaces the whole log), the entries (which replace
/// any existing suffix from their first index on), the hard state.
public struct LogWrite: Sendable {
    public var group: RaftGroupID
    public var snapshot: SnapshotMetadata?
    public var entries: [Entry]
    public var hardState: HardState?

    public init(group: RaftGroupID, snapshot: SnapshotMetadata? = nil, entries: [Entry] = [], hardState: HardState? = nil) {
        self.group = group
        self.snapshot = snapshot
        self.entries = entries
        self.hardState = hardState
    }
}

/// When a queued write reaches the disk.
public enum WriteSync: Sendable, Hashable {
    /// Its ticket completes once the write is durable (written and fdatasynced).
    case durable
    /// Written in order with the others, but synced only by the next durable write (or at close, or
    /// once deferred bytes add up to a batch): its ticket completes once written. A power loss before
    /// that sync may lose it, so it is for state that can be relearned, such as a Raft commit index
    /// that moved alone. It spares the disk an fdatasync that the next write's own fdatasync would
    /// otherwise queue behind.
    case deferred
}

/// What the log holds for one group.
public struct GroupLogState: Sendable, Hashable {
    /// The first index still in the log (`snapshotIndex + 1`).
    public var firstIndex: UInt64
    /// The last index in the log, or `snapshotIndex` when the log is empty.
    public var lastIndex: UInt64
    public var lastTerm: UInt64
    /// The index and term the log was last compacted or snapshotted through.
    public var snapshotIndex: UInt64
    public var snapshotTerm: UInt64
    public var hardState: HardState?
}

/// What recovery found.
public struct RecoveryReport: Sendable {
    /// A torn tail that recovery cut off the last segment.
    public struct TornTail: Sendable, Hashable {
        public var file: String
        public var offset: Int
        public var bytesCut: Int
    }

    public var segments: Int
    /// Bytes of records replayed.
    public var bytes: Int
    public var records: Int
    public var groups: Int
    public var tornTail: TornTail?
    public var durationNanoseconds: UInt64
}

/// Counters of the writer, for status pages and benchmarks.
public struct WriteAheadLogStatistics: Sendable, Hashable {
    public var writes = 0
    public var batches = 0
    public var syncs = 0
    public var bytesWritten = 0
    public var segments = 0
}

/// Whether the log accepts writes.
public enum WriteAheadLogHealth: Sendable, Hashable {
    case healthy
    /// A write failed; every write since is refused with this error.
    case failed(StorageError)
}

/// One crash-safe write-ahead log shared by every Raft group of a process (the design of TiKV's
/// raft-engine): concurrent writes from many groups become one write and one fdatasync.
///
/// Writes are `async` and return once durable; the disk work happens on a dedicated thread, so a
/// caller on a SwiftNIO event loop or the cooperative pool is never blocked by fdatasync. Reads are
/// synchronous: they come from memory, or from one `pread` for entries that fell out of the cache.
public final class WriteAheadLog: Sendable {
    let core: WALCore

    /// What recovery found when the log was opened.
    public let recovery: RecoveryReport

    /// Opens (or creates) the log in `directory`, recovering every group from its segments.
    /// Throws `StorageError.corruption` naming the file and offset if anything but a torn tail of
    /// the last segment fails verification.
    public init(directory: FilePath, options: WriteAheadLogOptions = WriteAheadLogOptions()) throws(StorageError) {
        // Offsets within a segment are stored in 32 bits, and a batch must fit in a segment.
        guard options.segmentSize > SegmentFormat.headerSize + SegmentFormat.recordHeaderSize, options.segmentSize <= Int(UInt32.max) else {
            throw StorageError.invalidRequest(group: 0, reason: "segment size \(options.segmentSize) is outside 45 bytes ... 4 GiB")
        }
        var options = options
        options.maximumBatchBytes = max(SegmentFormat.recordHeaderSize, min(options.maximumBatchBytes, options.segmentSize - SegmentFormat.headerSize))
        try FileSystem.createDirectory(directory)
        let (state, report) = try Recovery.run(directory: directory, options: options)
        core = WALCore(directory: directory, options: options, state: state)
        recovery = report
        if let torn = report.tornTail {
            options.log("cut a torn tail of \(torn.bytesCut) bytes from \(torn.file) at offset \(torn.offset)")
        }
        core.startWriter()
    }

    deinit { core.close() }

    /// Persists the writes of any number of groups; returns once they are durable (one fdatasync
    /// for everything that is queued together). Throws and acknowledges nothing if the disk fails.
    public func write(_ writes: [LogWrite]) async throws(StorageError) {
        try await core.enqueue(writes).wait()
    }

    /// Queues writes without waiting: they are validated and visible to reads at once, in the order
    /// of `enqueue` calls, and the ticket tells when they are durable. A Raft runtime queues each
    /// Ready's writes in order this way, and sends the messages that wait for persistence once the
    /// ticket completes.
    public func enqueue(_ writes: [LogWrite], sync: WriteSync = .durable) throws(StorageError) -> WriteTicket {
        try core.enqueue(writes, sync: sync)
    }

    /// Appends `entries` to a group (replacing any existing suffix from the first entry's index) and
    /// saves its hard state, durably.
    public func append(group: RaftGroupID, entries: [Entry], hardState: HardState? = nil) async throws(StorageError) {
        try await core.enqueue([LogWrite(group: group, entries: entries, hardState: hardState)]).wait()
    }

    /// Records that a group installed a snapshot: its log is replaced by the snapshot's index and term.
    public func applySnapshot(group: RaftGroupID, metadata: SnapshotMetadata) async throws(StorageError) {
        try await core.enqueue([LogWrite(group: group, snapshot: metadata)]).wait()
    }

    /// Drops a group's entries up to and including `index` (which must be in its log); their
    /// segments can then be purged.
    public func compact(group: RaftGroupID, through index: UInt64) async throws(StorageError) {
        try await core.compact(group: group, through: index)
    }

    /// Entries of a group with indexes in `range`, stopping early (after at least one entry) once
    /// their approximate size would pass `maximumBytes`.
    public func entries(group: RaftGroupID, in range: Range<UInt64>, maximumBytes: Int = .max) throws(StorageError) -> [Entry] {
        try core.entries(group: group, in: range, maximumBytes: maximumBytes)
    }

    /// The term of a group's entry at `index`, or nil when it is not in the log (the snapshot index counts).
    public func term(group: RaftGroupID, at index: UInt64) -> UInt64? {
        core.lock.withLock { $0.groups[group]?.term(at: index) }
    }

    /// A group's state, or nil for a group the log has never seen.
    public func state(of group: RaftGroupID) -> GroupLogState? {
        core.lock.withLock { $0.groups[group].map(WALCore.publicState) }
    }

    /// Every group's state: what a restarted process needs to bring its groups back.
    public func groupStates() -> [RaftGroupID: GroupLogState] {
        core.lock.withLock { $0.groups.mapValues(WALCore.publicState) }
    }

    public var health: WriteAheadLogHealth {
        core.lock.withLock { state in state.failure.map { .failed($0) } ?? .healthy }
    }

    public var statistics: WriteAheadLogStatistics {
        core.lock.withLock { state in
            var statistics = state.statistics
            statistics.segments = state.segmentOrder.count
            return statistics
        }
    }

    /// Deletes the oldest segments once little of them is live, copying what is still live (entries,
    /// latest hard states and compaction marks) to the head of the log first.
    @discardableResult
    public func purge() async throws(StorageError) -> PurgeReport {
        try await core.purge()
    }

    /// Waits for queued writes, then stops the writer thread and closes the files.
    public func close() { core.close() }
}
