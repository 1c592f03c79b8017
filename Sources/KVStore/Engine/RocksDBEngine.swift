import CRocksDB
import Foundation
import Synchronization

/// A storage engine on one RocksDB database in a directory: the server's engine, one per store.
///
/// The Raft WAL is the durable log of every region, and the applied index is written in the same
/// batch as the state it describes, so RocksDB never has to be the only copy of an acknowledged
/// write: after a crash the runtime replays the Raft log from the applied index the engine has.
/// That is why the default, `Durability.unsyncedLog`, writes RocksDB's WAL without an fsync. See
/// docs/kv-engines.md for every option chosen.
///
/// The database closes when the engine and every snapshot taken from it are released (a snapshot
/// keeps it open); only then can another engine open the same directory.
public final class RocksDBEngine: StorageEngine {
    /// How much of a write RocksDB itself makes durable before `write` returns.
    public enum Durability: Sendable, Hashable {
        /// RocksDB's WAL, fsynced on every write: a write survives power loss on RocksDB alone.
        /// About 6,600 writes a second on our disks, so only for callers without another log.
        case syncedLog
        /// RocksDB's WAL, left to the page cache: a write survives a crash of the process, and a
        /// power loss loses at most a tail of batches that the Raft log replays. The default.
        case unsyncedLog
        /// No RocksDB WAL: writes live in the memtable until RocksDB flushes it, so a crash loses
        /// them. Only for a state machine that calls `flush()` before compacting the Raft log
        /// past the applied index stored in the engine, so that the log can always replay them.
        case noLog
    }

    /// How the database is opened.
    public struct Options: Sendable, Hashable {
        /// What a `write` makes durable; see `Durability`.
        public var durability: Durability
        /// Bytes of the LRU cache of uncompressed blocks that reads go through.
        public var blockCacheBytes: Int
        /// Threads for flushes and compactions, shared by both.
        public var backgroundJobs: Int

        public init(
            durability: Durability = .unsyncedLog,
            blockCacheBytes: Int = 64 << 20,
            backgroundJobs: Int = ProcessInfo.processInfo.activeProcessorCount
        ) {
            self.durability = durability
            self.blockCacheBytes = blockCacheBytes
            self.backgroundJobs = backgroundJobs
        }
    }

    /// The directory the database lives in.
    public let directory: String
    private let database: RocksDatabase
    /// Held for the whole of a `write`: an open-ended `deleteRange` is written as a range that ends
    /// at the last key present, and no other write may add a key past it before the batch is in.
    /// Raft applies one batch at a time per region, so the lock costs little.
    private let writeLock = Mutex(())

    /// Opens the database in `directory`, creating the directory and the database when missing.
    public init(directory: String, options: Options = Options()) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.directory = directory
        self.database = try RocksDatabase(directory: directory, options: options)
    }

    public func get(_ key: [UInt8]) throws -> [UInt8]? {
        try database.get(key, options: database.readOptions)
    }

    public func scan(_ range: KeyRange, limit: Int, reverse: Bool) throws -> [KeyValuePair] {
        try database.scan(range, limit: limit, reverse: reverse, snapshot: nil)
    }

    /// Writes the batch as one RocksDB write batch, which RocksDB applies atomically, also across a
    /// crash (its WAL holds whole batches).
    public func write(_ batch: WriteBatch) throws {
        guard !batch.isEmpty else { return }
        try writeLock.withLock { _ in
            let rocksBatch = rocksdb_writebatch_create()!
            defer { rocksdb_writebatch_destroy(rocksBatch) }
            // The greatest key there will be, looked up at the first open-ended range (nil: not yet).
            var greatestKey: [UInt8]??
            for operation in batch.operations {
                switch operation {
                case .put(let key, let value):
                    withBytes(key) { key, keyCount in
                        withBytes(value) { rocksdb_writebatch_put(rocksBatch, key, keyCount, $0, $1) }
                    }
                case .delete(let key):
                    withBytes(key) { rocksdb_writebatch_delete(rocksBatch, $0, $1) }
                case .deleteRange(let range):
                    guard !KeyOrder.isEmpty(range) else { continue }
                    if let end = range.end {
                        Self.deleteRange(from: range.start, to: end, in: rocksBatch)
                        continue
                    }
                    if greatestKey == nil { greatestKey = try lastKey(writtenBy: batch) }
                    // RocksDB's ranges need an end, and no byte string sorts after every other: end
                    // at the last key there will be, and delete that key on its own.
                    guard let last = greatestKey!, KeyOrder.compare(last, range.start) >= 0 else { continue }
                    Self.deleteRange(from: range.start, to: last, in: rocksBatch)
                    withBytes(last) { rocksdb_writebatch_delete(rocksBatch, $0, $1) }
                }
            }
            try check("write") { rocksdb_write(database.handle, database.writeOptions, rocksBatch, $0) }
        }
    }

    public func snapshot() -> any EngineSnapshot {
        RocksDBSnapshot(database: database)
    }

    /// Writes the memtables to SST files and waits until they are on disk.
    public func flush() throws {
        let options = rocksdb_flushoptions_create()!
        defer { rocksdb_flushoptions_destroy(options) }
        rocksdb_flushoptions_set_wait(options, 1)
        try check("flush") { rocksdb_flush(database.handle, options, $0) }
    }

    /// The greatest key in the database or put by `batch`, or nil when there is none.
    private func lastKey(writtenBy batch: WriteBatch) throws -> [UInt8]? {
        var last = try database.scan(.all, limit: 1, reverse: true, snapshot: nil).first?.key
        for case .put(let key, _) in batch.operations where last.map({ KeyOrder.compare(key, $0) > 0 }) ?? true {
            last = key
        }
        return last
    }

    private static func deleteRange(from start: [UInt8], to end: [UInt8], in batch: OpaquePointer) {
        guard KeyOrder.compare(start, end) < 0 else { return }
        withBytes(start) { start, startCount in
            withBytes(end) { rocksdb_writebatch_delete_range(batch, start, startCount, $0, $1) }
        }
    }
}

/// A frozen view of a `RocksDBEngine`: a RocksDB snapshot, released when this is.
final class RocksDBSnapshot: EngineSnapshot, @unchecked Sendable {
    // Unchecked Sendable: the pointers never change after init, RocksDB reads through a snapshot
    // from any thread, and the read options are only read (RocksDB takes them as const).
    private let database: RocksDatabase
    private let snapshot: OpaquePointer
    private let readOptions: OpaquePointer

    init(database: RocksDatabase) {
        self.database = database
        snapshot = rocksdb_create_snapshot(database.handle)!
        readOptions = rocksdb_readoptions_create()!
        rocksdb_readoptions_set_snapshot(readOptions, snapshot)
    }

    deinit {
        rocksdb_readoptions_destroy(readOptions)
        rocksdb_release_snapshot(database.handle, snapshot)
    }

    func get(_ key: [UInt8]) throws -> [UInt8]? {
        try database.get(key, options: readOptions)
    }

    func scan(_ range: KeyRange, limit: Int, reverse: Bool) throws -> [KeyValuePair] {
        try database.scan(range, limit: limit, reverse: reverse, snapshot: snapshot)
    }
}

/// An error RocksDB reported.
public struct RocksDBError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What the engine was doing: open, get, scan, write or flush.
    public var operation: String
    /// RocksDB's own message, such as "IO error: …" or "Corruption: …".
    public var message: String

    public var description: String { "RocksDB \(operation) failed: \(message)" }
}

/// The open database and the options every read and write uses; closed when the last engine or
/// snapshot that uses it goes.
final class RocksDatabase: @unchecked Sendable {
    // Unchecked Sendable: RocksDB's database handle is thread-safe, and the option objects are set
    // up in init and only read afterwards.
    let handle: OpaquePointer
    /// Read options of reads outside a snapshot (no bounds, no snapshot).
    let readOptions: OpaquePointer
    let writeOptions: OpaquePointer

    init(directory: String, options: RocksDBEngine.Options) throws {
        let databaseOptions = rocksdb_options_create()!
        defer { rocksdb_options_destroy(databaseOptions) }
        rocksdb_options_set_create_if_missing(databaseOptions, 1)
        rocksdb_options_increase_parallelism(databaseOptions, Int32(clamping: max(1, options.backgroundJobs)))
        // Sizes each level from the last one up, so that about 90% of the data sits in the last
        // level and space amplification stays near 1.1 (RocksDB's default from 8.4 on).
        rocksdb_options_set_level_compaction_dynamic_level_bytes(databaseOptions, 1)
        // LZ4 where data is rewritten often, ZSTD in the last level, which holds most of it.
        rocksdb_options_set_compression(databaseOptions, Int32(rocksdb_lz4_compression))
        rocksdb_options_set_bottommost_compression(databaseOptions, Int32(rocksdb_zstd_compression))

        let tableOptions = rocksdb_block_based_options_create()!
        defer { rocksdb_block_based_options_destroy(tableOptions) }
        // Point reads (get, CAS, locks) skip SST files without the key: 10 bits a key, about 1% false positives.
        rocksdb_block_based_options_set_filter_policy(tableOptions, rocksdb_filterpolicy_create_bloom(10))
        let cache = rocksdb_cache_create_lru(max(0, options.blockCacheBytes))!
        defer { rocksdb_cache_destroy(cache) }
        rocksdb_block_based_options_set_block_cache(tableOptions, cache)
        rocksdb_options_set_block_based_table_factory(databaseOptions, tableOptions)

        handle = try check("open") { rocksdb_open(databaseOptions, directory, $0) }!
        readOptions = rocksdb_readoptions_create()!
        writeOptions = rocksdb_writeoptions_create()!
        switch options.durability {
        case .syncedLog: rocksdb_writeoptions_set_sync(writeOptions, 1)
        case .unsyncedLog: break
        case .noLog: rocksdb_writeoptions_disable_WAL(writeOptions, 1)
        }
    }

    deinit {
        rocksdb_readoptions_destroy(readOptions)
        rocksdb_writeoptions_destroy(writeOptions)
        rocksdb_close(handle)
    }

    func get(_ key: [UInt8], options: OpaquePointer) throws -> [UInt8]? {
        let value = try withBytes(key) { key, keyCount in
            try check("get") { rocksdb_get_pinned(handle, options, key, keyCount, $0) }
        }
        guard let value else { return nil }
        defer { rocksdb_pinnableslice_destroy(value) }
        var count = 0
        return bytes(rocksdb_pinnableslice_value(value, &count), count)
    }

    func scan(_ range: KeyRange, limit: Int, reverse: Bool, snapshot: OpaquePointer?) throws -> [KeyValuePair] {
        guard limit > 0, !KeyOrder.isEmpty(range) else { return [] }
        let options = rocksdb_readoptions_create()!
        defer { rocksdb_readoptions_destroy(options) }
        if let snapshot { rocksdb_readoptions_set_snapshot(options, snapshot) }
        // The read options keep pointers to the bounds, not copies, so the iterator must not
        // outlive these closures. With the bounds set, RocksDB stops at the range's ends (also
        // when seeking to the last key) and skips what lies beyond them.
        return try withBytes(range.start) { start, startCount in
            try withBytes(range.end ?? []) { end, endCount in
                if startCount > 0 { rocksdb_readoptions_set_iterate_lower_bound(options, start, startCount) }
                if range.end != nil { rocksdb_readoptions_set_iterate_upper_bound(options, end, endCount) }
                let iterator = rocksdb_create_iterator(handle, options)!
                defer { rocksdb_iter_destroy(iterator) }
                if reverse { rocksdb_iter_seek_to_last(iterator) } else { rocksdb_iter_seek_to_first(iterator) }
                var pairs: [KeyValuePair] = []
                while pairs.count < limit, rocksdb_iter_valid(iterator) != 0 {
                    var keyCount = 0
                    var valueCount = 0
                    let key = bytes(rocksdb_iter_key(iterator, &keyCount), keyCount)
                    let value = bytes(rocksdb_iter_value(iterator, &valueCount), valueCount)
                    pairs.append(KeyValuePair(key: key, value: value))
                    if reverse { rocksdb_iter_prev(iterator) } else { rocksdb_iter_next(iterator) }
                }
                try check("scan") { rocksdb_iter_get_error(iterator, $0) }
                return pairs
            }
        }
    }
}

/// Runs `body` with the `char** errptr` that RocksDB's C functions take, and throws the message
/// RocksDB left there, if any.
private func check<Result>(
    _ operation: String,
    _ body: (UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) throws -> Result
) throws -> Result {
    var error: UnsafeMutablePointer<CChar>?
    let result = try withUnsafeMutablePointer(to: &error) { try body($0) }
    if let error {
        defer { rocksdb_free(error) }
        throw RocksDBError(operation: operation, message: String(cString: error))
    }
    return result
}

/// Runs `body` with a pointer to `bytes` and their count. The pointer is never null, even for no
/// bytes, because RocksDB makes a `Slice` of it.
private func withBytes<Result>(
    _ bytes: [UInt8],
    _ body: (UnsafePointer<CChar>, Int) throws -> Result
) rethrows -> Result {
    try bytes.withUnsafeBufferPointer { buffer in
        guard let base = buffer.baseAddress, !buffer.isEmpty else {
            var none: CChar = 0
            return try withUnsafePointer(to: &none) { try body($0, 0) }
        }
        return try base.withMemoryRebound(to: CChar.self, capacity: buffer.count) { try body($0, buffer.count) }
    }
}

/// A copy of the `count` bytes RocksDB lent at `pointer`.
private func bytes(_ pointer: UnsafePointer<CChar>?, _ count: Int) -> [UInt8] {
    guard let pointer, count > 0 else { return [] }
    return Array(UnsafeRawBufferPointer(start: pointer, count: count))
}
