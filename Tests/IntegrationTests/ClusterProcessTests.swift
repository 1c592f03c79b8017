import Foundation
import Testing

/// The `divan` binary built next to the test bundle.
let divanExecutable: URL = {
    var directory = Bundle.main.bundleURL
    while directory.path != "/" {
        let candidate = directory.appendingPathComponent("divan")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        directory.deleteLastPathComponent()
    }
    return URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../.build/debug/divan").standardized
}()

/// Real processes, real sockets, real disks: `divan up` starts three `divan server` processes, writes,
/// reads on a follower, kills the leader with SIGKILL, waits for a new leader, writes again and brings
/// the old leader back from its disk, checking each step; then every process it started is gone.
@Suite(.serialized) struct ClusterProcessTests {
    @Test func aThreeNodeClusterSurvivesTheLossOfItsLeader() throws {
        let directory = NSTemporaryDirectory() + "divan-it-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let process = Process()
        process.executableURL = divanExecutable
        process.arguments = ["up", "--exit-after-demo", "--election-timeout-ms", "1000", "--data-dir", directory]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(text)")
        #expect(text.contains("linearizable read"))
        #expect(text.contains("no acknowledged write was lost"))
        // A new leader within three election timeouts of the kill (plus the time to notice it).
        let elapsed = text.split(separator: "\n").first { $0.contains(" leads after ") }
            .flatMap { line in line.split(separator: " ").dropLast().last.flatMap { Int($0) } }
        let milliseconds = try #require(elapsed, "\(text)")
        #expect(milliseconds < 3 * 1_000 + 1_000, "\(text)")
        // Every node wrote its own log and snapshot directories.
        for node in 1...3 {
            #expect(FileManager.default.fileExists(atPath: "\(directory)/node-\(node)/wal"))
        }
    }
}
