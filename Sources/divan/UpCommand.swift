import ArgumentParser
import DivanServer
import Foundation
import RaftSimulation
import Synchronization

/// `divan up`: starts a local 3-node Divan KV cluster as three `divan server` processes, each with a
/// Redis-protocol port, and shows it working.
struct UpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start a local 3-node Divan KV cluster (Redis protocol) and show it working.",
        discussion: """
            Starts three `divan server` processes on 127.0.0.1 (RocksDB, fsync on), each with its own data \
            directory under --data-dir and a RESP port any Redis client can use, then: writes on one node, a \
            linearizable read on another, the leader killed with SIGKILL, a new election, more writes, and the \
            old leader restarted from its disk. Then it keeps the cluster running, prints leader changes and a \
            redis-cli line to try, until Ctrl-C stops every node cleanly. Run it again on the same --data-dir \
            and the cluster comes back with its data.
            """)

    @Option(help: "Where the nodes keep their data; kept at exit, so a second run restarts on it.")
    var dataDir = "divan-data"

    @Option(help: "Storage engine of every node: rocksdb or memory.")
    var engine = "rocksdb"

    @Option(help: "Learner nodes to add (non-voting replicas whose RESP ports serve linearizable reads).")
    var learners = 0

    @Option(help: "Election timeout in milliseconds.")
    var electionTimeoutMs = 1_000

    @Option(help: "Election priorities passed to every node, e.g. 1=100,2=50,3=50.")
    var priorities: String?

    @Flag(help: "Stop the cluster after the demonstration instead of running until Ctrl-C.")
    var exitAfterDemo = false

    @Flag(help: "Play the story in one process on virtual time instead (no sockets, no disks).")
    var simulated = false

    func run() async throws {
        if simulated {
            print("divan up --simulated: a 3-node Raft cluster in one process (simulated network and disks)")
            guard ClusterDemo(seed: 1, output: { print($0) }).run() else { throw ExitCode.failure }
            return
        }
        let directory = URL(fileURLWithPath: dataDir).standardizedFileURL.path
        let cluster = try LocalProcessCluster(
            directory: directory, electionTimeoutMs: electionTimeoutMs, priorities: priorities, engine: engine, learners: learners)
        defer { cluster.stopAll() }
        try await cluster.startAll()
        let succeeded = await cluster.demonstrate()
        guard succeeded else { throw ExitCode.failure }
        cluster.printEndpoints()
        if exitAfterDemo { return }
        say("the cluster keeps running; Ctrl-C stops every node (data stays in \(directory))")
        await cluster.watchUntilInterrupted()
    }
}

func say(_ line: String) {
    let seconds = Int(Date().timeIntervalSince1970) % 86_400
    let time = [seconds / 3_600, seconds / 60 % 60, seconds % 60].map { $0 < 10 ? "0\($0)" : "\($0)" }.joined(separator: ":")
    print("[\(time)] \(line)")
    fflush(nil)
}

/// `divan server` child processes on loopback (three voters and any learners), and an HTTP client for them.
final class LocalProcessCluster: @unchecked Sendable {
    struct Node {
        let id: UInt64
        let isLearner: Bool
        let raftPort: Int
        let httpPort: Int
        let respPort: Int
        var process: Process?
    }

    let directory: String
    let electionTimeoutMs: Int
    let priorities: String?
    let engine: String
    var nodes: [Node] = []
    let executable: String

    init(directory: String, electionTimeoutMs: Int, priorities: String?, engine: String, learners: Int) throws {
        self.directory = directory
        self.electionTimeoutMs = electionTimeoutMs
        self.priorities = priorities
        self.engine = engine
        executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        nodes = try (0..<(3 + learners)).map { index in
            // Redis's own port plus one and up when free, so the redis-cli line is easy to type.
            Node(
                id: UInt64(index + 1), isLearner: index >= 3, raftPort: try freeLoopbackPort(),
                httpPort: try freeLoopbackPort(), respPort: try loopbackPort(preferring: 6380 + index), process: nil)
        }
    }

    var peers: String { nodes.map { "\($0.id)=127.0.0.1:\($0.raftPort)" }.joined(separator: ",") }
    var voters: [Node] { nodes.filter { !$0.isLearner } }

    func startAll() async throws {
        say("starting \(nodes.count) nodes in \(directory) (\(engine), fsync on, election timeout \(electionTimeoutMs) ms)")
        for index in nodes.indices { try start(index) }
        printEndpoints()
    }

    func printEndpoints() {
        for node in nodes {
            say("node \(node.id)\(node.isLearner ? " (learner)" : "")  resp 127.0.0.1:\(node.respPort)  admin http://127.0.0.1:\(node.httpPort)")
        }
        say("try: redis-cli -p \(nodes[0].respPort) SET hello world   then: redis-cli -p \(nodes[nodes.count - 1].respPort) GET hello")
    }

    func start(_ index: Int) throws {
        let node = nodes[index]
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        let learnerList = nodes.filter(\.isLearner).map { "\($0.id)" }.joined(separator: ",")
        process.arguments = [
            "server", "--id", "\(node.id)", "--listen", "127.0.0.1:\(node.raftPort)",
            "--http", "127.0.0.1:\(node.httpPort)", "--resp", "127.0.0.1:\(node.respPort)", "--peers", peers,
            "--data-dir", "\(directory)/node-\(node.id)", "--engine", engine,
            "--election-timeout-ms", "\(electionTimeoutMs)", "--log-level", "warning",
        ] + (priorities.map { ["--priorities", $0] } ?? []) + (learnerList.isEmpty ? [] : ["--learners", learnerList])
        try process.run()
        nodes[index].process = process
    }

    func kill9(_ index: Int) {
        guard let process = nodes[index].process else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        nodes[index].process = nil
    }

    func stopAll() {
        for index in nodes.indices {
            guard let process = nodes[index].process else { continue }
            process.terminate()
            process.waitUntilExit()
            nodes[index].process = nil
        }
    }

    // MARK: - HTTP

    func request(_ node: Node, _ method: String, _ path: String, body: String? = nil) async -> (status: Int, body: String)? {
        await NodeHTTPClient.request(port: node.httpPort, method, path, body: body)
    }

    /// The node every live node agrees leads, if they agree.
    func leader() async -> Node? {
        var seen: Set<String> = []
        for node in nodes where node.process != nil {
            guard let status = await request(node, "GET", "/status"), status.status == 200,
                  let leader = field("leader", in: status.body), leader != "null" else { return nil }
            seen.insert(leader)
        }
        guard seen.count == 1, let id = UInt64(seen.first!) else { return nil }
        return nodes.first { $0.id == id && $0.process != nil }
    }

    func field(_ name: String, in json: String) -> String? {
        guard let range = json.range(of: "\"\(name)\": ") else { return nil }
        return String(json[range.upperBound...].prefix { $0 != "," && $0 != "}" })
    }

    func waitForLeader(id: UInt64, within seconds: Double) async -> Node? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let leader = await leader(), leader.id == id { return leader }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }

    func waitForLeader(within seconds: Double) async -> Node? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let leader = await leader() { return leader }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }

    // MARK: - The demonstration

    func demonstrate() async -> Bool {
        let electionSeconds = Double(electionTimeoutMs) / 1000
        guard let first = await waitForLeader(within: 10 + 3 * electionSeconds) else { return fail("no leader elected") }
        guard await waitUntilServing(within: 10 + 3 * electionSeconds) else { return fail("the cluster does not serve") }
        say("node \(first.id) leads the placement driver; every region has a leader")
        for (key, value) in [("city", "Istanbul"), ("river", "Bosphorus"), ("bridge", "Galata")] {
            guard let answer = await request(first, "PUT", "/kv/\(key)", body: value), answer.status == 200 else {
                return fail("PUT \(key) failed")
            }
            say("PUT \(key)=\(value) committed")
        }
        let follower = nodes.first { $0.id != first.id }!
        guard let read = await request(follower, "GET", "/kv/bridge"), read.body == "Galata" else {
            return fail("a linearizable read on follower \(follower.id) did not see the last write")
        }
        say("GET bridge on follower \(follower.id): \(read.body) (linearizable read through ReadIndex)")
        if let writer = nodes.first, let reader = nodes.last,
           let set = redisCLI(writer.respPort, ["SET", "greeting", "merhaba"]), set == "OK",
           let get = redisCLI(reader.respPort, ["GET", "greeting"]) {
            say("redis-cli -p \(writer.respPort) SET greeting merhaba: \(set); redis-cli -p \(reader.respPort) GET greeting: \(get)")
        }

        let firstIndex = nodes.firstIndex { $0.id == first.id }!
        say("killing node \(first.id), the leader, with SIGKILL")
        let killed = Date()
        kill9(firstIndex)
        guard let second = await waitForLeader(within: 10 + 3 * electionSeconds) else { return fail("no new leader") }
        let elapsed = Int(Date().timeIntervalSince(killed) * 1000)
        say("node \(second.id) leads after \(elapsed) ms")
        guard let write = await request(second, "PUT", "/kv/river", body: "Golden Horn"), write.status == 200 else {
            return fail("PUT after the election failed")
        }
        say("PUT river=Golden Horn committed on the 2 remaining nodes")

        say("restarting node \(first.id) from its data directory")
        do { try start(firstIndex) } catch { return fail("restart failed: \(error)") }
        let deadline = Date().addingTimeInterval(10 + 3 * electionSeconds)
        while Date() < deadline {
            if let value = await request(nodes[firstIndex], "GET", "/kv/river"), value.body == "Golden Horn" {
                let city = await request(nodes[firstIndex], "GET", "/kv/city")?.body ?? ""
                say("node \(first.id) caught up: river=\(value.body), city=\(city); no acknowledged write was lost")
                if priorities != nil, let leader = await waitForLeader(id: first.id, within: 5 + 5 * electionSeconds) {
                    say("node \(leader.id), of the highest priority, leads again (leader transfer)")
                }
                await printStatus()
                return true
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return fail("node \(first.id) did not catch up")
    }

    /// Waits until every node answers /ready (every group it holds knows a leader).
    func waitUntilServing(within seconds: Double) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            var ready = true
            for node in nodes where node.process != nil {
                if await request(node, "GET", "/ready")?.status != 200 { ready = false }
            }
            if ready { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// Runs redis-cli against a node when it is installed; nil when it is not or it failed.
    func redisCLI(_ port: Int, _ arguments: [String]) -> String? {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/redis-cli") else { return nil }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-cli")
        process.arguments = ["-p", "\(port)"] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        guard (try? process.run()) != nil else { return nil }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return process.terminationStatus == 0 ? text.trimmingCharacters(in: .whitespacesAndNewlines) : nil
    }

    func printStatus() async {
        for node in nodes where node.process != nil {
            guard let status = await request(node, "GET", "/status") else { continue }
            let parts = ["role", "term", "leader", "commit", "applied"].map { "\($0) \(field($0, in: status.body)?.replacingOccurrences(of: "\"", with: "") ?? "?")" }
            say("node \(node.id): " + parts.joined(separator: ", "))
        }
    }

    /// Prints leader changes until SIGINT or SIGTERM.
    func watchUntilInterrupted() async {
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let interrupted = Mutex(false)
        let sources = [SIGINT, SIGTERM].map { number in
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { interrupted.withLock { $0 = true } }
            source.resume()
            return source
        }
        var lastLeader: UInt64?
        while !interrupted.withLock({ $0 }) {
            let leader = await leader()?.id
            if leader != lastLeader {
                say(leader.map { "leader: node \($0)" } ?? "no leader")
                lastLeader = leader
            }
            try? await Task.sleep(for: .milliseconds(500))
        }
        sources.forEach { $0.cancel() }
        say("stopping all three nodes")
    }

    func fail(_ reason: String) -> Bool {
        say("FAILED: \(reason)")
        return false
    }
}
