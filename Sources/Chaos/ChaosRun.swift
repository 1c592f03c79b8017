import Foundation
import Linearizability

/// What one chaos run does: the cluster, the clients, the nemesis and where the results go.
public struct ChaosOptions: Sendable {
    public var seed: UInt64
    /// Seconds of workload under faults (the heal, the recovery and the check come after).
    public var duration: Double
    public var nodes = 5
    /// The founding voters are nodes 1...voters; the others start as learners.
    public var voters = 3
    public var clients = 8
    public var keys = 5
    /// Operations per second, all clients together.
    public var rate: Double = 200
    /// Seconds a client waits for a reply before it records an unknown outcome.
    public var operationTimeout: Double = 2
    public var electionTimeoutMs = 500
    public var faults: [FaultKind] = FaultKind.allCases
    /// Passed to every node (`--unsafe-stale-reads`, `--unsafe-no-fsync`): the harness must catch them.
    public var unsafeServerOptions: [String] = []
    /// Where the history, the nemesis log, the timeline, the report and the nodes' logs go.
    public var outputDirectory: String
    /// The `divan` executable to run `divan server` from.
    public var serverExecutable: String
    /// Keep the nodes' data directories even when the run passes.
    public var keepsData = false
    /// Picks a free loopback port for each node's listeners; a node keeps its ports across restarts.
    public var freePort: @Sendable () throws -> Int

    public init(
        seed: UInt64, duration: Double, outputDirectory: String, serverExecutable: String, freePort: @escaping @Sendable () throws -> Int
    ) {
        self.seed = seed
        self.duration = duration
        self.outputDirectory = outputDirectory
        self.serverExecutable = serverExecutable
        self.freePort = freePort
    }
}

/// How a run ended.
public enum ChaosVerdict: Sendable, Equatable {
    /// Every key's history is linearizable and every node serves every acknowledged write.
    case passed
    /// The history is not linearizable, or the nodes' final reads disagree: a consistency bug.
    case violation
    /// The harness could not decide: the cluster did not start or recover, or the checker timed out.
    case inconclusive
}

/// A whole chaos run: start the cluster behind the relay, run the clients and the nemesis, heal,
/// wait for recovery, read every key through every node, check the history and write the results.
public enum ChaosRun {
    public static func run(_ options: ChaosOptions, log: @escaping @Sendable (String) -> Void) throws -> (ChaosVerdict, String) {
        let output = URL(fileURLWithPath: options.outputDirectory).standardizedFileURL.path
        try FileManager.default.createDirectory(atPath: "\(output)/nodes", withIntermediateDirectories: true)
        try ChildProcesses.startWatchdog(listingServersIn: "\(output)/nodes/server-pids")
        let ids = Array(1...options.nodes)
        let nodes = try ids.map { id in
            ServerNode(
                id: id, raftPort: try options.freePort(), httpPort: try options.freePort(), respPort: try options.freePort(),
                dataDirectory: "\(output)/nodes/node-\(id)", logFile: "\(output)/nodes/node-\(id).log")
        }
        let relay = try Relay(nodes: ids) { id in nodes[id - 1].raftPort }
        let founders = Array(1...min(options.voters, options.nodes))
        let servers = ServerProcesses(
            nodes: nodes, founders: founders, learners: ids.filter { !founders.contains($0) },
            executable: options.serverExecutable, electionTimeoutMs: options.electionTimeoutMs, unsafeOptions: options.unsafeServerOptions)
        defer {
            servers.killAll()
            relay.shutdown()
        }
        let cluster = ClusterControl(servers: servers, relay: relay)
        let clock = RunClock()
        log("divan chaos: seed \(options.seed), \(options.nodes) nodes (voters \(founders), learners \(servers.initialLearners)), "
            + "\(options.clients) clients, \(options.keys) keys, faults \(options.faults.map(\.rawValue).joined(separator: ","))"
            + (options.unsafeServerOptions.isEmpty ? "" : ", UNSAFE \(options.unsafeServerOptions.joined(separator: " "))"))
        log("Raft traffic goes through a fault-injecting TCP relay (\(relay.ports.count) directed links); output in \(output)")
        for node in nodes {
            log("node \(node.id): resp 127.0.0.1:\(node.respPort), admin http://127.0.0.1:\(node.httpPort), raft 127.0.0.1:\(node.raftPort)")
            try servers.start(node.id, relay: relay)
        }
        guard waitUntil(within: 60, { ids.allSatisfy(cluster.isReady) }) else {
            return (.inconclusive, "the cluster did not become ready within 60 s (logs in \(output)/nodes)")
        }
        log(String(format: "cluster ready after %.1f s; running the workload for %.0f s", clock.seconds, options.duration))

        var random = SeededRandom(seed: options.seed)
        let workloadRandom = random.fork(), nemesisRandom = random.fork()
        let recorder = HistoryRecorder(clock: clock)
        let keys = (0..<options.keys).map { "k\($0)" }
        let workload = Workload(
            clients: options.clients, keys: keys, rate: options.rate, timeout: options.operationTimeout,
            respPorts: Dictionary(uniqueKeysWithValues: nodes.map { ($0.id, $0.respPort) }))
        let nemesis = Nemesis(cluster: cluster, kinds: options.faults, clock: clock, log: log)
        let workloadStart = clock.seconds
        let end = workloadStart + options.duration
        let faults = Shared<[FaultRecord]>([])
        runOnThreads([
            { workload.run(until: end, recorder: recorder, random: workloadRandom) },
            { faults.update { $0 = nemesis.run(until: end, random: nemesisRandom) } },
        ])

        let healStart = clock.seconds
        log("healing: every link open, every node running")
        relay.block([])
        for id in ids {
            servers.resume(id)
            // A node that exited on its own (refusing its disk, say) is started again too.
            if servers.exitStatus(id) != nil || !servers.isUp(id) { try servers.start(id, relay: relay) }
        }
        var healNotes: [String] = []
        for id in cluster.broken.value.sorted() {
            servers.kill9(id)
            healNotes.append("node \(id) was broken by a fault: " + (cluster.rejoin(id) ?? "replaced by an empty one"))
        }
        if !waitUntil(within: 20, { cluster.membershipSettled() }) {
            let (voters, learners) = cluster.membership.value
            for id in ids where !voters.contains(id) && !learners.contains(id) {
                healNotes.append("node \(id) was out of the cluster: " + (cluster.rejoin(id) ?? "rejoined"))
            }
        }
        // Recovered: every node knows its groups' leaders and takes a write.
        func unrecovered() -> [String] {
            ids.compactMap { id in
                guard cluster.isReady(id) else { return "node \(id) not ready" }
                let reply = try? RESPClient(port: servers.node(id).respPort).call(["SET", "chaos:probe", "\(id)"], timeout: 2)
                return reply == .simple("OK") ? nil : "node \(id) answers a write with \(reply.map { "\($0)" } ?? "nothing")"
            }
        }
        let recovered = waitUntil(within: 60) { unrecovered().isEmpty }
        let recovery = clock.seconds - healStart
        if recovered {
            log(String(format: "recovered %.1f s after the heal", recovery))
        } else {
            healNotes += unrecovered()
            log("NOT recovered 60 s after the heal: \(unrecovered().joined(separator: "; "))")
        }

        let finalReads = readEverything(keys: keys, cluster: cluster, recorder: recorder)
        let history = recorder.events
        let historyText = history.map(\.jsonLine).joined(separator: "\n") + "\n"
        try historyText.write(toFile: "\(output)/history.jsonl", atomically: true, encoding: .utf8)
        let faultRecords = faults.value
        try (faultRecords.map(\.jsonLine).joined(separator: "\n") + "\n").write(toFile: "\(output)/nemesis.jsonl", atomically: true, encoding: .utf8)

        let checkStart = ContinuousClock.now
        // Long runs make long histories: the limit grows with the run, never below two minutes.
        let checkLimit = max(120, options.duration / 10)
        let result = Checker(model: .casRegister, timeout: .seconds(checkLimit)).check(try HistoryFile.parse(historyText, model: .casRegister))
        let checkTime = checkStart.duration(to: .now)
        var verdict: ChaosVerdict
        var resultText: String
        switch result {
        case .linearizable:
            verdict = .passed
            resultText = "linearizable: every key's history (\(keys.count) keys) has a valid order"
        case .notLinearizable(let violation):
            verdict = .violation
            let culprit = violation.culprit
            let node = recorder.samples.first { $0.process == culprit.process && $0.invoked == culprit.invokeTime }?.node
            resultText = "NOT LINEARIZABLE\n\(violation)" + (node.map { "\nThe culprit's request went to node \($0)." } ?? "")
            try Timeline.html(for: violation).write(toFile: "\(output)/violation.html", atomically: true, encoding: .utf8)
        case .unknown:
            verdict = .inconclusive
            resultText = "unknown: the checker gave up after \(Int(checkLimit)) s"
        }
        if let disagreement = finalReads.disagreement {
            verdict = .violation
            resultText += "\nFINAL READS DISAGREE: \(disagreement)"
        }
        if let unread = finalReads.unread, verdict == .passed {
            verdict = .inconclusive
            resultText += "\n\(unread)"
        }
        if !recovered, verdict == .passed {
            verdict = .inconclusive
            resultText += "\nthe cluster did not recover within 60 s of the heal"
        }
        let report = Report(
            options: options, samples: recorder.samples, faults: faultRecords, workloadStart: workloadStart, healStart: healStart,
            recovery: recovered ? recovery : nil, healNotes: healNotes, finalReads: finalReads, result: resultText,
            checkSeconds: Double(checkTime.components.seconds) + Double(checkTime.components.attoseconds) / 1e18, output: output)
        let text = report.text
        try text.write(toFile: "\(output)/report.txt", atomically: true, encoding: .utf8)
        try report.svg.write(toFile: "\(output)/timeline.svg", atomically: true, encoding: .utf8)
        servers.killAll()
        if verdict == .passed, !options.keepsData {
            for node in nodes { try? FileManager.default.removeItem(atPath: node.dataDirectory) }
        }
        return (verdict, text)
    }

    /// The final reads: every key through every node, recorded in the history (processes 1000 + node),
    /// repeated until all nodes agree or 20 s pass.
    static func readEverything(keys: [String], cluster: ClusterControl, recorder: HistoryRecorder) -> FinalReads {
        var reads = FinalReads(keys: keys, nodes: cluster.ids)
        let deadline = ContinuousClock.now + .seconds(20)
        repeat {
            reads.values = [:]
            for id in cluster.ids {
                let client = RESPClient(port: cluster.servers.node(id).respPort)
                for key in keys {
                    let process = 1000 + id
                    recorder.record(process: process, .invoke, .read, key: key, value: .value(.null))
                    let outcome = perform(.read, key: key, value: .value(.null), on: client, timeout: 3)
                    recorder.record(process: process, outcome.kind, .read, key: key, value: .value(outcome.value))
                    if outcome.kind == .ok { reads.values[key, default: [:]][id] = outcome.value }
                    reads.count += 1
                }
            }
            if reads.disagreement == nil, reads.unread == nil { break }
            pause(0.5)
        } while ContinuousClock.now < deadline
        return reads
    }
}

/// The final read of every key through every node.
struct FinalReads: Sendable {
    var keys: [String]
    var nodes: [Int]
    /// What each node read, by key, in the last round.
    var values: [String: [Int: Value]] = [:]
    /// Reads made in all rounds.
    var count = 0

    /// A key that two nodes read differently.
    var disagreement: String? {
        for key in keys {
            guard let byNode = values[key], Set(byNode.values).count > 1 else { continue }
            return "key \(key): " + byNode.sorted { $0.key < $1.key }.map { "node \($0.key) reads \($0.value)" }.joined(separator: ", ")
        }
        return nil
    }

    /// A key some node could not read.
    var unread: String? {
        for key in keys {
            let missing = nodes.filter { values[key]?[$0] == nil }
            if !missing.isEmpty { return "key \(key) could not be read on node(s) \(missing)" }
        }
        return nil
    }
}
