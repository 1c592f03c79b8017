import Foundation
import RaftCore
import Synchronization
import SystemPackage
import Testing

@testable import RaftStorage

/// The `divan` executable built next to this test bundle (`swift build --build-tests` builds both).
func divanExecutable() throws -> String {
    let testBinary = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    var directory = URL(fileURLWithPath: testBinary).deletingLastPathComponent()
    // On Linux the test binary sits in <build>/debug/<Package>PackageTests.xctest.
    if directory.lastPathComponent.hasSuffix(".xctest") { directory.deleteLastPathComponent() }
    let path = directory.appendingPathComponent("divan").path
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw CrashTestError("no divan executable at \(path); build it first with `swift build --build-tests`")
    }
    return path
}

struct CrashTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A child `divan debug wal-writer` and the acknowledgements it printed so far.
final class WALWriterChild: Sendable {
    let process: Process
    private let output = Mutex<(text: String, isClosed: Bool)>(("", false))

    init(executable: String, directory: FilePath, limit: Int = 0) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["debug", "wal-writer", "--dir", directory.string, "--limit", "\(limit)"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        self.process = process
        try process.run()
        let handle = pipe.fileHandleForReading
        Thread.detachNewThread { [self] in
            while true {
                let data = handle.availableData
                if data.isEmpty { break }
                let text = String(decoding: data, as: UTF8.self)
                output.withLock { $0.text += text }
            }
            output.withLock { $0.isClosed = true }
        }
    }

    /// Complete `ack` lines printed so far: (group, index).
    var acknowledgements: [(RaftGroupID, UInt64)] {
        let text = output.withLock { $0.text }
        // A line cut by the kill has no newline yet: only complete lines count.
        guard let end = text.lastIndex(of: "\n") else { return [] }
        return text[..<end].split(separator: "\n", omittingEmptySubsequences: true).compactMap { line in
            let parts = line.split(separator: " ")
            guard parts.count == 3, parts[0] == "ack", let group = UInt64(parts[1]), let index = UInt64(parts[2]) else { return nil }
            return (group, index)
        }
    }

    /// Polls `condition` every few milliseconds until it holds or the deadline passes.
    func wait(until condition: () -> Bool, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(2000)
        }
        return condition()
    }

    func kill() {
        Glibc.kill(process.processIdentifier, SIGKILL)
        waitForExit()
    }

    /// Waits for the child to exit and for its output to be read to the end.
    func waitForExit() {
        process.waitUntilExit()
        _ = wait(until: { output.withLock { $0.isClosed } }, seconds: 10)
    }
}

@Suite struct CrashTests {
    /// Kills a writer with SIGKILL at random moments, many times. After each recovery every
    /// acknowledged entry is there with its exact bytes (unless the writer itself compacted it),
    /// no entry holds anything the writer did not write, and the log takes new appends.
    @Test func killNineAtRandomMomentsLosesNothingAcknowledged() async throws {
        let executable = try divanExecutable()
        let dir = TemporaryDirectory()
        var acknowledged: [RaftGroupID: UInt64] = [:]
        var random: UInt64 = 0xC0FFEE
        for iteration in 0..<30 {
            random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            // Every sixth child dies during its own recovery; the others after 1 to 400 acknowledgements.
            let target = iteration % 6 == 5 ? 0 : Int(random >> 33) % 400 + 1
            let child = try WALWriterChild(executable: executable, directory: dir.path)
            if target > 0 {
                let reached = child.wait(until: { child.acknowledgements.count >= target }, seconds: 30)
                #expect(reached, "iteration \(iteration): child made no progress towards \(target) acknowledgements")
            }
            child.kill()
            for (group, index) in child.acknowledgements { acknowledged[group] = max(acknowledged[group] ?? 0, index) }

            let log = try WriteAheadLog(directory: dir.path, options: WriteAheadLogOptions(log: { _ in }))
            for (group, lastAcknowledged) in acknowledged {
                let state = try #require(log.state(of: group), "iteration \(iteration): group \(group) lost")
                #expect(state.lastIndex >= lastAcknowledged, "iteration \(iteration): group \(group) lost acknowledged entries")
                #expect((state.hardState?.commit ?? 0) >= lastAcknowledged, "iteration \(iteration): group \(group) lost its hard state")
                let found = try log.entries(group: group, in: state.firstIndex..<state.lastIndex + 1)
                let expected = (state.firstIndex...max(state.firstIndex, state.lastIndex)).prefix(found.count).map {
                    Entry(term: 1, index: $0, payload: .normal(Array(String(repeating: "g\(group)i\($0);", count: 4).utf8)))
                }
                #expect(found.count == Int(state.lastIndex + 1 - state.firstIndex))
                #expect(found == expected, "iteration \(iteration): group \(group) holds entries the writer never wrote")
            }
            log.close()
        }
        #expect(acknowledged.values.reduce(0, +) > 1000)

        // The log is still writable by a fresh process that runs to completion.
        let finisher = try WALWriterChild(executable: executable, directory: dir.path, limit: 5)
        finisher.waitForExit()
        #expect(finisher.process.terminationStatus == 0)
        #expect(finisher.acknowledgements.count == 8 * 5)
    }
}
