import ArgumentParser
import DivanServer
import Foundation
import RaftSimulation
import Synchronization

/// `divan up`: starts a local 3-node Divan cluster as three `divan server` processes and shows it working.
struct UpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start a local 3-node cluster and show it working.",
        discussion: """
            Starts three `divan server` processes on 127.0.0.1 (ports the OS picks), each with its own data \
            directory, then: writes through the leader, a linearizable read on a follower, the leader killed \
            with SIGKILL, a new election, more writes, and the old leader restarted from its disk. Then it \
            keeps the cluster running and prints leader changes until Ctrl-C, which stops all three cleanly.
            """)

    @Option(help: "Where the nodes keep their data (default: a new temporary directory, removed at exit).")
    var dataDir: String?

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
        let directory = dataDir ?? NSTemporaryDirectory() + "divan-up-\(getpid())"
        let cluster = try LocalProcessCluster(directory: directory, electionTimeoutMs: electionTimeoutMs, priorities: priorities)
        defer {
            cluster.stopAll()
            if dataDir == nil { try? FileManager.default.removeItem(atPath: directory) }
        }
        try await cluster.startAll()
        let succeeded = await cluster.demonstrate()
        guard succeeded else { throw ExitCode.failure }
        if exitAfterDemo { return }
        say("the cluster keeps running; Ctrl-C stops all three nodes")
        await cluster.watchUntilInterrupted()
    }
}

func say(_ line: String) {
    let seconds = Int(Date().timeIntervalSince1970) % 86_400
    let time = [seconds / 3_600, seconds / 60 % 60, seconds % 60].map { $0 < 10 ? "0\($0)" : "\($0)" }.joined(separator: ":")
    print("[\(time)] \(line)")
    fflush(nil)
}

/// Three `divan server` child processes on loopback, and an HTTP client for them.
final class LocalProcessCluster: @unchecked Sendable {
    struct Node {
        let id: UInt64
        let raftPort: Int
        let httpPort: Int
        var process: Process?
    }

    let directory: String
    let electionTimeoutMs: Int
    let priorities: String?
    var nodes: [Node] = []
    let executable: String

    init(directory: String, electionTimeoutMs: Int, priorities: String?) throws {
        self.directory = directory
        self.electionTimeoutMs = electionTimeoutMs
        self.priorities = priorities
        executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let ports = try (0..<6).map { _ in try freeLoopbackPort() }
        nodes = (0..<3).map { Node(id: UInt64($0 + 1), raftPort: ports[$0], httpPort: ports[$0 + 3], process: nil) }
    }

    var peers: String { nodes.map { "\($0.id)=127.0.0.1:\($0.raftPort)" }.joined(separator: ",") }

    func startAll() async throws {
        say("starting 3 nodes in \(directory) (election timeout \(electionTimeoutMs) ms)")
        for index in nodes.indices { try start(index) }
        for node in nodes {
            say("node \(node.id): raft 127.0.0.1:\(node.raftPort), http://127.0.0.1:\(node.httpPort)")
        }
    }

    func start(_ index: Int) throws {
        let node = nodes[index]
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = [
            "server", "--id", "\(node.id)", "--listen", "127.0.0.1:\(node.raftPort)",
            "--http", "127.0.0.1:\(node.httpPort)", "--peers", peers, "--data-dir", "\(directory)/node-\(node.id)",
            "--election-timeout-ms", "\(electionTimeoutMs)", "--log-level", "warning",
        ] + (priorities.map { ["--priorities", $0] } ?? [])
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
        say("node \(first.id) is the leader")
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
