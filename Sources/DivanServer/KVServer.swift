import KVStore
import Logging
import NIOCore
import NIOPosix
import Prometheus
import RESP
import Raft
import RaftCore
import RaftStorage
import RaftTransport
import ServiceLifecycle
import Synchronization
import SystemPackage

/// One `divan server` process: a Divan KV store (its regions and its replica of the placement
/// driver, all Raft groups over one TCP transport and one write-ahead log), its storage engine and
/// snapshots in the data directory, and the HTTP client API.
public final class KVServer: Service {
    /// Which storage engine holds the KV data.
    public enum Engine: String, Sendable, CaseIterable {
        /// RocksDB in `DATA/engine` (the default for servers).
        case rocksdb
        /// Memory only: tests and demos. The data is rebuilt from snapshots and the log at restart.
        case memory
    }

    /// Where a server listens and whom it talks to.
    public struct Options: Sendable {
        public var id: NodeID
        public var raftHost: String
        public var raftPort: Int
        /// Every voter of the group, this one included: id → (host, port).
        public var peers: [NodeID: (host: String, port: Int)]
        /// SOFAJRaft election priorities by node (-1 off, 0 never leader); empty means plain Raft.
        public var priorities: [NodeID: ElectionPriority] = [:]
        /// The founding voters; nil when this node joins an existing cluster (it waits to be added).
        public var founders: [NodeID]?
        /// Nodes that hold a non-voting replica of every group from the start.
        public var learners: [NodeID] = []
        public var engine: Engine = .rocksdb
        /// Where the Redis-protocol front end listens; nil: no RESP port.
        public var resp: (host: String, port: Int)?
        /// Clients must AUTH with this password when set.
        public var respPassword: String?
        public var placement = PlacementOptions()
        public var httpHost: String
        public var httpPort: Int
        public var dataDirectory: String
        public var raft: RaftOptions
        /// UNSAFE (chaos-harness tests only): serve reads from the local replica without ReadIndex.
        public var unsafeStaleReads = false
        /// UNSAFE (chaos-harness tests only): acknowledge log writes without fdatasync.
        public var unsafeNoFsync = false

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
        var logOptions = WriteAheadLogOptions()
        logOptions.unsafeSkipsDataSync = options.unsafeNoFsync
        let log = try WriteAheadLog(directory: FilePath("\(options.dataDirectory)/wal"), options: logOptions)
        let engine: any StorageEngine = switch options.engine {
        case .rocksdb: try RocksDBEngine(directory: "\(options.dataDirectory)/engine")
        case .memory: MemoryEngine()
        }
        let router = GroupRouter()
        let transport = TCPTransport(
            configuration: TransportConfiguration(
                node: options.id, host: options.raftHost, port: options.raftPort, maximumFrameSize: 64 << 20),
            eventLoopGroup: loops, logger: logger,
            receiver: { group, message in router.deliver(message, group: group) },
            onPeerUnreachable: { peer in router.reportUnreachable(peer) })
        var storeOptions = StoreOptions(node: options.id, founders: options.founders, dataDirectory: options.dataDirectory, raft: options.raft)
        storeOptions.learners = options.learners
        storeOptions.priorities = options.priorities
        storeOptions.placement = options.placement
        let ticker = RaftTicker(interval: options.raft.heartbeatInterval)
        let store = try Store(
            options: storeOptions, engine: engine, log: log, sender: TransportSender(transport: transport),
            ticker: ticker, logger: logger)
        router.store.withLock { $0 = store }
        let address = try await transport.start()
        for (peer, endpoint) in options.peers where peer != options.id {
            transport.setPeer(peer, address: try SocketAddress.makeAddressResolvingHost(endpoint.host, port: endpoint.port))
        }
        try await store.start()
        let service = NodeKVService(store: store, unsafeStaleReads: options.unsafeStaleReads)
        let http = try await ClientAPI.bind(
            store: store, service: service, metrics: metrics, on: loops, host: options.httpHost, port: options.httpPort)
        var respOptions = RESPServerOptions()
        respOptions.password = options.respPassword
        var resp: RESPServer?
        if let endpoint = options.resp {
            resp = try await RESPServer.start(host: endpoint.host, port: endpoint.port, service: service, options: respOptions, group: loops)
        }
        logger.notice("serving", metadata: [
            "raft": "\(address)", "http": "\(http.localAddress.map { "\($0)" } ?? "?")",
            "resp": "\(resp.map { "\($0.localAddress)" } ?? "off")",
            "data": "\(options.dataDirectory)", "engine": "\(options.engine.rawValue)",
        ])
        try? await gracefulShutdown()
        logger.notice("shutting down")
        await resp?.close()
        try? await http.close()
        await store.stop()
        ticker.stop()
        await transport.shutdown()
        log.close()
        try? await loops.shutdownGracefully()
    }
}

/// Hands messages from the transport to the group they belong to: groups registered one by one
/// (`RaftHost`), or the groups of a KV store, which opens regions it does not know yet on demand.
///
/// Each group has a mailbox: messages for it queue in arrival order, and one task at a time hands
/// the whole queue to the group. A peer's messages stay in order, and a burst that arrives while the
/// group is busy (its disk, its apply) costs one task and one loop round instead of one per message.
final class GroupRouter: Sendable {
    private let groups = Mutex<[UInt64: RaftGroup]>([:])
    /// Set once the store exists; messages that arrive before are dropped (Raft resends).
    let store = Mutex<Store?>(nil)
    /// Messages waiting for a group whose mailbox is being drained; no entry means no drain runs.
    private let mailboxes = Mutex<[ObjectIdentifier: [Message]]>([:])

    func register(_ group: RaftGroup, as id: UInt64) { groups.withLock { $0[id] = group } }

    var all: [RaftGroup] { groups.withLock { Array($0.values) } + (store.withLock { $0 }?.groups ?? []) }

    func deliver(_ message: Message, group id: UInt64) -> DeliveryResult {
        let store = store.withLock { $0 }
        guard let group = groups.withLock({ $0[id] }) ?? store?.group(id) else {
            store?.openUnknownRegion(id)
            return .unknownGroup
        }
        let mailbox = ObjectIdentifier(group)
        let startsDrain = mailboxes.withLock { mailboxes in
            if mailboxes[mailbox] != nil {
                mailboxes[mailbox]!.append(message)
                return false
            }
            mailboxes[mailbox] = [message]
            return true
        }
        if startsDrain { Task { await drain(mailbox, into: group) } }
        return .delivered
    }

    /// Hands `group` its queued messages until its mailbox stays empty, then closes the mailbox.
    private func drain(_ mailbox: ObjectIdentifier, into group: RaftGroup) async {
        while true {
            let batch: [Message] = mailboxes.withLock { mailboxes in
                let queued = mailboxes[mailbox] ?? []
                if queued.isEmpty {
                    mailboxes[mailbox] = nil
                } else {
                    mailboxes[mailbox] = []
                }
                return queued
            }
            if batch.isEmpty { return }
            await group.receive(batch)
        }
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
