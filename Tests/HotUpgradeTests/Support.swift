import DivanTestSupport
import Foundation
import NIOConcurrencyHelpers

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

/// A test failure with a message.
struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Waits until `condition` holds, polling, or throws once `timeout` has passed.
func waitUntil(_ what: String, timeout: Duration = .seconds(60), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else { throw TestFailure("timed out waiting for \(what)") }
        try await Task.sleep(for: .milliseconds(20))
    }
}

/// A scratch directory for one test, removed at the end.
final class Scratch: Sendable {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("hu-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    deinit { try? FileManager.default.removeItem(at: url) }
}

/// A background process with its output in files; killed (SIGKILL) by `stop()` or when released.
final class Child: @unchecked Sendable {
    let process = Process()
    let stdoutPath: String
    let stderrPath: String

    init(_ arguments: [String], in scratch: Scratch, name: String) throws {
        stdoutPath = scratch.path("\(name).out")
        stderrPath = scratch.path("\(name).err")
        _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        // Niced: these tests load both cores for a while, and the suites running beside them have time limits.
        process.executableURL = URL(fileURLWithPath: "/usr/bin/nice")
        process.arguments = ["-n", "5", "/usr/bin/env"] + arguments
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: stdoutPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        try process.run()
    }

    var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }
    var pid: Int32 { process.processIdentifier }

    /// Waits for the process to exit by itself.
    func finish(timeout: Duration = .seconds(60)) async throws -> Int32 {
        try await waitUntil("\(process.arguments?.dropFirst(3).joined(separator: " ") ?? "") to exit", timeout: timeout) { !process.isRunning }
        return process.terminationStatus
    }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}

/// Runs a command to completion and returns its status and output.
func run(_ arguments: [String], in scratch: Scratch, timeout: Duration = .seconds(60)) async throws -> (status: Int32, stdout: String, stderr: String) {
    let child = try Child(arguments, in: scratch, name: "cmd-\(UUID().uuidString.prefix(8))")
    let status = try await child.finish(timeout: timeout)
    return (status, child.stdout, child.stderr)
}

/// A Python fixture server that writes its port to a file.
func startFixtureServer(_ arguments: [String], in scratch: Scratch, name: String) async throws -> (Child, Int) {
    let portFile = scratch.path("\(name).port")
    let child = try Child(["python3"] + arguments.map { $0 == "PORT_FILE" ? portFile : $0 }, in: scratch, name: name)
    try await waitUntil("\(name) to start") { FileManager.default.fileExists(atPath: portFile) }
    return (child, Int(try String(contentsOfFile: portFile, encoding: .utf8)) ?? 0)
}

/// A line of numbers a fixture rewrites as it goes (its progress file).
func readNumbers(_ path: String) -> [Int] {
    ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: " ").compactMap { Int($0) }
}

/// The HTTP upstream fixture and a Mesh chain proxying to it: the setup most upgrade tests share.
struct UpstreamAndChain {
    let scratch: Scratch
    let upstream: Child
    let chain: MeshChain

    /// Starts the upstream, then the chain on the config `config` makes for the upstream's port.
    static func start(_ config: (Int) -> String) async throws -> UpstreamAndChain {
        let scratch = try Scratch()
        let (upstream, port) = try await startFixtureServer(
            [fixtures.appendingPathComponent("upstream.py").path, "PORT_FILE"], in: scratch, name: "upstream")
        do {
            return UpstreamAndChain(scratch: scratch, upstream: upstream, chain: try await MeshChain(config: config(port), scratch: scratch))
        } catch {
            upstream.stop()
            throw error
        }
    }

    /// Stops the chain, then the upstream.
    func stop() {
        chain.stop()
        upstream.stop()
    }
}

/// A Divan Mesh proxy started by the test, and every process that took over from it since.
final class MeshChain: @unchecked Sendable {
    let scratch: Scratch
    let configPath: String
    let socketPath: String
    let first: Child
    private let pids = NIOLockedValueBox<[Int32]>([])

    /// Starts `divan mesh run` on `config` (listeners on port 0) and waits for its listeners.
    init(config: String, scratch: Scratch, extraArguments: [String] = []) async throws {
        self.scratch = scratch
        configPath = scratch.path("mesh.yaml")
        socketPath = scratch.path("upgrade/mesh.sock")
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        first = try Child(
            [divanExecutable.path, "mesh", "run", "--config", configPath, "--upgrade-socket", socketPath, "--threads", "2",
             "--handover-window", "0.3", "--drain-seconds", "5"] + extraArguments,
            in: scratch, name: "mesh")
        pids.withLockedValue { $0.append(first.pid) }
        try await waitUntil("the proxy to listen") {
            log.contains("upgrade socket listening") && (port("web") != nil || port("db") != nil)
        }
    }

    /// Everything every process of the chain logged (spawned successors inherit the first one's stderr).
    var log: String { first.stderr }

    /// The port a listener was first bound to, from the log.
    func port(_ listener: String) -> Int? {
        let pattern = try! NSRegularExpression(pattern: ":(\\d+) listener=\(NSRegularExpression.escapedPattern(for: listener)) ")
        let text = log
        guard let match = pattern.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)),
            let range = Range(match.range(at: 1), in: text)
        else { return nil }
        return Int(text[range])
    }

    /// `divan mesh upgrade`; returns the new pid, or throws with the command's output.
    func upgrade() async throws -> Int32 {
        let result = try await run([divanExecutable.path, "mesh", "upgrade", "--socket", socketPath], in: scratch)
        guard result.status == 0, let line = result.stdout.split(separator: "\n").last, line.hasPrefix("pid "), let pid = Int32(line.dropFirst(4)) else {
            let problems = log.split(separator: "\n").filter { $0.contains(" warning ") || $0.contains(" error ") || $0.contains(" critical ") }
            throw TestFailure("upgrade failed (\(result.status)): \(result.stdout) \(result.stderr)\n\(problems.suffix(10).joined(separator: "\n"))")
        }
        adopt(pid)
        // The new process claims the socket path only once the old one is gone; the next upgrade needs it there.
        try await waitUntil("process \(pid) to claim the upgrade socket") { log.contains("pid=\(pid) [HotUpgrade] upgrade socket listening") }
        return pid
    }

    /// Records a process that took over, so that `stop()` kills it too.
    func adopt(_ pid: Int32) {
        pids.withLockedValue { $0.append(pid) }
    }

    var allPids: [Int32] { pids.withLockedValue { $0 } }

    /// Whether a process of the chain is still alive.
    func isAlive(_ pid: Int32) -> Bool {
        // Zombies count as dead: only the first process is our child, and `Process` reaps it.
        guard kill(pid, 0) == 0 else { return false }
        let status = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return !status.contains(") Z ")
    }

    func stop() {
        for pid in allPids where pid != first.pid { kill(pid, SIGKILL) }
        first.stop()
    }

    deinit { stop() }
}

/// The Mesh admin endpoint's text for `path`, or nil.
func admin(_ port: Int, _ path: String) async throws -> String? {
    let result = try await run(["curl", "-s", "--max-time", "5", "http://127.0.0.1:\(port)\(path)"], in: Scratch())
    return result.status == 0 ? result.stdout : nil
}
