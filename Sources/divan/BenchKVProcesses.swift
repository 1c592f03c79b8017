import Foundation
import Synchronization

/// Every process `divan bench kv` started and has not stopped yet, so that a failure or Ctrl-C
/// stops them all.
final class BenchChildren: Sendable {
    private let running = Mutex<Set<pid_t>>([])
    /// The scratch directory removed with the children.
    let directory: String

    init(directory: String) { self.directory = directory }

    /// Starts `executable` with `arguments`, its output appended to `log` (or discarded).
    func launch(_ executable: String, _ arguments: [String], log: String? = nil) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let log {
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            process.standardOutput = handle
            process.standardError = handle
        } else {
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
        }
        try process.run()
        adopt(process.processIdentifier)
        return process
    }

    /// Records a process started elsewhere (the Divan nodes of `LocalProcessCluster`).
    func adopt(_ pid: pid_t) { _ = running.withLock { $0.insert(pid) } }

    /// Forgets a process that was stopped elsewhere.
    func release(_ pid: pid_t) { _ = running.withLock { $0.remove(pid) } }

    /// SIGTERM, then SIGKILL after `grace` seconds if it is still running.
    func stop(_ process: Process, grace: Double = 5) {
        let pid = process.processIdentifier
        if process.isRunning {
            kill(pid, SIGTERM)
            let deadline = Date().addingTimeInterval(grace)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning { kill(pid, SIGKILL) }
        }
        process.waitUntilExit()
        release(pid)
    }

    /// Stops every process still recorded and removes the scratch directory: the path of a failure
    /// or of Ctrl-C, where the `Process` objects are out of reach.
    func stopAllAndClean() {
        let pids = running.withLock { pids in
            defer { pids.removeAll() }
            return pids
        }
        for pid in pids { kill(pid, SIGTERM) }
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline && pids.contains(where: { kill($0, 0) == 0 && !isZombie($0) }) { usleep(50_000) }
        for pid in pids where kill(pid, 0) == 0 { kill(pid, SIGKILL) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Until the parent reaps it, an exited child still answers `kill(pid, 0)`.
    private func isZombie(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(close, offsetBy: 2)] == "Z"
    }

    /// Stops everything and exits on SIGINT or SIGTERM. Keep the returned sources alive.
    func stopOnSignals() -> [any DispatchSourceSignal] {
        [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { [self] in
                print("\ninterrupted: stopping every process the benchmark started")
                stopAllAndClean()
                exit(130)
            }
            source.resume()
            return source
        }
    }
}

/// Waits until `condition` holds, polling every 100 ms; false after `seconds`.
func waitUntil(seconds: Double, _ condition: () async -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(100))
    }
    return false
}

/// Runs a short command to completion and returns its standard output; nil when it failed.
func output(of executable: String, _ arguments: [String]) -> String? {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    guard (try? process.run()) != nil else { return nil }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return process.terminationStatus == 0 ? String(decoding: data, as: UTF8.self) : nil
}
