import ArgumentParser
import DivanServer
import Foundation

/// `divan bench kv`: redis-benchmark against Divan's 3-node cluster, Redis with `appendfsync always`,
/// and the same load against a 3-node etcd cluster, in one run, with ratios to both peers.
struct BenchKV: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv",
        abstract: "Measure SET and GET on a Divan cluster against Redis (appendfsync always) and etcd 3.4.",
        discussion: """
            Runs redis-benchmark (-t set then -t get, -d VALUE -c CLIENTS -r KEYSPACE, with -P 1 and -P PIPELINE) \
            against (a) a 3-node Divan cluster started as `divan up` does (release build of this executable, \
            RocksDB, fsync on), (b) redis-server with appendonly yes and appendfsync always, and (c) a 3-node \
            etcd cluster driven through its v3 HTTP/JSON gateway by a load generator in this command (put, and \
            linearizable range) with CLIENTS x P connections. Every system runs alone, on loopback, with its \
            data in a temporary directory, and every request goes to the leader. Needs redis-server, \
            redis-benchmark and etcd (scripts/bench-kv installs them). Ctrl-C stops everything it started.
            """)

    @Option(help: "Concurrent clients (redis-benchmark -c).") var clients = 50
    @Option(help: "Value size in bytes (redis-benchmark -d).") var valueSize = 100
    @Option(help: "Random keys drawn from this many (redis-benchmark -r).") var keyspace = 100_000
    @Option(help: "Requests per test without pipelining (redis-benchmark -n with -P 1).") var requests = 50_000
    @Option(help: "Commands per pipeline in the pipelined tests (redis-benchmark -P).") var pipeline = 16
    @Option(help: "Requests per pipelined test (redis-benchmark -n with -P PIPELINE).") var pipelinedRequests = 200_000
    @Option(help: "Systems to measure, comma-separated: divan, redis, etcd.") var systems = "divan,redis,etcd"
    @Option(help: "Record a CPU profile (perf record -g) of the Divan leader during the pipelined SET test into this file.")
    var profile: String?

    func validate() throws {
        guard clients > 0, valueSize > 0, keyspace > 0, requests > 0, pipeline > 1, pipelinedRequests > 0 else {
            throw ValidationError("every count must be positive, and --pipeline more than 1")
        }
        let unknown = Set(systemList).subtracting(["divan", "redis", "etcd"])
        guard unknown.isEmpty else { throw ValidationError("unknown systems: \(unknown.sorted())") }
    }

    private var systemList: [String] { systems.split(separator: ",").map(String.init) }

    func run() async throws {
        let needed = (systemList.contains("redis") ? ["redis-server"] : []) + (systemList.contains("etcd") ? ["etcd"] : [])
            + (systemList.contains("divan") || systemList.contains("redis") ? ["redis-benchmark", "redis-cli"] : [])
            + (profile == nil ? [] : ["perf"])
        for tool in needed where executable(tool) == nil {
            throw ValidationError("\(tool) is not installed (scripts/bench-kv installs redis-server, redis-tools, etcd-server, linux-perf)")
        }
        let children = try BenchChildren(scratchNamed: "kv")
        let signals = children.stopOnSignals()
        defer {
            children.stopAllAndClean()
            signals.forEach { $0.cancel() }
        }
        say("divan bench kv: \(clients) clients, \(valueSize)-byte values, random keys of \(keyspace), -P 1 (\(requests) requests) and -P \(pipeline) (\(pipelinedRequests) requests); data in \(children.directory)")
        say("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, load average \(loadAverage())")
        var rows: [Row] = []
        for system in systemList {
            switch system {
            case "divan": rows += try await measureDivan(children)
            case "redis": rows += try await measureRedis(children)
            default: rows += try await measureEtcd(children)
            }
        }
        print("")
        printTables(rows)
    }

    // MARK: - The systems

    private func measureDivan(_ children: BenchChildren) async throws -> [Row] {
        let cluster = try LocalProcessCluster(
            directory: children.directory + "/divan", electionTimeoutMs: 1_000, priorities: nil, engine: "rocksdb", learners: 0)
        defer {
            for node in cluster.nodes { if let process = node.process { children.release(process.processIdentifier) } }
            cluster.stopAll()
        }
        try await cluster.startAll()
        for node in cluster.nodes { if let process = node.process { children.adopt(process.processIdentifier) } }
        guard await cluster.waitForLeader(within: 30) != nil, await cluster.waitUntilServing(within: 30) else {
            throw ValidationError("the Divan cluster did not elect leaders within 30 s")
        }
        var leader: LocalProcessCluster.Node?
        _ = await waitUntil(seconds: 10) {
            leader = await regionLeader(of: cluster)
            return leader != nil
        }
        guard let leader, let leaderProcess = leader.process else { throw ValidationError("no region leader in the Divan cluster") }
        let version = "Divan (this build), 3 nodes, RocksDB, fsync on"
        say("\(version): region leader is node \(leader.id), RESP 127.0.0.1:\(leader.respPort), load average \(loadAverage())")
        let servers = cluster.nodes.compactMap { $0.process?.processIdentifier }
        return try await redisBenchmarkRows(
            system: version, port: leader.respPort, servers: servers, children: children,
            profiled: profile.map { ($0, leaderProcess.processIdentifier) })
    }

    private func measureRedis(_ children: BenchChildren) async throws -> [Row] {
        let directory = children.directory + "/redis"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let port = try freeLoopbackPort()
        let server = try children.launch(executable("redis-server")!, [
            "--port", "\(port)", "--bind", "127.0.0.1", "--dir", directory, "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--protected-mode", "no", "--daemonize", "no", "--logfile", directory + "/redis.log",
        ])
        defer { children.stop(server) }
        guard await waitUntil(seconds: 10, { output(of: executable("redis-cli")!, ["-p", "\(port)", "PING"])?.hasPrefix("PONG") == true }) else {
            throw ValidationError("redis-server did not answer PING within 10 s")
        }
        let version = output(of: executable("redis-server")!, ["--version"])?.split(separator: " ").first { $0.hasPrefix("v=") }?.dropFirst(2) ?? "?"
        let name = "Redis \(version), appendonly yes, appendfsync always"
        say("\(name): 127.0.0.1:\(port), load average \(loadAverage())")
        return try await redisBenchmarkRows(system: name, port: port, servers: [server.pid], children: children, profiled: nil)
    }

    private func measureEtcd(_ children: BenchChildren) async throws -> [Row] {
        let members = try (1...3).map { (name: "etcd\($0)", client: try freeLoopbackPort(), peer: try freeLoopbackPort()) }
        let initialCluster = members.map { "\($0.name)=http://127.0.0.1:\($0.peer)" }.joined(separator: ",")
        var servers: [ChildProcess] = []
        defer { servers.forEach { children.stop($0) } }
        for member in members {
            servers.append(try children.launch(executable("etcd")!, [
                "--name", member.name, "--data-dir", "\(children.directory)/etcd/\(member.name)",
                "--listen-client-urls", "http://127.0.0.1:\(member.client)", "--advertise-client-urls", "http://127.0.0.1:\(member.client)",
                "--listen-peer-urls", "http://127.0.0.1:\(member.peer)", "--initial-advertise-peer-urls", "http://127.0.0.1:\(member.peer)",
                "--initial-cluster", initialCluster, "--initial-cluster-token", "divan-bench-kv", "--initial-cluster-state", "new",
                "--logger", "zap", "--log-level", "warn",
            ], log: "\(children.directory)/\(member.name).log"))
        }
        var leaderPort: Int?
        _ = await waitUntil(seconds: 30) {
            leaderPort = await etcdLeaderClientPort(members.map(\.client))
            return leaderPort != nil
        }
        guard let leaderPort else { throw ValidationError("the etcd cluster did not elect a leader within 30 s") }
        let version = output(of: executable("etcd")!, ["--version"])?.split(separator: "\n").first?.split(separator: " ").last ?? "?"
        let name = "etcd \(version), 3 nodes"
        say("\(name): leader's client URL http://127.0.0.1:\(leaderPort), load average \(loadAverage())")
        var rows: [Row] = []
        for (pipeline, count) in [(1, requests), (pipeline, pipelinedRequests)] {
            let load = EtcdLoad(port: leaderPort, connections: clients * pipeline, requests: count, valueSize: valueSize, keyspace: keyspace)
            for (test, operation) in [("SET", EtcdLoad.Operation.put), ("GET", .range)] {
                let before = cpuSeconds(servers.map(\.pid))
                let result = try await load.run(operation)
                let cpu = cpuSeconds(servers.map(\.pid)) - before
                let command = "divan bench kv load generator: POST /v3/kv/\(operation.rawValue), \(clients * pipeline) connections x 1 in flight, -d \(valueSize) -r \(keyspace) -n \(count)"
                rows.append(Row(system: name, test: test, pipeline: pipeline, result: result, cpuMicroseconds: cpu / Double(count) * 1e6, command: command))
                say(rows.last!.summary)
            }
        }
        return rows
    }

    /// redis-benchmark SET then GET, with -P 1 and -P `pipeline`, against one RESP port.
    private func redisBenchmarkRows(
        system: String, port: Int, servers: [pid_t], children: BenchChildren, profiled: (path: String, pid: pid_t)?
    ) async throws -> [Row] {
        var rows: [Row] = []
        for (pipeline, count) in [(1, requests), (pipeline, pipelinedRequests)] {
            for test in ["SET", "GET"] {
                let arguments = [
                    "-h", "127.0.0.1", "-p", "\(port)", "-t", test.lowercased(), "-d", "\(valueSize)", "-c", "\(clients)",
                    "-P", "\(pipeline)", "-r", "\(keyspace)", "-n", "\(count)", "--csv",
                ]
                let perf = try profiled.flatMap { profiled in
                    test == "SET" && pipeline > 1
                        ? try children.launch(executable("perf")!, ["record", "-F", "999", "-g", "-p", "\(profiled.pid)", "-o", profiled.path], log: profiled.path + ".log")
                        : nil
                }
                let before = cpuSeconds(servers)
                let result = try runRedisBenchmark(arguments, test: test, children: children)
                let cpu = cpuSeconds(servers) - before
                if let perf, let profiled {
                    kill(perf.pid, SIGINT)
                    perf.waitUntilExit()
                    children.release(perf.pid)
                    say("CPU profile of the Divan leader during SET -P \(pipeline): \(profiled.path) (perf report -i \(profiled.path) --no-children)")
                }
                let command = "redis-benchmark " + arguments.joined(separator: " ")
                rows.append(Row(system: system, test: test, pipeline: pipeline, result: result, cpuMicroseconds: cpu / Double(count) * 1e6, command: command))
                say(rows.last!.summary)
            }
        }
        return rows
    }

    /// Runs redis-benchmark with `--csv` and reads the row of `test`; error replies are counted.
    private func runRedisBenchmark(_ arguments: [String], test: String, children: BenchChildren) throws -> LoadResult {
        let log = children.directory + "/redis-benchmark.log"
        let process = try children.launch(executable("redis-benchmark")!, arguments, log: log)
        process.waitUntilExit()
        children.release(process.pid)
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let errorCount = text.split(separator: "\n").filter { !$0.hasPrefix("\"") && ($0.contains("Error") || $0.contains("ERR")) }.count
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
            guard fields.count >= 7, fields[0] == test, let rate = Double(fields[1]), let p50 = Double(fields[4]), let p99 = Double(fields[6])
            else { continue }
            return LoadResult(requestsPerSecond: rate, p50Milliseconds: p50, p99Milliseconds: p99, errors: errorCount)
        }
        throw ValidationError("redis-benchmark printed no \(test) result: \(text.prefix(1_000))")
    }

    // MARK: - Output

    /// One measurement: a system, a test and a pipeline depth.
    private struct Row {
        var system: String
        var test: String
        var pipeline: Int
        var result: LoadResult
        /// CPU time of all the system's server processes per request.
        var cpuMicroseconds: Double
        var command: String

        var summary: String {
            "\(system): \(test) -P \(pipeline): \(format(result.requestsPerSecond, 0)) req/s, p50 \(format(result.p50Milliseconds, 3)) ms, p99 \(format(result.p99Milliseconds, 3)) ms, server CPU \(format(cpuMicroseconds, 0)) µs/req, errors \(result.errors)"
        }
    }

    private func printTables(_ rows: [Row]) {
        print("| system | test | -P | req/s | p50 ms | p99 ms | server CPU µs/req | errors |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for row in rows {
            print("| \(row.system) | \(row.test) | \(row.pipeline) | \(format(row.result.requestsPerSecond, 0)) | \(format(row.result.p50Milliseconds, 3)) | \(format(row.result.p99Milliseconds, 3)) | \(format(row.cpuMicroseconds, 0)) | \(row.result.errors) |")
        }
        let divan = rows.filter { $0.system.hasPrefix("Divan") }
        if !divan.isEmpty {
            print("")
            print("| test | -P | Divan ÷ etcd (req/s) | goal | Divan ÷ Redis (req/s) | goal |")
            print("|---|---:|---:|---|---:|---|")
            for row in divan {
                func ratio(_ prefix: String) -> String {
                    guard let peer = rows.first(where: { $0.system.hasPrefix(prefix) && $0.test == row.test && $0.pipeline == row.pipeline })
                    else { return "—" }
                    return format(row.result.requestsPerSecond / peer.result.requestsPerSecond, 2) + "×"
                }
                let redisGoal = row.test == "SET" ? "≥ 1×" : "none"
                print("| \(row.test) | \(row.pipeline) | \(ratio("etcd")) | ≥ 2× | \(ratio("Redis")) | \(redisGoal) |")
            }
        }
        print("")
        print("Commands:")
        for row in rows { print("  \(row.system): \(row.command)") }
    }

    // MARK: - Helpers

    /// The node leading the data region (the one all keys of this benchmark fall in).
    private func regionLeader(of cluster: LocalProcessCluster) async -> LocalProcessCluster.Node? {
        for node in cluster.nodes where node.process != nil {
            guard let status = await cluster.request(node, "GET", "/status"), status.status == 200,
                  let json = try? JSONSerialization.jsonObject(with: Data(status.body.utf8)) as? [String: Any],
                  let regions = json["regions"] as? [[String: Any]],
                  let leader = regions.compactMap({ $0["leader"] as? Int }).first else { continue }
            return cluster.nodes.first { $0.id == UInt64(leader) && $0.process != nil }
        }
        return nil
    }

    /// The client port of the etcd member that every member names as leader.
    private func etcdLeaderClientPort(_ ports: [Int]) async -> Int? {
        var leaders: Set<String> = []
        var memberPorts: [String: Int] = [:]
        for port in ports {
            guard let answer = await NodeHTTPClient.request(port: port, "POST", "/v3/maintenance/status", body: "{}"),
                  answer.status == 200,
                  let json = try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any],
                  let header = json["header"] as? [String: Any], let member = header["member_id"] as? String,
                  let leader = json["leader"] as? String, leader != "0" else { return nil }
            leaders.insert(leader)
            memberPorts[member] = port
        }
        guard leaders.count == 1, let port = memberPorts[leaders.first!] else { return nil }
        let put = await NodeHTTPClient.request(port: port, "POST", "/v3/kv/put", body: "{\"key\":\"cmVhZHk=\",\"value\":\"MQ==\"}")
        return put?.status == 200 ? port : nil
    }
}

/// `value` with `digits` decimals and thousands separators for whole numbers.
private func format(_ value: Double, _ digits: Int) -> String {
    guard value.isFinite else { return "\(value)" }
    if digits > 0 { return String(format: "%.\(digits)f", value) }
    let formatter = NumberFormatter()
    formatter.numberStyle = .decimal
    formatter.maximumFractionDigits = 0
    return formatter.string(from: NSNumber(value: value.rounded())) ?? "\(Int(value.rounded()))"
}
