import Foundation
import Logging
import NIOCore
import NIOPosix
import Raft
import RaftCore
import RaftStorage
import RaftTransport
import SystemPackage

/// Many Raft groups in one process, sharing one write-ahead log, one TCP transport (one connection
/// per peer process) and one ticker: SOFAJRaft's multi-Raft shape. The benchmarks run on it.
public final class RaftHost: Sendable {
    public let id: NodeID
    public let options: RaftOptions
    public let log: WriteAheadLog
    public let transport: TCPTransport
    let loops: MultiThreadedEventLoopGroup
    let router = GroupRouter()
    let ticker: RaftTicker
    let dataDirectory: String

    /// Opens the log in `dataDirectory/wal`; each group keeps its snapshots in `dataDirectory/snapshots/GROUP`.
    public init(id: NodeID, host: String, port: Int, dataDirectory: String, options: RaftOptions, logger: Logger) throws {
        try options.validate()
        self.id = id
        self.options = options
        self.dataDirectory = dataDirectory
        try FileManager.default.createDirectory(atPath: "\(dataDirectory)/snapshots", withIntermediateDirectories: true)
        self.loops = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        self.log = try WriteAheadLog(directory: FilePath("\(dataDirectory)/wal"))
        self.ticker = RaftTicker(interval: options.heartbeatInterval)
        let router = self.router
        self.transport = TCPTransport(
            configuration: TransportConfiguration(node: id, host: host, port: port), eventLoopGroup: loops, logger: logger,
            receiver: { group, message in router.deliver(message, group: group) },
            onPeerUnreachable: { peer in router.reportUnreachable(peer) })
    }

    /// Starts listening for peers; returns the bound address.
    public func start() async throws -> SocketAddress {
        try await transport.start()
    }

    /// Opens and starts one group on this host.
    @discardableResult
    public func addGroup(_ group: UInt64, bootstrap: Membership?, stateMachine: any StateMachine) async throws -> RaftGroup {
        let snapshots = try SnapshotStore(directory: FilePath("\(dataDirectory)/snapshots/\(group)"))
        let member = try await RaftGroup(
            group: group, id: id, bootstrap: bootstrap, options: options, log: log, snapshots: snapshots,
            sender: TransportSender(transport: transport), stateMachine: stateMachine)
        router.register(member, as: group)
        try await member.start(ticker: ticker)
        return member
    }

    /// Every group on this host.
    public var groups: [RaftGroup] { router.all }

    /// Stops every group, then the ticker, the transport and the log.
    public func shutdown() async {
        for group in router.all { await group.stop() }
        ticker.stop()
        await transport.shutdown()
        log.close()
        try? await loops.shutdownGracefully()
    }
}
