import ArgumentParser
import Glibc
import RaftCore
import RaftStorage
import SystemPackage

/// `divan debug wal-writer`: appends to a WAL forever, printing `ack <group> <index>` once each
/// append is durable. The crash test kills it with SIGKILL and checks every acknowledged entry.
struct DebugWALWriter: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal-writer",
        abstract: "Append to a write-ahead log until killed, acknowledging each durable append on stdout."
    )

    @Option(help: "The log's directory.") var dir: String
    @Option(help: "Number of groups.") var groups: UInt64 = 8
    @Option(help: "Concurrent writers.") var writers: Int = 4
    @Option(help: "Segment size in bytes.") var segmentSize: Int = 256 << 10
    @Option(help: "Stop after this many appends per writer (0: never).") var limit: Int = 0

    /// The payload the crash test expects at (group, index).
    static func payload(group: UInt64, index: UInt64) -> [UInt8] {
        Array(String(repeating: "g\(group)i\(index);", count: 4).utf8)
    }

    func run() async throws {
        let options = WriteAheadLogOptions(segmentSize: segmentSize, maximumBatchBytes: 64 << 10)
        let log = try WriteAheadLog(directory: FilePath(dir), options: options)
        let writers = max(1, writers)
        let groups = max(1, groups)
        let limit = limit
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for writer in 0..<writers {
                tasks.addTask {
                    var done = 0
                    let mine = (1...groups).filter { Int($0 % UInt64(writers)) == writer }
                    while limit == 0 || done < limit {
                        for group in mine {
                            let next = (log.state(of: group)?.lastIndex ?? 0) + 1
                            let entry = Entry(term: 1, index: next, payload: .normal(Self.payload(group: group, index: next)))
                            try await log.append(group: group, entries: [entry], hardState: HardState(term: 1, vote: 1, commit: next))
                            Self.say("ack \(group) \(next)")
                            if next % 64 == 0 { try await log.compact(group: group, through: next - 32) }
                        }
                        done += 1
                        if done % 50 == 0 && writer == 0 { try await log.purge() }
                    }
                }
            }
            try await tasks.waitForAll()
        }
        log.close()
    }

    /// Writes a line straight to fd 1, unbuffered, so an acknowledgement is out before the next append.
    static func say(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { Glibc.write(1, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            written += n
        }
    }
}
