import DivanServer
import DivanTestSupport
import Foundation

/// Up to five `divan server` processes on loopback ports the OS picked, each with a data directory,
/// an HTTP admin port, a RESP port and a log file in one temporary directory. Every process it
/// started is killed, and the directory removed, by `stopAll()` and at the latest when it goes away.
final class Servers {
    let directory = NSTemporaryDirectory() + "divan-members-\(UUID().uuidString)"
    /// Arguments every node gets, e.g. `--engine rocksdb --split-keys 300`.
    let arguments: [String]
    /// Nodes that founders start with as learners of every group (`--learners`).
    let learners: [Int]
    var raftPorts: [Int] = []
    var httpPorts: [Int] = []
    var respPorts: [Int] = []
    var processes: [Int: Process] = [:]

    init(count: Int = 5, arguments: [String] = [], learners: [Int] = []) throws {
        self.arguments = arguments
        self.learners = learners
        for _ in 0..<count {
            raftPorts.append(try freeLoopbackPort())
            httpPorts.append(try freeLoopbackPort())
            respPorts.append(try freeLoopbackPort())
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    deinit { stopAll() }

    func stopAll() {
        for process in processes.values where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        processes = [:]
        // DIVAN_KEEP_TEST_DATA=1 keeps the nodes' logs and data for a post-mortem.
        if ProcessInfo.processInfo.environment["DIVAN_KEEP_TEST_DATA"] == nil {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    /// Starts node `id`: a founder (voters 1, 2, 3 plus the learners) or a node that joins later.
    func start(_ id: Int, joining: Bool) throws {
        let process = Process()
        process.executableURL = divanExecutable
        let peers = raftPorts.indices.map { "\($0 + 1)=127.0.0.1:\(raftPorts[$0])" }.joined(separator: ",")
        let founders = ["--voters", "1,2,3"] + (learners.isEmpty ? [] : ["--learners", learners.map(String.init).joined(separator: ",")])
        process.arguments = [
            "server", "--id", "\(id)", "--listen", "127.0.0.1:\(raftPorts[id - 1])",
            "--http", "127.0.0.1:\(httpPorts[id - 1])", "--resp", "127.0.0.1:\(respPorts[id - 1])", "--peers", peers,
            "--data-dir", "\(directory)/node-\(id)", "--election-timeout-ms", "500",
            "--log-level", ProcessInfo.processInfo.environment["DIVAN_TEST_LOG_LEVEL"] ?? "warning",
        ] + arguments + (joining ? ["--join"] : founders)
        let logPath = "\(directory)/node-\(id).log"
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = log
        try process.run()
        processes[id] = process
    }

    /// The last lines node `id` logged (warnings and worse), for failure messages.
    func logTail(_ id: Int, lines: Int = 15) -> String {
        let text = (try? String(contentsOfFile: "\(directory)/node-\(id).log", encoding: .utf8)) ?? ""
        return "node \(id) log:\n" + text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    func request(_ id: Int, _ method: String, _ path: String, body: String? = nil) async -> (Int, String)? {
        await NodeHTTPClient.request(port: httpPorts[id - 1], method, path, body: body)
    }

    /// The leader as node 1 reports it.
    func leader() async -> Int? {
        for id in 1...3 {
            guard let (_, body) = await request(id, "GET", "/status"),
                  let range = body.range(of: "\"leader\": ") else { continue }
            if let leader = Int(body[range.upperBound...].prefix { $0.isNumber }) { return leader }
        }
        return nil
    }

    func number(_ field: String, on id: Int) async -> Int? {
        guard let (_, body) = await request(id, "GET", "/status"), let range = body.range(of: "\"\(field)\": ") else { return nil }
        return Int(body[range.upperBound...].prefix { $0.isNumber })
    }

    /// A counter from a node's `/metrics`, or nil.
    func metric(_ line: String, on id: Int) async -> Double? {
        guard let (_, body) = await request(id, "GET", "/metrics") else { return nil }
        let found = body.split(separator: "\n").first { $0.hasPrefix(line + " ") }
        return found.flatMap { Double($0.split(separator: " ").last!) }
    }

    /// One region as a node's `/status` shows it.
    struct RegionStatus: Decodable {
        var id: UInt64
        var start: String
        var end: String?
        var role: String
        var leader: Int?
        var applied: UInt64
        var keys: Int
    }

    private struct Status: Decodable {
        var regions: [RegionStatus]
    }

    /// The regions node `id` holds, in key order; nil when it does not answer.
    func regions(on id: Int) async -> [RegionStatus]? {
        guard let (status, body) = await request(id, "GET", "/status"), status == 200 else { return nil }
        return try? JSONDecoder().decode(Status.self, from: Data(body.utf8)).regions
    }

    /// Whether node `id` answers `/ready` (every group it holds knows a leader).
    func isReady(_ id: Int) async -> Bool {
        await request(id, "GET", "/ready")?.0 == 200
    }

    /// Waits until every node of `ids` is ready; the error says what each answered last.
    func waitUntilReady(_ ids: ClosedRange<Int>, within seconds: Double = 60) async throws {
        var answers: [String] = []
        try await waitUntil(seconds, "nodes \(ids) ready: \(answers.joined(separator: "; "))") {
            answers = []
            for id in ids {
                let answer = await request(id, "GET", "/ready")
                answers.append("node \(id): \(answer.map { "\($0.0) \($0.1)" } ?? "no answer")")
            }
            return answers.allSatisfy { $0.contains(": 200 ") }
        }
    }

    func kill9(_ id: Int) {
        guard let process = processes[id] else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        processes[id] = nil
    }

    func voters(on id: Int) async -> String? {
        guard let (_, body) = await request(id, "GET", "/status"), let range = body.range(of: "\"voters\": ") else { return nil }
        return String(body[range.upperBound...].prefix { $0 != "]" }) + "]"
    }

    func waitUntil(_ seconds: Double = 30, _ what: @autoclosure () -> String = "a condition", _ condition: () async -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if await condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TimedOut(what: what(), seconds: seconds)
    }

    struct TimedOut: Error, CustomStringConvertible {
        var what: String
        var seconds: Double
        var description: String { "waited \(seconds) s in vain for \(what)" }
    }
}

/// A client program run in the background with its output in files: a script from `Scripts/` run
/// by Debian's Python (which has python3-redis; scripts/lib/deps.sh installs it), or redis-cli. It is
/// killed when it goes away if it still runs.
final class ClientProgram {
    static let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts")

    let process = Process()
    let name: String
    private let outputPath: String
    private let errorPath: String

    /// Starts `executable` with `arguments` and `input` on its standard input; its output goes to
    /// files in `directory`.
    init(_ executable: String, _ arguments: [String], input: String = "", directory: String) throws {
        name = URL(fileURLWithPath: arguments.first { $0.hasSuffix(".py") } ?? executable).lastPathComponent
        let base = "\(directory)/\(name)-\(UUID().uuidString)"
        outputPath = base + ".out"
        errorPath = base + ".err"
        try input.write(toFile: base + ".in", atomically: false, encoding: .utf8)
        for path in [outputPath, errorPath] { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: base + ".in"))
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath))
        try process.run()
    }

    /// Starts `Scripts/script` with `arguments`.
    convenience init(script: String, _ arguments: [String], directory: String) throws {
        try self.init("/usr/bin/python3", ["-u", Self.scripts.appendingPathComponent(script).path] + arguments, directory: directory)
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    var errors: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }
    var outputLines: [Substring] { output.split(separator: "\n") }

    /// Waits for the program to exit and returns its status; kills it and throws after `seconds`.
    func wait(_ seconds: Double = 60) async throws -> Int32 {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning {
            guard Date() < deadline else {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                throw Servers.TimedOut(what: "\(name) to exit (output: \(output.suffix(500)), errors: \(errors.suffix(1500)))", seconds: seconds)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return process.terminationStatus
    }

    /// Runs `Scripts/script` to completion: its status and its output, or its errors when it failed.
    static func run(script: String, _ arguments: [String], directory: String, within seconds: Double = 60) async throws -> (status: Int32, output: String) {
        let program = try ClientProgram(script: script, arguments, directory: directory)
        let status = try await program.wait(seconds)
        return (status, status == 0 ? program.output : program.output + program.errors)
    }

    /// Runs Debian's redis-cli to completion and returns its output.
    static func redisCLI(_ arguments: [String], input: String = "", directory: String) async throws -> String {
        let program = try ClientProgram("/usr/bin/redis-cli", arguments, input: input, directory: directory)
        _ = try await program.wait(60)
        return program.output.trimmingCharacters(in: .whitespacesAndNewlines) + program.errors
    }
}
