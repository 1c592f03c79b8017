import Foundation
import KVStore
import KVWire
import Logging
import RESP

/// A test failure with a message.
struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The result of a finished program.
struct ProgramResult {
    let status: Int32
    let stdout: String
    let stderr: String
}

/// Runs a program to completion with `input` on its standard input, killing it after `timeout`.
/// Output goes to files, so no thread blocks on a full pipe. The timeout only catches a hang: the
/// redis-py check takes 4 s alone and 33 s was seen under a loaded parallel run.
func runProgram(_ arguments: [String], input: String = "", timeout: Duration = .seconds(120)) async throws -> ProgramResult {
    let base = FileManager.default.temporaryDirectory.appendingPathComponent("resp-test-\(UUID().uuidString)")
    let files = ["in", "out", "err"].map { base.appendingPathExtension($0) }
    defer { for file in files { try? FileManager.default.removeItem(at: file) } }
    try input.write(to: files[0], atomically: true, encoding: .utf8)
    _ = FileManager.default.createFile(atPath: files[1].path, contents: nil)
    _ = FileManager.default.createFile(atPath: files[2].path, contents: nil)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: arguments[0])
    process.arguments = Array(arguments.dropFirst())
    process.standardInput = try FileHandle(forReadingFrom: files[0])
    process.standardOutput = try FileHandle(forWritingTo: files[1])
    process.standardError = try FileHandle(forWritingTo: files[2])
    try process.run()
    let deadline = ContinuousClock.now + timeout
    while process.isRunning {
        if ContinuousClock.now > deadline {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw TestFailure("\(arguments.joined(separator: " ")) timed out")
        }
        try await Task.sleep(for: .milliseconds(5))
    }
    return ProgramResult(
        status: process.terminationStatus,
        stdout: (try? String(contentsOf: files[1], encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOf: files[2], encoding: .utf8)) ?? ""
    )
}

/// redis-cli's output without the `(0.53s)` lines it adds after a command that took over half a
/// second, which a loaded machine (the whole suite runs in parallel) can produce at any point.
func withoutLatencyLines(_ output: String) -> String {
    output.split(separator: "\n", omittingEmptySubsequences: false)
        .filter { line in !(line.hasPrefix("(") && line.hasSuffix("s)") && Double(line.dropFirst().dropLast(2)) != nil) }
        .joined(separator: "\n")
}

/// The client scripts next to this file.
let clientScripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Clients")

/// Debian's redis-cli and Debian's Python, which has python3-redis (scripts/lib/deps.sh installs both).
let redisCLI = "/usr/bin/redis-cli"
let debianPython = "/usr/bin/python3"

/// Runs `body` against a RESPServer on a port the OS picked, in front of a fresh LocalKVService,
/// and closes the server afterwards whatever happens.
func withServer<T>(
    service: any KVService = LocalKVService(engine: MemoryEngine()),
    options: RESPServerOptions = RESPServerOptions(), _ body: (RESPServer) async throws -> T
) async throws -> T {
    var logger = Logger(label: "resp-test")
    logger.logLevel = .warning
    let server = try await RESPServer.start(host: "127.0.0.1", port: 0, service: service, options: options, logger: logger)
    do {
        let result = try await body(server)
        await server.close()
        return result
    } catch {
        await server.close()
        throw error
    }
}
