import Foundation
import Testing

/// What one run of `divan check` did.
private struct Run {
    var status: Int32
    var output: String
    var errors: String
    /// The file written at `timeline.html` in the history's directory, if any.
    var timeline: String?
}

/// Runs `divan check` on `history` with `arguments`, in which `DIR` stands for the history's directory.
/// The binary is the one `swift test` builds next to the test bundle.
private func divanCheck(_ history: String, _ arguments: [String]) throws -> Run {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("divan-check-\(UUID())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let file = directory.appendingPathComponent("history.jsonl")
    try history.write(to: file, atomically: true, encoding: .utf8)

    let executable = URL(fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        .deletingLastPathComponent().appendingPathComponent("divan")
    let process = Process()
    process.executableURL = executable
    process.arguments = ["check", file.path] + arguments.map { $0.replacingOccurrences(of: "DIR", with: directory.path) }
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    let outputData = output.fileHandleForReading.readDataToEndOfFile()
    let errorData = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return Run(
        status: process.terminationStatus, output: String(decoding: outputData, as: UTF8.self),
        errors: String(decoding: errorData, as: UTF8.self),
        timeline: try? String(contentsOf: directory.appendingPathComponent("timeline.html"), encoding: .utf8))
}

private func event(_ process: Int, _ type: String, _ f: String, _ value: String, _ time: Int) -> String {
    "{\"process\": \(process), \"type\": \"\(type)\", \"f\": \"\(f)\", \"key\": \"x\", \"value\": \(value), \"time\": \(time)}"
}

@Suite("divan check", .serialized)
struct CheckCommandTests {
    let written = [
        event(0, "invoke", "write", "1", 0), event(0, "ok", "write", "1", 10),
        event(0, "invoke", "write", "2", 20), event(0, "ok", "write", "2", 30),
    ]

    @Test func linearizableExitsZero() throws {
        let run = try divanCheck(written.joined(separator: "\n"), ["--model", "register"])
        #expect(run.status == 0)
        #expect(run.output.hasPrefix("linearizable: 2 operations on 1 key(s)"))
    }

    @Test func violationExitsOneAndWritesTheTimeline() throws {
        let history = written + [event(1, "invoke", "read", "null", 40), event(1, "ok", "read", "1", 50)]
        let run = try divanCheck(
            history.joined(separator: "\n"), ["--model", "cas-register", "--visualize", "DIR/timeline.html"])
        #expect(run.status == 1)
        #expect(run.output.contains("key \"x\": not linearizable."))
        #expect(run.output.contains("<- culprit  (line 5)"))
        #expect(run.timeline?.hasPrefix("<!DOCTYPE html>") == true)
    }

    @Test func malformedFileExitsTwoNamingTheLine() throws {
        let run = try divanCheck(written[0] + "\n{\"process\": 0}", ["--model", "register"])
        #expect(run.status == 2)
        #expect(run.errors.hasSuffix("history.jsonl:2: missing \"type\"\n"))
    }

    @Test func timeLimitExitsThree() throws {
        var history: [String] = []
        for process in 0..<30 {
            history.append(event(process, "invoke", "write", String(process), process))
        }
        history.append(event(30, "invoke", "read", "null", 0))
        for process in 0..<30 {
            history.append(event(process, "ok", "write", String(process), 1_000 + process))
        }
        history.append(event(30, "ok", "read", "999", 2_000))
        let run = try divanCheck(history.joined(separator: "\n"), ["--model", "register", "--timeout", "0.3"])
        #expect(run.status == 3)
        #expect(run.output.hasPrefix("unknown: no decision within the 0.3 s limit"))
    }
}
