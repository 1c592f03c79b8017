import DivanTestSupport
import Foundation
import Testing

/// Real processes, real sockets, real disks: `divan up` starts three `divan server` processes, writes,
/// reads on a follower, kills the leader with SIGKILL, waits for a new leader, writes again and brings
/// the old leader back from its disk, checking each step; then every process it started is gone.
@Suite(.serialized) struct ClusterProcessTests {
    /// Runs `divan up --exit-after-demo` with `arguments` and returns its exit status and output.
    func up(_ arguments: [String], directory: String) throws -> (status: Int32, text: String) {
        let process = Process()
        process.executableURL = divanExecutable
        process.arguments = ["up", "--exit-after-demo", "--data-dir", directory] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }

    @Test func aThreeNodeClusterSurvivesTheLossOfItsLeader() throws {
        let directory = NSTemporaryDirectory() + "divan-it-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (status, text) = try up(["--election-timeout-ms", "1000"], directory: directory)
        #expect(status == 0, "\(text)")
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

    /// Priorities 100/50/50: the 100 node leads; killed, a 50 node takes over after the target
    /// priority decays; restarted, it gets leadership back by a leader transfer.
    @Test func leadershipFollowsPriorityAcrossAKillAndARestart() throws {
        let directory = NSTemporaryDirectory() + "divan-it-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (status, text) = try up(["--election-timeout-ms", "300", "--priorities", "1=100,2=50,3=50"], directory: directory)
        #expect(status == 0, "\(text)")
        #expect(text.contains("node 1 leads the placement driver"), "\(text)")
        #expect(text.contains("node 2 leads after") || text.contains("node 3 leads after"), "\(text)")
        #expect(text.contains("node 1, of the highest priority, leads again"), "\(text)")
    }
}
