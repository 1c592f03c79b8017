import ArgumentParser
import Glibc
import Histogram
import RaftCore
import RaftStorage
import Synchronization
import SystemPackage

/// `divan bench wal`: the disk's raw fdatasync rate, then the WAL measured against it.
struct BenchWAL: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal",
        abstract: "Measure raw 4 KiB append+fdatasync, WAL serial appends, group commit, and recovery speed."
    )

    @Option(help: "Scratch directory on the disk to measure (emptied first).") var dir = "/tmp/divan-bench-wal"
    @Option(help: "Seconds per measurement.") var seconds = 3.0
    @Option(name: .customLong("recovery-mib"), help: "Size of the log recovered in the last measurement, in MiB.")
    var recoveryMiB = 1024
    @Option(help: "Only run group commit with this many writers (for profiling).") var onlyWriters: Int?
    @Flag(help: "Only measure recovery, reusing a log left in --dir by an earlier --recovery-only run.")
    var recoveryOnly = false

    func run() async throws {
        let root = FilePath(dir)
        if !recoveryOnly { try removeTree(root) }
        _ = root.withPlatformString { mkdir($0, 0o755) }
        print("WAL benchmark in \(dir), \(seconds) s per measurement")

        if let onlyWriters {
            let result = try await groupCommit(root.appending("gc"), writers: onlyWriters, groups: 100)
            print(row("group commit, \(onlyWriters) writers, 100 groups", result.entriesPerSecond, result.syncsPerSecond, result.p50, result.p99, 1))
            return
        }
        if recoveryOnly {
            try await recovery(root.appending("recovery"))
            return
        }
        let raw = try rawSyncRate(root.appending("raw"), seconds: seconds)
        print("raw 4 KiB append+fdatasync: \(fixed(raw.rate)) syncs/s, p50 \(fixed(raw.p50)) µs, p99 \(fixed(raw.p99)) µs")
        print("")
        print("| measurement | entries/s | fsyncs/s | p50 µs | p99 µs | entries/s ÷ raw syncs/s |")
        print("|---|---:|---:|---:|---:|---:|")
        print(row("raw 4 KiB append + fdatasync", raw.rate, raw.rate, raw.p50, raw.p99, raw.rate))

        let serial = try await groupCommit(root.appending("serial"), writers: 1, groups: 1)
        print(row("WAL serial appends (1 writer, 1 group)", serial.entriesPerSecond, serial.syncsPerSecond, serial.p50, serial.p99, raw.rate))
        for groups in [1, 100] {
            for writers in [1, 16, 256] {
                let result = try await groupCommit(root.appending("gc-\(writers)-\(groups)"), writers: writers, groups: groups)
                print(row(
                    "group commit, \(writers) writers, \(groups) groups", result.entriesPerSecond, result.syncsPerSecond,
                    result.p50, result.p99, raw.rate))
            }
        }
        print("")
        try await recovery(root.appending("recovery"))
        try removeTree(root)
    }

    private func row(_ name: String, _ entries: Double, _ syncs: Double, _ p50: Double, _ p99: Double, _ raw: Double) -> String {
        "| \(name) | \(fixed(entries)) | \(fixed(syncs)) | \(fixed(p50)) | \(fixed(p99)) | \(fixed(entries / raw, digits: 2)) |"
    }

    private struct GroupCommitResult {
        var entriesPerSecond: Double
        var syncsPerSecond: Double
        var p50: Double
        var p99: Double
    }

    /// `writers` tasks append one 100-byte entry at a time, spread over `groups` groups, and wait
    /// for each to be durable. Entries of one group are queued in index order under a lock of the
    /// benchmark's own, as a Raft runtime would.
    private func groupCommit(_ path: FilePath, writers: Int, groups: Int) async throws -> GroupCommitResult {
        let log = try WriteAheadLog(directory: path)
        let nextIndex = NextIndexes(groups: groups)
        let deadline = ContinuousClock.now + .seconds(seconds)
        let data = [UInt8](repeating: 0x5A, count: 100)
        let before = log.statistics
        let start = ContinuousClock.now
        let (count, histogram) = try await withThrowingTaskGroup(of: (Int, Histogram<UInt64>).self) { tasks in
            for writer in 0..<writers {
                tasks.addTask {
                    let group = writer % groups + 1
                    var histogram = Histogram<UInt64>(highestTrackableValue: 10_000_000_000, numberOfSignificantValueDigits: .three)
                    var count = 0
                    while ContinuousClock.now < deadline {
                        let begin = ContinuousClock.now
                        let ticket = try nextIndex.next.withLock { next in
                            let index = next[group]
                            next[group] += 1
                            return try log.enqueue([LogWrite(
                                group: UInt64(group), entries: [Entry(term: 1, index: index, payload: .normal(data))])])
                        }
                        try await ticket.wait()
                        _ = histogram.record(Self.nanoseconds(ContinuousClock.now - begin))
                        count += 1
                    }
                    return (count, histogram)
                }
            }
            var total = 0
            var merged = Histogram<UInt64>(highestTrackableValue: 10_000_000_000, numberOfSignificantValueDigits: .three)
            for try await (count, histogram) in tasks {
                total += count
                merged.add(histogram)
            }
            return (total, merged)
        }
        let elapsed = Self.seconds(ContinuousClock.now - start)
        let syncs = log.statistics.syncs - before.syncs
        log.close()
        try removeTree(path)
        return GroupCommitResult(
            entriesPerSecond: Double(count) / elapsed, syncsPerSecond: Double(syncs) / elapsed,
            p50: Double(histogram.valueAtPercentile(50)) / 1000, p99: Double(histogram.valueAtPercentile(99)) / 1000)
    }

    /// Fills a log of `recoveryMiB` with 100-byte entries over 100 groups, then times opening it,
    /// first with a cold page cache (when this process may drop it) and then warm.
    private func recovery(_ path: FilePath) async throws {
        if !(recoveryOnly && isDirectory(path)) {
            let log = try WriteAheadLog(directory: path)
            let target = recoveryMiB << 20
            let data = [UInt8](repeating: 0x3C, count: 100)
            var next = [UInt64](repeating: 1, count: 101)
            var pending: [WriteTicket] = []
            let start = ContinuousClock.now
            while log.statistics.bytesWritten + pending.count * 40_000 < target {
                var writes: [LogWrite] = []
                for group in 1...100 {
                    let first = next[group]
                    writes.append(LogWrite(
                        group: UInt64(group),
                        entries: (first..<first + 3).map { Entry(term: 1, index: $0, payload: .normal(data)) }))
                    next[group] += 3
                }
                pending.append(try log.enqueue(writes))
                if pending.count >= 64 {
                    for ticket in pending { try await ticket.wait() }
                    pending.removeAll()
                }
            }
            for ticket in pending { try await ticket.wait() }
            let written = log.statistics.bytesWritten
            let mebibytes = Double(written) / 1_048_576
            print("wrote \(fixed(mebibytes)) MiB of log in \(fixed(Self.seconds(ContinuousClock.now - start), digits: 1)) s")
            log.close()
        }
        let dropped = dropPageCache()
        for label in [dropped ? "cold cache" : "warm cache (could not drop the page cache)", "warm cache"] {
            let log = try WriteAheadLog(directory: path)
            let report = log.recovery
            let elapsed = Double(report.durationNanoseconds) / 1e9
            let mebibytes = Double(report.bytes) / 1_048_576
            let rate = Double(report.bytes) / elapsed / 1e6
            print("recovery (\(label)): \(fixed(mebibytes)) MiB, \(report.records) records, \(report.groups) groups in \(fixed(elapsed, digits: 2)) s = \(fixed(rate)) MB/s")
            log.close()
            if !dropped { break }
        }
    }

    private func isDirectory(_ path: FilePath) -> Bool {
        var info = stat()
        return path.withPlatformString { stat($0, &info) } == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    private func dropPageCache() -> Bool {
        sync()
        let fd = open("/proc/sys/vm/drop_caches", O_WRONLY)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return write(fd, "3\n", 2) == 2
    }

    private func removeTree(_ path: FilePath) throws {
        var info = stat()
        guard path.withPlatformString({ lstat($0, &info) }) == 0 else { return }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            guard let dir = path.withPlatformString({ opendir($0) }) else { return }
            var names: [String] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(dir)
            for name in names { try removeTree(path.appending(name)) }
            _ = path.withPlatformString { rmdir($0) }
        } else {
            _ = path.withPlatformString { unlink($0) }
        }
    }

    private static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        return UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
    }

    private static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// The next index of each group, shared by the benchmark's writers.
private final class NextIndexes: Sendable {
    let next: Mutex<[UInt64]>
    init(groups: Int) { next = Mutex([UInt64](repeating: 1, count: groups + 1)) }
}
