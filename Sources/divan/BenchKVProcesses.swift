import ArgumentParser
import Foundation
import Synchronization

/// Every process `divan bench kv` started and has not stopped yet, so that a failure or Ctrl-C
/// stops them all.
final class BenchChildren: Sendable {
    private struct State {
        var running: Set<pid_t> = []
        var isStopping = false
    }

    private let state = Mutex(State())
    /// Held for a whole stop, so that a failing run waits for Ctrl-C's stop (and the reverse).
    private let stopping = NSLock()
    /// The scratch directory removed with the children.
    let directory: String

    init(directory: String) { self.directory = directory }

    /// Children of a new scratch directory, `divan-bench-NAME.XXXXXX` in the temporary directory.
    convenience init(scratchNamed name: String) throws {
        var template = Array("\(NSTemporaryDirectory())/divan-bench-\(name).XXXXXX".utf8CString)
        guard let created = mkdtemp(&template) else { throw ValidationError("cannot create a temporary directory") }
        self.init(directory: String(cString: created))
    }

    /// Starts `executable` with `arguments`, its output written to `log` (or discarded); refuses once
    /// everything is being stopped.
    func launch(_ executable: String, _ arguments: [String], log: String? = nil) throws -> ChildProcess {
        try state.withLock { state in
            guard !state.isStopping else { throw BenchStopped() }
            let child = try ChildProcess(executable, arguments, log: log)
            state.running.insert(child.pid)
            return child
        }
    }

    /// Records a process started elsewhere (the Divan nodes of `LocalProcessCluster`).
    func adopt(_ pid: pid_t) { _ = state.withLock { $0.running.insert(pid) } }

    /// Forgets a process that was stopped elsewhere.
    func release(_ pid: pid_t) { _ = state.withLock { $0.running.remove(pid) } }

    /// SIGTERM, then SIGKILL after `grace` seconds if it is still running.
    func stop(_ child: ChildProcess, grace: Double = 5) {
        if child.isRunning {
            kill(child.pid, SIGTERM)
            let deadline = Date().addingTimeInterval(grace)
            while child.isRunning && Date() < deadline { usleep(20_000) }
            if child.isRunning { kill(child.pid, SIGKILL) }
        }
        child.waitUntilExit()
        release(child.pid)
    }

    /// Stops every process still recorded and removes the scratch directory: the path of a failure
    /// or of Ctrl-C, where the objects of the processes are out of reach. Nothing starts afterwards.
    func stopAllAndClean() {
        stopping.lock()
        defer { stopping.unlock() }
        let pids = state.withLock { state in
            state.isStopping = true
            defer { state.running.removeAll() }
            return state.running
        }
        for pid in pids { kill(pid, SIGTERM) }
        waitForExit(pids, seconds: 5)
        for pid in pids where kill(pid, 0) == 0 { kill(pid, SIGKILL) }
        waitForExit(pids, seconds: 2)
        // A second pass catches files a process wrote while the first one ran.
        for _ in 0..<2 { try? FileManager.default.removeItem(atPath: directory) }
    }

    private func waitForExit(_ pids: Set<pid_t>, seconds: Double) {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline && pids.contains(where: { kill($0, 0) == 0 && !isZombie($0) }) { usleep(50_000) }
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

/// The benchmark is being stopped (Ctrl-C): no new process starts.
struct BenchStopped: Error, CustomStringConvertible {
    var description: String { "the benchmark is stopping" }
}

/// A child process started by `posix_spawn` with an empty signal mask and default signal actions.
///
/// Foundation's `Process` passes on the signal mask of the thread that starts it, and the threads of
/// Swift concurrency block nearly every signal, so its children would never see SIGTERM or SIGINT
/// (redis-server would not stop, `perf record` would not write its profile).
final class ChildProcess: Sendable {
    let pid: pid_t
    private let exitStatus = Mutex<Int32?>(nil)

    init(_ executable: String, _ arguments: [String], log: String?) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var everySignal = sigset_t()
        sigfillset(&everySignal)
        sigdelset(&everySignal, SIGKILL)
        sigdelset(&everySignal, SIGSTOP)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &everySignal)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard result == 0 else { throw ValidationError("cannot start \(executable): errno \(result)") }
        self.pid = pid
    }

    /// True until the process has exited; the first call that sees it exited reaps it.
    var isRunning: Bool {
        exitStatus.withLock { status in
            guard status == nil else { return false }
            var raw: Int32 = 0
            guard waitpid(pid, &raw, WNOHANG) == pid else { return true }
            status = raw
            return false
        }
    }

    /// Blocks until the process exits (polling, so other threads may ask `isRunning` meanwhile).
    func waitUntilExit() {
        while isRunning { usleep(10_000) }
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
