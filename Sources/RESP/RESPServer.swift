import KVWire
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Settings of a Redis-protocol listener.
public struct RESPServerOptions: Sendable {
    /// When set, clients must AUTH (or HELLO ... AUTH) as `default` with this password.
    public var password: String?
    public var limits: RESPLimits
    /// How long a command may wait for the KV service before it is answered with an error
    /// (TRYAGAIN for reads, UNCERTAIN for writes), in milliseconds.
    public var commandTimeout: Int64
    /// How many SCAN cursors the server remembers before it forgets the oldest.
    public var maximumScanCursors: Int

    public init(password: String? = nil, limits: RESPLimits = RESPLimits(), commandTimeout: Int64 = 10_000, maximumScanCursors: Int = 65_536) {
        self.password = password
        self.limits = limits
        self.commandTimeout = commandTimeout
        self.maximumScanCursors = maximumScanCursors
    }
}

/// A Redis-protocol (RESP2/RESP3) listener in front of a `KVService`: any Redis client can talk
/// to Divan KV through it.
public final class RESPServer: Sendable {
    /// The address the listener is bound to (with the port the OS picked when asked for port 0).
    public let localAddress: SocketAddress
    private let listener: any Channel
    private let registry: ConnectionSet

    /// The bound port.
    public var port: Int { localAddress.port ?? 0 }

    /// Binds `host:port` (port 0 for any free port) and serves `service` until `close()`.
    public static func start(
        host: String, port: Int, service: any KVService, options: RESPServerOptions = RESPServerOptions(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "divan.resp")
    ) async throws -> RESPServer {
        let server = ServerContext(options: options)
        let registry = ConnectionSet()
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                registry.add(channel)
                channel.closeFuture.whenComplete { _ in registry.remove(channel) }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        RESPChannelHandler(service: service, server: server, logger: logger)
                    )
                }
            }
            .bind(host: host, port: port)
            .get()
        return try RESPServer(listener: listener, registry: registry)
    }

    private init(listener: any Channel, registry: ConnectionSet) throws {
        guard let address = listener.localAddress else { throw ChannelError.inappropriateOperationForState }
        self.listener = listener
        self.localAddress = address
        self.registry = registry
    }

    /// Stops accepting and closes every client connection.
    public func close() async {
        try? await listener.close()
        for channel in registry.all() {
            try? await channel.close()
        }
    }
}

/// The open client connections of one server, so `close()` can end them.
private final class ConnectionSet: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    func add(_ channel: any Channel) {
        channels.withLock { $0[ObjectIdentifier(channel)] = channel }
    }

    func remove(_ channel: any Channel) {
        channels.withLock { $0[ObjectIdentifier(channel)] = nil }
    }

    func all() -> [any Channel] {
        channels.withLock { Array($0.values) }
    }
}
