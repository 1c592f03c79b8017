import Logging
import NIOCore
import NIOPosix
import Prometheus
import Raft
import RaftCore
import RaftStorage
import RaftTransport
import ServiceLifecycle
import Synchronization
import SystemPackage

/// One `divan server` process: a Raft group of the built-in replicated map over TCP, its write-ahead
/// log and snapshots in the data directory, and the HTTP client API.
public final class RaftServer: Service {
    /// Where a server listens and whom it talks to.
    public struct Options: Sendable {
        public var id: NodeID
        public var raftHost: String
        public var raftPort: Int
        /// Every voter of the group, this one included: id → (host, port).
        public var peers: [NodeID: (host: String, port: Int)]
        /// SOFAJRaft election priorities by node (-1 off, 0 never leader); empty means plain Raft.
        public var priorities: [NodeID: ElectionPriority] = [:]
        /// The founding voters; nil when this node joins an existing group (it waits to be added).
        public var founders: [NodeID]?
        public var httpHost: String
        public var httpPort: Int
        public var dataDirectory: String
        public var raft: RaftOptions

        public init(
            id: NodeID, raftHost: String, raftPort: Int, peers: [NodeID: (host: String, port: Int)],
            httpHost: String, httpPort: Int, dataDirectory: String, raft: RaftOptions = RaftOptions()
        ) {
            self.id = id
            self.raftHost = raftHost
            self.raftPort = raftPort
            self.peers = peers
            self.httpHost = httpHost
            self.httpPort = httpPort
            self.dataDirectory = dataDirectory
            self.raft = raft
        }
    }

    public static let group: UInt64 = 1
    let options: Options
    let logger: Logger
    let metrics: PrometheusCollectorRegistry

    /// `metrics` is the registry the process bootstrapped swift-metrics with; `/metrics` shows it.
    public init(options: Options, logger: Logger, metrics: PrometheusCollectorRegistry) {
        self.options = options
        self.logger = logger
        self.metrics = metrics
    }

    /// Runs until graceful shutdown (SIGTERM, SIGINT), then stops accepting, finishes the log's
    /// fsyncs and closes connections.
    public func run() async throws {
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let log = try WriteAheadLog(directory: FilePath("\(options.dataDirectory)/wal"))
        let snapshots = try SnapshotStore(directory: FilePath("\(options.dataDirectory)/snapshots"))
        let router = GroupRouter()
        let transport = TCPTransport(
            configuration: TransportConfiguration(node: options.id, host: options.raftHost, port: options.raftPort),
            eventLoopGroup: loops, logger: logger,
            receiver: { group, message in router.deliver(message, group: group) },
            onPeerUnreachable: { peer in router.reportUnreachable(peer) })
        let map = ReplicatedMap()
        let membership = options.founders.map { Membership(voters: $0, priorities: options.priorities) }
        let group = try await RaftGroup(
            group: Self.group, id: options.id, bootstrap: membership, options: options.raft, log: log,
            snapshots: snapshots, sender: TransportSender(transport: transport), stateMachine: map)
        router.register(group, as: Self.group)
        let address = try await transport.start()
        for (peer, endpoint) in options.peers where peer != options.id {
            transport.setPeer(peer, address: try SocketAddress.makeAddressResolvingHost(endpoint.host, port: endpoint.port))
        }
        let ticker = RaftTicker(interval: options.raft.heartbeatInterval)
        try await group.start(ticker: ticker)
        let http = try await ClientAPI.bind(group: group, map: map, metrics: metrics, on: loops, host: options.httpHost, port: options.httpPort)
        logger.notice("serving", metadata: [
            "raft": "\(address)", "http": "\(http.localAddress.map { "\($0)" } ?? "?")",
            "data": "\(options.dataDirectory)",
        ])
        try? await gracefulShutdown()
        logger.notice("shutting down")
        try? await http.close()
        await group.stop()
        ticker.stop()
        await transport.shutdown()
        log.close()
        try? await loops.shutdownGracefully()
    }
}

/// Hands messages from the transport to the group they belong to.
final class GroupRouter: Sendable {
    private let groups = Mutex<[UInt64: RaftGroup]>([:])

    func register(_ group: RaftGroup, as id: UInt64) { groups.withLock { $0[id] = group } }

    var all: [RaftGroup] { groups.withLock { Array($0.values) } }

    func deliver(_ message: Message, group id: UInt64) -> DeliveryResult {
        guard let group = groups.withLock({ $0[id] }) else { return .unknownGroup }
        Task { await group.receive(message) }
        return .delivered
    }

    func reportUnreachable(_ peer: NodeID) {
        for group in all {
            Task { await group.reportUnreachable(peer) }
        }
    }
}

/// Sends a group's messages through the shared TCP transport.
struct TransportSender: RaftMessageSender {
    let transport: TCPTransport

    func send(_ messages: [Message], group: UInt64) {
        for message in messages { transport.send(message, group: group, to: message.to) }
    }
}
