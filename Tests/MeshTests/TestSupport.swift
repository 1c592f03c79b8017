import Foundation
import Logging
import Mesh
import NIOCore
import NIOPosix

/// Where the Python fixtures (upstream servers and raw-socket clients) live.
let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

/// Waits until `condition` holds, polling, or throws once `timeout` has passed.
func waitUntil(
    _ what: String, timeout: Duration = .seconds(10), _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else { throw TestFailure("timed out waiting for \(what)") }
        try await Task.sleep(for: .milliseconds(20))
    }
}

/// A test failure with a message.
struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A child process (an upstream server) that is killed when the test ends.
final class ChildProcess: @unchecked Sendable {
    let process = Process()
    let directory: URL
    /// The port the child wrote to its port file.
    private(set) var port = 0

    /// Starts a Python fixture that binds a port and writes it to a file, and waits for that file.
    init(script: String, arguments: [String] = []) async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("mesh-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let portFile = directory.appendingPathComponent("port")
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", fixtures.appendingPathComponent(script).path, portFile.path] + arguments
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        try await waitUntil("\(script) to start") { FileManager.default.fileExists(atPath: portFile.path) }
        port = Int(try String(contentsOf: portFile, encoding: .utf8)) ?? 0
    }

    /// Kills the child. SIGKILL, because children spawned from test threads inherit a mask that blocks SIGTERM.
    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }
}

/// The result of a finished command.
struct CommandResult {
    let status: Int32
    let stdout: String
    let stderr: String
}

/// A command started in the background, with its output going to files so that no thread blocks on a pipe.
final class BackgroundCommand: @unchecked Sendable {
    let process = Process()
    let arguments: [String]
    private let stdoutFile: URL
    private let stderrFile: URL

    init(_ arguments: [String]) throws {
        self.arguments = arguments
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("mesh-cmd-\(UUID().uuidString)")
        stdoutFile = base.appendingPathExtension("out")
        stderrFile = base.appendingPathExtension("err")
        _ = FileManager.default.createFile(atPath: stdoutFile.path, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardOutput = try FileHandle(forWritingTo: stdoutFile)
        process.standardError = try FileHandle(forWritingTo: stderrFile)
        try process.run()
    }

    /// Waits for the command to exit (killing it after `timeout`) and returns its output.
    func finish(timeout: Duration = .seconds(60)) async throws -> CommandResult {
        defer {
            try? FileManager.default.removeItem(at: stdoutFile)
            try? FileManager.default.removeItem(at: stderrFile)
        }
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                throw TestFailure("\(arguments.joined(separator: " ")) timed out")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        return CommandResult(
            status: process.terminationStatus,
            stdout: (try? String(contentsOf: stdoutFile, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? "")
    }
}

/// Runs a command to completion (killing it after `timeout`) and returns its output.
func run(_ arguments: [String], timeout: Duration = .seconds(60)) async throws -> CommandResult {
    try await BackgroundCommand(arguments).finish(timeout: timeout)
}

/// Runs a fixture client and decodes its one JSON line.
func runClient(_ arguments: [String]) async throws -> Any {
    let result = try await run(["python3", fixtures.appendingPathComponent("client.py").path] + arguments)
    guard result.status == 0, let data = result.stdout.data(using: .utf8) else {
        throw TestFailure("client.py \(arguments) failed: \(result.stderr)")
    }
    return try JSONSerialization.jsonObject(with: data)
}

/// A Mesh proxy running in the test process on ports the OS picked.
final class RunningProxy: Sendable {
    let proxy: MeshProxy
    let group: MultiThreadedEventLoopGroup

    init(yaml: String) async throws {
        let config = try MeshConfig.parse(yaml: yaml)
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var logger = Logger(label: "mesh-test")
        logger.logLevel = .warning
        proxy = try MeshProxy(config: config, group: group, logger: logger)
        try await proxy.start()
    }

    func port(_ listener: String) -> Int { proxy.localAddress(ofListener: listener)?.port ?? 0 }

    var adminPort: Int { proxy.adminAddress?.port ?? 0 }

    func url(_ listener: String, _ path: String) -> String { "http://127.0.0.1:\(port(listener))\(path)" }

    func stop() async {
        await proxy.shutdown(drainTime: .seconds(1))
        try? await group.shutdownGracefully()
    }
}

/// `curl` with the given arguments; `-s` is added.
func curl(_ arguments: [String]) async throws -> CommandResult {
    try await run(["curl", "-s"] + arguments)
}

/// The bytes `upstream.py` serves for `/bytes/N` and `/chunked/N`.
func upstreamPattern(_ count: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0) }
}
