import ArgumentParser
import DivanServer
import Foundation
import Logging
import Metrics
import Prometheus
import Raft
import RaftCore
import ServiceLifecycle

/// `divan server`: one Divan KV node.
struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Run one Divan KV node (regions and the placement driver over Raft, HTTP client API).",
        discussion: """
            Example: divan server --id 1 --listen 127.0.0.1:7001 --http 127.0.0.1:8001 --resp 127.0.0.1:6380 \
            --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data-dir /tmp/divan-1
            RESP: any Redis client, any command on any node (docs/resp.md).
            HTTP: GET/PUT/DELETE /kv/KEY (reads are linearizable on every node), GET /status, GET /ready.
            """)

    @Option(help: "This node's id (1 or more).")
    var id: UInt64

    @Option(help: "HOST:PORT for Raft traffic from peers.")
    var listen: String

    @Option(help: "HOST:PORT of the HTTP client API.")
    var http: String

    @Option(help: "The address of every node of the group, this one included: ID=HOST:PORT,...")
    var peers: String

    @Option(help: "The founding voters (default: every node in --peers), e.g. 1,2,3.")
    var voters: String?

    @Option(help: "Nodes that hold a non-voting replica of every group from the start, e.g. 4.")
    var learners: String?

    @Option(help: "HOST:PORT of the Redis-protocol front end (redis-cli, any Redis client).")
    var resp: String?

    @Option(help: "Require AUTH with this password on the RESP port.")
    var respPassword: String?

    @Option(help: "Storage engine: rocksdb or memory.")
    var engine = "rocksdb"

    @Option(help: "Split a region once it holds this many keys.")
    var splitKeys: Int64 = 1_000_000

    @Option(help: "Split a region once it holds this many bytes.")
    var splitBytes: Int64 = 64 << 20

    @Flag(help: "Join an existing cluster: start empty and wait to be added (POST /membership on a member).")
    var join = false

    @Option(help: "Election priorities, SOFAJRaft style (-1 off, 0 never leader): ID=PRIORITY,...")
    var priorities: String?

    @Option(help: "Directory for the write-ahead log and snapshots.")
    var dataDir: String

    @Option(help: "Election timeout in milliseconds (SOFAJRaft's default: 1000).")
    var electionTimeoutMs = 1_000

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel = "info"

    @Flag(help: "UNSAFE, only to prove the chaos harness catches it: serve reads from this node's replica without ReadIndex (stale reads).")
    var unsafeStaleReads = false

    @Flag(help: "UNSAFE, only to prove the chaos harness catches it: never fdatasync the write-ahead log (a power loss loses acknowledged writes).")
    var unsafeNoFsync = false

    func run() async throws {
        let (raftHost, raftPort) = try Self.endpoint(listen)
        let (httpHost, httpPort) = try Self.endpoint(http)
        var members: [NodeID: (host: String, port: Int)] = [:]
        for item in peers.split(separator: ",") {
            let parts = item.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let peer = UInt64(parts[0]), peer > 0 else {
                throw ValidationError("--peers: '\(item)' is not ID=HOST:PORT")
            }
            members[peer] = try Self.endpoint(String(parts[1]))
        }
        guard members[id] != nil else { throw ValidationError("--peers must name this node (\(id))") }
        var electionPriorities: [NodeID: ElectionPriority] = [:]
        for item in (priorities ?? "").split(separator: ",") {
            let parts = item.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let peer = UInt64(parts[0]), let value = Int(parts[1]), value >= -1 else {
                throw ValidationError("--priorities: '\(item)' is not ID=PRIORITY with PRIORITY >= -1")
            }
            electionPriorities[peer] = ElectionPriority(value)
        }
        var raft = RaftOptions()
        raft.electionTimeout = .milliseconds(electionTimeoutMs)
        raft.heartbeatInterval = .milliseconds(max(1, electionTimeoutMs / 10))
        try raft.validate()
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)

        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        sigprocmask(SIG_UNBLOCK, &signals, nil)
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        var logger = Logger(label: "divan.server")
        logger[metadataKey: "node"] = "\(id)"
        guard let engineChoice = KVServer.Engine(rawValue: engine) else {
            throw ValidationError("--engine must be one of \(KVServer.Engine.allCases.map(\.rawValue))")
        }
        let learnerIDs = try (learners ?? "").split(separator: ",").map { item -> NodeID in
            guard let peer = UInt64(item), members[peer] != nil else { throw ValidationError("--learners: '\(item)' is not a node of --peers") }
            return peer
        }
        var serverOptions = KVServer.Options(
            id: id, raftHost: raftHost, raftPort: raftPort, peers: members, httpHost: httpHost,
            httpPort: httpPort, dataDirectory: dataDir, raft: raft)
        serverOptions.priorities = electionPriorities
        serverOptions.engine = engineChoice
        serverOptions.resp = try resp.map { try Self.endpoint($0) }
        serverOptions.respPassword = respPassword
        serverOptions.learners = learnerIDs
        serverOptions.unsafeStaleReads = unsafeStaleReads
        serverOptions.unsafeNoFsync = unsafeNoFsync
        if unsafeStaleReads || unsafeNoFsync {
            logger.warning("UNSAFE mode: \(unsafeStaleReads ? "--unsafe-stale-reads " : "")\(unsafeNoFsync ? "--unsafe-no-fsync" : "")")
        }
        serverOptions.placement.splitKeys = splitKeys
        serverOptions.placement.splitBytes = splitBytes
        if !join {
            let founders = try voters.map { list in
                try list.split(separator: ",").map { item -> NodeID in
                    guard let peer = UInt64(item), members[peer] != nil else {
                        throw ValidationError("--voters: '\(item)' is not a node of --peers")
                    }
                    return peer
                }
            } ?? members.keys.filter { !learnerIDs.contains($0) }
            serverOptions.founders = founders
        }
        let server = KVServer(
            options: serverOptions,
            logger: logger, metrics: registry)
        let services = ServiceGroup(
            configuration: .init(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await services.run()
    }

    static func endpoint(_ text: String) throws -> (String, Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (0...65_535).contains(port) else {
            throw ValidationError("'\(text)' is not HOST:PORT")
        }
        return (String(text[..<colon]), port)
    }
}
