import DivanTestSupport
import Foundation
import Testing

/// `divan chaos` as CI runs it: a real 5-node cluster under every kind of fault (kills, pauses,
/// partitions, membership changes, replaced nodes, bit flips on disk, leader transfers; seed 8 draws
/// a disk fault, kills, pauses and partitions into the 60 seconds) must come out linearizable with
/// every acknowledged write on every node; and a run against servers that serve stale reads must be
/// caught. One at a time: each run uses both cores.
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

    /// A node cut off from the leader keeps answering reads from its own replica: some client reads
    /// a value older than one already acknowledged.
    @Test func staleReadsAreCaught() throws {
        let run = try chaos(["--time", "60", "--seed", "8", "--faults", "partition", "--unsafe-stale-reads"])
        #expect(run.status == 1, "the harness did not report the stale reads:\n\(run.output)")
        #expect(run.output.contains("NOT LINEARIZABLE") || run.output.contains("FINAL READS DISAGREE"), "\(run.output)")
        if run.status == 1 { try? FileManager.default.removeItem(atPath: run.directory) }
    }
}
