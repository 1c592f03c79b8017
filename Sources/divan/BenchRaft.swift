import ArgumentParser
import DivanServer
import Foundation
import Histogram
import Logging
import Raft
import RaftCore
import SystemPackage

/// `divan bench raft`: three local processes, one group, fsync on; throughput and latency of
/// 100-byte proposals from 1, 16 and 256 concurrent proposers, against the disk's raw fdatasync rate.
struct BenchRaft: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raft",
        abstract: "Measure Raft proposals over three local processes (fsync on) against the raw fdatasync rate.")

    @Option(help: "Scratch directory (emptied first).") var dir = "/tmp/divan-bench-raft"
    @Option(help: "Seconds per measurement.") var seconds = 5.0
    @Option(help: "Concurrent proposers, comma-separated.") var proposers = "1,16,256"

    func run() async throws {
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let raw = try rawSyncRate(FilePath("\(dir)/raw"), seconds: min(seconds, 3))
        let rtt = try loopbackRoundTrip()
        print("raw 4 KiB append+fdatasync: \(fixed(raw.rate)) syncs/s, p50 \(fixed(raw.p50)) µs, p99 \(fixed(raw.p99)) µs")
        print("loopback TCP round trip (64 B): p50 \(fixed(rtt)) µs")
        print("goal for one proposer: p50 ≤ 2 × (fsync p50 + round trip) = \(fixed(2 * (raw.p50 + rtt))) µs")
        let cluster = try BenchCluster(directory: dir, groups: 1, extraArguments: [
            1: ["--load", proposers, "--seconds", "\(seconds)"],
        ])
        defer { cluster.terminate() }
        print("")
        print("| proposers | entries/s | p50 µs | p99 µs | entries per leader fsync | p50 ÷ (fsync + RTT) | entries/s ÷ raw syncs/s |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for line in cluster.lines(of: 1) {
            if line == "done" { break }
            guard line.hasPrefix("result ") else { continue }
            let fields = BenchCluster.fields(line)
            let rate = fields["entries_per_second"] ?? 0
            let p50 = fields["p50_us"] ?? 0
            print("| \(fixed(fields["proposers"] ?? 0)) | \(fixed(rate)) | \(fixed(p50)) | \(fixed(fields["p99_us"] ?? 0)) | "
                + "\(fixed(fields["entries_per_fsync"] ?? 0, digits: 1)) | \(fixed(p50 / (raw.p50 + rtt), digits: 2)) | "
                + "\(fixed(rate / raw.rate, digits: 1)) |")
        }
    }
}

/// `divan bench idle-groups`: three local processes hosting the same 1,000 idle groups; the CPU
/// each process uses once the groups are idle, from /proc.
struct BenchIdleGroups: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idle-groups",
        abstract: "Measure the CPU of three processes hosting many idle Raft groups.")

    @Option(help: "Scratch directory (emptied first).") var dir = "/tmp/divan-bench-idle"
    @Option(help: "Groups per process.") var groups = 1_000
    @Option(help: "Seconds of measurement.") var seconds = 10.0
    @Flag(help: "Keep idle groups awake (heartbeats on), for comparison.") var noQuiesce = false

    func run() async throws {
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let cluster = try BenchCluster(
            directory: dir, groups: groups, extraArguments: noQuiesce ? [1: ["--no-quiesce"], 2: ["--no-quiesce"], 3: ["--no-quiesce"]] : [:])
        defer { cluster.terminate() }
        let started = ContinuousClock.now
        // Every group has a leader everywhere, and (with quiescence) every group has gone quiet.
        try cluster.waitForStatus(timeout: .seconds(120)) { fields in
            fields["leaders"] == Double(groups) && (noQuiesce || fields["quiesced"] == Double(groups))
        }
        print("\(groups) groups per process formed and idle after \(ContinuousClock.now - started)")
        let before = try cluster.cpuSeconds()
        let clock = ContinuousClock.now
        try await Task.sleep(for: .seconds(seconds))
        let after = try cluster.cpuSeconds()
        let elapsed = Double((ContinuousClock.now - clock) / .milliseconds(1)) / 1000
        print("")
        print("| process | groups | quiescence | CPU % of one core |")
        print("|---:|---:|---|---:|")
        for node in NodeID(1)...3 {
            let percent = (after[node]! - before[node]!) / elapsed * 100
            print("| \(node) | \(groups) | \(noQuiesce ? "off" : "on") | \(fixed(percent, digits: 2)) |")
        }
    }
}

/// `divan bench node`: one process of a benchmark cluster (started by the commands above).
struct BenchNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "One process of a benchmark cluster (internal).", shouldDisplay: false)

    @Option var id: UInt64
    @Option(help: "ID=PORT,... for all three nodes.") var ports: String
    @Option var dataDir: String
    @Option var groups = 1
    @Option(help: "Run proposers (comma-separated counts) on group 1 once this node leads it.") var load: String?
    @Option var seconds = 5.0
    @Flag var noQuiesce = false

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        var addresses: [NodeID: Int] = [:]
        for item in ports.split(separator: ",") {
            let parts = item.split(separator: "=")
            addresses[UInt64(parts[0])!] = Int(parts[1])!
        }
        var options = RaftOptions()
        options.quiesceWhenIdle = !noQuiesce
        let host = try RaftHost(
            id: id, host: "127.0.0.1", port: addresses[id]!, dataDirectory: dataDir, options: options,
            logger: Logger(label: "divan.bench"))
        _ = try await host.start()
        for (peer, port) in addresses where peer != id {
            host.transport.setPeer(peer, address: try .init(ipAddress: "127.0.0.1", port: port))
        }
        // Node 1 has the highest priority, so it leads every group and the load runs on the leader.
        let membership = Membership(voters: [1, 2, 3], priorities: [1: ElectionPriority(100), 2: ElectionPriority(50), 3: ElectionPriority(50)])
        for group in UInt64(1)...UInt64(groups) {
            try await host.addGroup(group, bootstrap: membership, stateMachine: CountingMachine())
        }
        if let load {
            let counts = load.split(separator: ",").compactMap { Int($0) }
            try await runLoad(on: host, proposers: counts)
            emit("done")
        }
        while true {
            var leaders = 0
            var quiesced = 0
            for group in host.groups {
                let status = await group.status
                if status.leader != nil { leaders += 1 }
                if status.isQuiesced { quiesced += 1 }
            }
            emit("status leaders=\(leaders) quiesced=\(quiesced)")
            try await Task.sleep(for: .milliseconds(500))
        }
    }

    func runLoad(on host: RaftHost, proposers counts: [Int]) async throws {
        let group = host.groups[0]
        while await group.status.role != .leader { try await Task.sleep(for: .milliseconds(50)) }
        let payload = [UInt8](repeating: 0x5A, count: 100)
        for proposers in counts {
            _ = try await propose(on: group, proposers: proposers, for: .seconds(1), payload: payload)  // warm-up
            let syncsBefore = host.log.statistics.syncs
            let start = ContinuousClock.now
            let (count, histogram) = try await propose(on: group, proposers: proposers, for: .seconds(seconds), payload: payload)
            let elapsed = Double((ContinuousClock.now - start) / .microseconds(1)) / 1_000_000
            let syncs = host.log.statistics.syncs - syncsBefore
            emit("result proposers=\(proposers) entries_per_second=\(Double(count) / elapsed) "
                + "p50_us=\(Double(histogram.valueAtPercentile(50)) / 1000) p99_us=\(Double(histogram.valueAtPercentile(99)) / 1000) "
                + "entries_per_fsync=\(Double(count) / Double(max(1, syncs)))")
        }
    }

    func propose(on group: RaftGroup, proposers: Int, for duration: Duration, payload: [UInt8]) async throws
        -> (Int, Histogram<UInt64>)
    {
        let deadline = ContinuousClock.now + duration
        return try await withThrowingTaskGroup(of: (Int, Histogram<UInt64>).self) { tasks in
            for _ in 0..<proposers {
                tasks.addTask {
                    var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
                    var count = 0
                    while ContinuousClock.now < deadline {
                        let begin = ContinuousClock.now
                        _ = try await group.apply(payload)
                        _ = histogram.record(UInt64((ContinuousClock.now - begin) / .nanoseconds(1)))
                        count += 1
                    }
                    return (count, histogram)
                }
            }
            var total = 0
            var merged = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
            for try await (count, histogram) in tasks {
                total += count
                merged.add(histogram)
            }
            return (total, merged)
        }
    }
}

/// Writes a line to stdout at once (a pipe would buffer `print`), for the parent process to read.
func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// A state machine that only counts: the benchmarks measure Raft, not an application.
final class CountingMachine: StateMachine {
    func apply(_ entries: [CommittedEntry]) throws -> [[UInt8]] { entries.map { _ in [] } }
    func snapshotView() -> any StateMachineView { Empty() }
    func restore(from data: [UInt8]) throws {}

    struct Empty: StateMachineView {
        func serialized() -> [UInt8] { [] }
    }
}

/// Three `divan bench node` processes on loopback ports the OS picked, with their stdout lines.
final class BenchCluster {
    let processes: [NodeID: Process]
    let readers: [NodeID: LineReader]

    init(directory: String, groups: Int, extraArguments: [NodeID: [String]]) throws {
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let ports = try (1...3).map { _ in try freeLoopbackPort() }
        let portList = (0..<3).map { "\($0 + 1)=\(ports[$0])" }.joined(separator: ",")
        var processes: [NodeID: Process] = [:]
        var readers: [NodeID: LineReader] = [:]
        for node in NodeID(1)...3 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = ["bench", "node", "--id", "\(node)", "--ports", portList, "--data-dir", "\(directory)/node-\(node)",
                                 "--groups", "\(groups)"] + (extraArguments[node] ?? [])
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            processes[node] = process
            readers[node] = LineReader(pipe.fileHandleForReading)
        }
        self.processes = processes
        self.readers = readers
    }

    func lines(of node: NodeID) -> AnySequence<String> {
        let reader = readers[node]!
        return AnySequence { AnyIterator { reader.nextLine() } }
    }

    /// Waits until the latest status line of every node satisfies `condition`.
    func waitForStatus(timeout: Duration, _ condition: ([String: Double]) -> Bool) throws {
        let end = ContinuousClock.now + timeout
        var satisfied: Set<NodeID> = []
        while satisfied.count < 3 {
            guard ContinuousClock.now < end else { throw ValidationError("the cluster did not settle within \(timeout)") }
            for node in NodeID(1)...3 {
                guard let line = readers[node]!.nextLine() else { throw ValidationError("node \(node) exited") }
                if line.hasPrefix("status ") {
                    if condition(Self.fields(line)) { satisfied.insert(node) } else { satisfied.remove(node) }
                }
            }
        }
    }

    /// User plus system CPU seconds of each process so far (/proc/PID/stat, fields 14 and 15).
    func cpuSeconds() throws -> [NodeID: Double] {
        let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
        var result: [NodeID: Double] = [:]
        for (node, process) in processes {
            let stat = try String(contentsOfFile: "/proc/\(process.processIdentifier)/stat", encoding: .utf8)
            // The command name may hold spaces; the fields after its closing parenthesis do not.
            let rest = stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ")
            result[node] = (Double(rest[11])! + Double(rest[12])!) / ticksPerSecond
        }
        return result
    }

    func terminate() {
        for process in processes.values where process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    /// The `key=value` fields of a line, as numbers.
    static func fields(_ line: String) -> [String: Double] {
        var fields: [String: Double] = [:]
        for item in line.split(separator: " ").dropFirst() {
            let parts = item.split(separator: "=")
            if parts.count == 2, let value = Double(parts[1]) { fields[String(parts[0])] = value }
        }
        return fields
    }
}

/// Reads a child's stdout line by line (blocking).
final class LineReader {
    let handle: FileHandle
    var buffer: [UInt8] = []

    init(_ handle: FileHandle) { self.handle = handle }

    func nextLine() -> String? {
        while true {
            if let newline = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeFirst(newline + 1)
                return line
            }
            let data = handle.availableData
            if data.isEmpty { return nil }
            buffer += data
        }
    }
}

/// The median round trip of 64 bytes over a loopback TCP connection, in microseconds.
func loopbackRoundTrip(samples: Int = 2_000) throws -> Double {
    let port = try freeLoopbackPort()
    let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var one: Int32 = 1
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    let size = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, size) } }
    listen(listener, 1)
    let echo = Thread {
        let connection = accept(listener, nil, nil)
        var buffer = [UInt8](repeating: 0, count: 64)
        while true {
            let count = read(connection, &buffer, 64)
            if count <= 0 { break }
            _ = write(connection, buffer, count)
        }
        close(connection)
    }
    echo.start()
    let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, size) } }
    var buffer = [UInt8](repeating: 7, count: 64)
    var times: [Double] = []
    for _ in 0..<samples {
        let begin = ContinuousClock.now
        _ = write(client, buffer, 64)
        var received = 0
        while received < 64 { received += buffer.withUnsafeMutableBytes { read(client, $0.baseAddress! + received, 64 - received) } }
        times.append(Double((ContinuousClock.now - begin) / .nanoseconds(1)) / 1000)
    }
    close(client)
    close(listener)
    times.sort()
    return times[times.count / 2]
}
