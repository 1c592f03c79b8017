import Foundation
import Testing

/// The `divan` executable next to the test bundle (swift test builds it with the tests).
let divanExecutable: URL = {
    var directory = Bundle.main.bundleURL
    while directory.path != "/" {
        let candidate = directory.appendingPathComponent("divan")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        directory.deleteLastPathComponent()
    }
    return URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../.build/debug/divan").standardized
}()

/// `divan chaos` as CI runs it: a real 5-node cluster under every kind of fault for 60 seconds must
/// come out linearizable with every acknowledged write on every node; and the same run against
/// servers that serve stale reads must be caught. One at a time: each run uses both cores.
@Suite(.serialized) struct ChaosRunTests {
    /// Runs `divan chaos` with `arguments`; returns its exit status and output.
    func chaos(_ arguments: [String]) throws -> (status: Int32, output: String, directory: String) {
        let directory = NSTemporaryDirectory() + "divan-chaos-\(UUID().uuidString)"
        let process = Process()
        process.executableURL = divanExecutable
        process.arguments = ["chaos", "--output", directory] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output, directory)
    }

    @Test func sixtySecondsOfFaultsLeaveTheHistoryLinearizable() throws {
        let run = try chaos(["--time", "60", "--seed", "8"])
        #expect(run.status == 0, "divan chaos failed:\n\(run.output)")
        #expect(run.output.contains("result: linearizable"), "\(run.output)")
        for file in ["history.jsonl", "nemesis.jsonl", "timeline.svg", "report.txt"] {
            #expect(FileManager.default.fileExists(atPath: "\(run.directory)/\(file)"), "\(file) missing")
        }
        if run.status == 0 { try? FileManager.default.removeItem(atPath: run.directory) }
    }

    @Test func staleReadsAreCaught() throws {
        let run = try chaos(["--time", "60", "--seed", "8", "--unsafe-stale-reads"])
        #expect(run.status == 1, "the harness did not report the stale reads:\n\(run.output)")
        #expect(run.output.contains("NOT LINEARIZABLE") || run.output.contains("FINAL READS DISAGREE"), "\(run.output)")
        if run.status == 1 { try? FileManager.default.removeItem(atPath: run.directory) }
    }
}
