import Foundation
import Synchronization

/// Every `divan server` child process the harness started in this process, so that they can all
/// be killed on SIGINT or on any exit path, and by a watchdog if the harness itself dies.
public enum ChildProcesses {
    private static let state = Mutex<(pids: Set<Int32>, file: String?)>(([], nil))

    /// Starts a watchdog shell that waits for this process to end, however it ends (a crash or
    /// SIGKILL included), and then kills the servers whose ids `file` lists; the list is rewritten
    /// at every start and end of a server, so after a clean exit it is empty.
    static func startWatchdog(listingServersIn file: String) throws {
        state.withLock { $0.file = file }
        rewrite()
        let watchdog = Process()
        watchdog.executableURL = URL(fileURLWithPath: "/bin/sh")
        watchdog.arguments = [
            "-c", "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; pids=$(cat \"$2\" 2>/dev/null); [ -z \"$pids\" ] || kill -9 $pids",
            "divan-chaos-watchdog", "\(getpid())", file,
        ]
        watchdog.standardInput = FileHandle.nullDevice
        watchdog.standardOutput = FileHandle.nullDevice
        watchdog.standardError = FileHandle.nullDevice
        try watchdog.run()
    }

    static func started(_ pid: Int32) {
        state.withLock { _ = $0.pids.insert(pid) }
        rewrite()
    }

    static func ended(_ pid: Int32) {
        state.withLock { _ = $0.pids.remove(pid) }
        rewrite()
    }

    private static func rewrite() {
        state.withLock { state in
            guard let file = state.file else { return }
            try? state.pids.map(String.init).joined(separator: " ").write(toFile: file, atomically: true, encoding: .utf8)
        }
    }

    /// Sends SIGKILL to every child still running (SIGKILL also ends a stopped process).
    public static func killAll() {
        for pid in state.withLock({ $0.pids }) { kill(pid, SIGKILL) }
    }
}

/// One `divan server` process of the cluster under test: its ports, its data directory and how to
/// start it again.
struct ServerNode: Sendable {
    let id: Int
    let raftPort: Int
    let httpPort: Int
    let respPort: Int
    let dataDirectory: String
    let logFile: String
}

/// The cluster under test: `divan server` processes with RocksDB and fsync on, each dialling its
/// peers through the relay, so the nemesis can cut any direction between any two nodes.
final class ServerProcesses: Sendable {
    let nodes: [ServerNode]
    let founders: [Int]
    let initialLearners: [Int]
    let executable: String
    let electionTimeoutMs: Int
    let unsafeOptions: [String]
    private let state = Mutex(State())

    private struct State {
        var processes: [Int: Process] = [:]
        var paused: Set<Int> = []
        /// Nodes wiped and added back with --join: from then on they always start with --join.
        var joined: Set<Int> = []
    }

    init(nodes: [ServerNode], founders: [Int], learners: [Int], executable: String, electionTimeoutMs: Int, unsafeOptions: [String]) {
        self.nodes = nodes
        self.founders = founders
        self.initialLearners = learners
        self.executable = executable
        self.electionTimeoutMs = electionTimeoutMs
        self.unsafeOptions = unsafeOptions
    }

    func node(_ id: Int) -> ServerNode { nodes.first { $0.id == id }! }

    var ids: [Int] { nodes.map(\.id) }

    /// The `--peers` list node `id` starts with: itself at its real port, every other node at the
    /// relay port of the link from `id` to it.
    func peers(of id: Int, relay: Relay) -> String {
        nodes.map { node in
            let port = node.id == id ? node.raftPort : relay.ports[Link(from: id, to: node.id)]!
            return "\(node.id)=127.0.0.1:\(port)"
        }.joined(separator: ",")
    }

    func start(_ id: Int, relay: Relay) throws {
        let node = node(id)
        try FileManager.default.createDirectory(atPath: node.dataDirectory, withIntermediateDirectories: true)
        if !FileManager.default.fileExists(atPath: node.logFile) {
            _ = FileManager.default.createFile(atPath: node.logFile, contents: nil)
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: node.logFile))
        log.seekToEndOfFile()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        let joins = state.withLock { $0.joined.contains(id) }
        var arguments = [
            "server", "--id", "\(id)", "--listen", "127.0.0.1:\(node.raftPort)", "--http", "127.0.0.1:\(node.httpPort)",
            "--resp", "127.0.0.1:\(node.respPort)", "--peers", peers(of: id, relay: relay), "--data-dir", node.dataDirectory,
            "--engine", "rocksdb", "--election-timeout-ms", "\(electionTimeoutMs)", "--log-level", "notice",
        ]
        if joins {
            arguments.append("--join")
        } else {
            arguments += ["--voters", founders.map(String.init).joined(separator: ",")]
            if !initialLearners.isEmpty { arguments += ["--learners", initialLearners.map(String.init).joined(separator: ",")] }
        }
        process.arguments = arguments + unsafeOptions
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        try? log.close()
        ChildProcesses.started(process.processIdentifier)
        state.withLock {
            $0.processes[id] = process
            $0.paused.remove(id)
        }
    }

    /// Whether node `id` has a process (running or stopped).
    func isUp(_ id: Int) -> Bool { state.withLock { $0.processes[id] != nil } }

    func isPaused(_ id: Int) -> Bool { state.withLock { $0.paused.contains(id) } }

    /// Kills node `id` with SIGKILL and reaps it.
    func kill9(_ id: Int) {
        guard let process = state.withLock({ $0.processes.removeValue(forKey: id) }) else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        ChildProcesses.ended(process.processIdentifier)
        state.withLock { _ = $0.paused.remove(id) }
    }

    func stop(_ id: Int) {
        guard let process = state.withLock({ $0.processes[id] }) else { return }
        kill(process.processIdentifier, SIGSTOP)
        state.withLock { _ = $0.paused.insert(id) }
    }

    func resume(_ id: Int) {
        guard let process = state.withLock({ $0.processes[id] }) else { return }
        kill(process.processIdentifier, SIGCONT)
        state.withLock { _ = $0.paused.remove(id) }
    }

    /// If node `id`'s process has exited on its own: its exit status.
    func exitStatus(_ id: Int) -> Int32? {
        guard let process = state.withLock({ $0.processes[id] }), !process.isRunning else { return nil }
        ChildProcesses.ended(process.processIdentifier)
        state.withLock { _ = $0.processes.removeValue(forKey: id) }
        return process.terminationStatus
    }

    /// Deletes node `id`'s data; from now on it starts empty with --join and must be added back.
    func wipe(_ id: Int) {
        try? FileManager.default.removeItem(atPath: node(id).dataDirectory)
        state.withLock { _ = $0.joined.insert(id) }
    }

    func killAll() {
        for id in ids {
            resume(id)
            kill9(id)
        }
    }
}
