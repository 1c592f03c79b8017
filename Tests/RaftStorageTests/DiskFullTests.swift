import Synchronization
import Foundation
import RaftCore
import SystemPackage
import Testing

@testable import RaftStorage

/// Runs a command, returning its exit status.
@discardableResult
func run(_ executable: String, _ arguments: [String]) throws -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    return process.terminationStatus
}

@Suite struct DiskFullTests {
    /// Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN), tried once on a scratch directory.
    static let canMountTmpfs: Bool = {
        guard getuid() == 0 else { return false }
        let probe = TemporaryDirectory("probe")
        guard (try? run("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", probe.path.string])) == 0 else { return false }
        _ = try? run("/bin/umount", [probe.path.string])
        return true
    }()

    /// A real ENOSPC from a 4 MiB tmpfs. Where no tmpfs can be mounted (not root, or no
    /// CAP_SYS_ADMIN) the test is skipped with this message.
    @Test(.enabled(if: canMountTmpfs, "cannot mount a size-limited tmpfs here (needs root and CAP_SYS_ADMIN); disk-full test skipped"))
    func diskFullFailsEveryWaiterAndAcknowledgesNothingUnwritten() async throws {
        let dir = TemporaryDirectory()
        try #require(
            try run("/bin/mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", dir.path.string]) == 0,
            "mount -t tmpfs failed although running as root")
        defer { _ = try? run("/bin/umount", ["-l", dir.path.string]) }
        let options = smallOptions(segmentSize: 512 << 10, batch: 64 << 10)
        let log = try WriteAheadLog(directory: dir.path, options: options)
        let acknowledged = Acknowledged()
        let failures = await withTaskGroup(of: StorageError?.self) { tasks in
            for group: RaftGroupID in 1...8 {
                tasks.addTask {
                    var index: UInt64 = 1
                    while true {
                        do throws(StorageError) {
                            try await log.append(group: group, entries: [entry(group: group, index: index, size: 2000)])
                            acknowledged.record(group: group, index: index)
                            index += 1
                        } catch {
                            return error
                        }
                    }
                }
            }
            var failures: [StorageError?] = []
            for await failure in tasks { failures.append(failure) }
            return failures
        }
        // Every writer was told, and the log says why it refuses writes.
        #expect(failures.count == 8)
        #expect(failures.contains { if case .io(_, _, let errno)? = $0 { errno == .noSpace } else { false } }, "\(failures)")
        guard case .failed(let cause) = log.health else {
            Issue.record("log still reports healthy after ENOSPC")
            return
        }
        #expect(cause == .io(operation: "fallocate", path: cause.path, errno: .noSpace) || "\(cause)".contains("errno 28"), "\(cause)")
        await #expect(throws: StorageError.self) { try await log.append(group: 1, entries: [entry(group: 1, index: 1)]) }
        log.close()

        // After a restart everything acknowledged is there, with its exact bytes.
        let reopened = try WriteAheadLog(directory: dir.path, options: options)
        let last = acknowledged.lastIndexes()
        #expect(last.values.reduce(0, +) > 100)
        for (group, lastIndex) in last {
            #expect(try reopened.entries(group: group, in: 1..<lastIndex + 1) == (1...lastIndex).map { entry(group: group, index: $0, size: 2000) })
        }
        reopened.close()
    }
}

/// The highest acknowledged index of each group.
final class Acknowledged: Sendable {
    private let indexes = Mutex<[RaftGroupID: UInt64]>([:])

    func record(group: RaftGroupID, index: UInt64) {
        indexes.withLock { $0[group] = max($0[group] ?? 0, index) }
    }

    func lastIndexes() -> [RaftGroupID: UInt64] { indexes.withLock { $0 } }
}
