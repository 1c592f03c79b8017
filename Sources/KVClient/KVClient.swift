#if canImport(Glibc)
import Glibc
#endif
import KVWire
import NIOCore
import NIOPosix
import Synchronization

/// A Swift client of a Divan KV cluster. It speaks RESP to the nodes' Redis ports (so it needs
/// nothing a node does not already serve), keeps a cache of the region table (`DIVAN.STATUS`), sends
/// each key's command to the node that leads the key's region, and retries where that is safe:
/// - "no leader yet", "region moved", a refused connection: definite, retried until `retryWindow` ends
///   with a fresh region table;
/// - a reply that says the write may or may not have been applied (`UNCERTAIN`), or a connection lost
///   after sending: thrown as `KVError.indefinite`, never retried for writes (reads are retried);
/// - everything else: thrown as the definite error it is.
///
/// Concurrent calls share one pipelined connection per node, and the node batches the writes that
/// arrive together for one region into one Raft proposal.
public final class KVClient: KVService {
    /// A node's Redis-protocol endpoint.
    public struct Endpoint: Sendable, Hashable {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    struct Route: Sendable {
        var start: Bytes
        var end: Bytes?
        var leader: UInt64?
    }

    let connections: [UInt64: NodeConnection]
    let retryWindow: Duration
    let owner: Bytes
    private let routes = Mutex<(table: [Route], refreshed: ContinuousClock.Instant?)>(([], nil))

    /// `nodes` maps node ids to their RESP endpoints; `owner` names this client in locks.
    public init(
        nodes: [UInt64: Endpoint], owner: String, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        requestTimeout: Duration = .seconds(15), retryWindow: Duration = .seconds(5)
    ) {
        let timeout = TimeAmount.nanoseconds(Int64(requestTimeout / .nanoseconds(1)))
        connections = nodes.mapValues { NodeConnection(host: $0.host, port: $0.port, group: group, timeout: timeout) }
        self.retryWindow = retryWindow
        self.owner = Array(owner.utf8)
    }

    deinit {
        for connection in connections.values { connection.close() }
    }

    // MARK: - KVService

    public func write(_ write: KVWrite) async throws(KVError) -> KVWriteResult {
        let command = try Self.command(for: write, owner: owner)
        let reply = try await send(command, key: write.routingKey, isIdempotent: false)
        return try Self.writeResult(write, reply)
    }

    public func read(_ read: KVRead) async throws(KVError) -> KVReadResult {
        switch read {
        case .getRecord(let key):
            let value = try await send([Array("GET".utf8), key], key: key, isIdempotent: true)
            let ttl = try await send([Array("PTTL".utf8), key], key: key, isIdempotent: true)
            guard case .bulk(let bytes) = value else { return .record(nil) }
            guard case .integer(let milliseconds) = ttl else { throw Self.unexpected(ttl) }
            return .record(KVRecord(value: bytes, expiresAt: milliseconds >= 0 ? Self.now() + milliseconds : nil))
        default:
            let command = try Self.command(for: read)
            let reply = try await send(command, key: read.routingKey, isIdempotent: true)
            return try Self.readResult(read, reply)
        }
    }

    public func status() async -> ClusterStatus {
        for (_, connection) in connections.sorted(by: { $0.key < $1.key }) {
            guard let reply = try? await connection.send([Array("DIVAN.STATUS".utf8)]), let status = Self.status(from: reply) else { continue }
            return status
        }
        return ClusterStatus(node: 0, regions: [])
    }

    // MARK: - Routing and retries

    /// Sends `command` to the leader of `key`'s region (any node when unknown), retrying definite
    /// transient failures until the retry window ends.
    func send(_ command: [Bytes], key: Bytes?, isIdempotent: Bool) async throws(KVError) -> RESPReply {
        let deadline = ContinuousClock.now + retryWindow
        var attempt = 0
        while true {
            attempt += 1
            let node = target(for: key, attempt: attempt)
            guard let connection = connections[node] else { throw .definite(.invalid("no endpoint for node \(node)")) }
            let failure: KVError
            do throws(NodeConnection.Failure) {
                let reply = try await connection.send(command)
                if case .error(let message) = reply, let error = Self.retryable(message) {
                    failure = error
                } else {
                    return reply
                }
            } catch {
                switch error {
                case .unreachable(let why): failure = .definite(.unreachable(why))
                case .lost:
                    guard isIdempotent else { throw .indefinite(.connectionLost) }
                    failure = .indefinite(.connectionLost)
                }
            }
            guard ContinuousClock.now < deadline else { throw failure }
            await refreshRoutes()
            try? await Task.sleep(for: .milliseconds(min(20 * attempt, 200)))
        }
    }

    /// The node to try: the cached leader of the key's region first, then the nodes in turn.
    func target(for key: Bytes?, attempt: Int) -> UInt64 {
        let nodes = connections.keys.sorted()
        if attempt == 1, let key,
           let leader = routes.withLock({ $0.table.first { route in Self.contains(route, key) }?.leader }),
           connections[leader] != nil {
            return leader
        }
        return nodes[(attempt - 1) % nodes.count]
    }

    static func contains(_ route: Route, _ key: Bytes) -> Bool {
        !key.lexicographicallyPrecedes(route.start) && (route.end.map { key.lexicographicallyPrecedes($0) } ?? true)
    }

    /// Reloads the region table from any node, at most every 100 ms.
    func refreshRoutes() async {
        let now = ContinuousClock.now
        let due = routes.withLock { state in
            guard state.refreshed.map({ now - $0 > .milliseconds(100) }) ?? true else { return false }
            state.refreshed = now
            return true
        }
        guard due else { return }
        let status = await status()
        guard !status.regions.isEmpty else { return }
        let table = status.regions.map { Route(start: $0.region.start, end: $0.region.end, leader: $0.leader) }
        routes.withLock { $0.table = table }
    }

    /// Definite errors worth another try (the cluster is electing or splitting), else nil.
    static func retryable(_ message: String) -> KVError? {
        if message.hasPrefix("TRYAGAIN") { return .definite(.noLeader(region: 0)) }
        if message.hasPrefix("CLUSTERDOWN") { return .definite(.noRegion) }
        return nil
    }

    static func unexpected(_ reply: RESPReply) -> KVError {
        if case .error(let message) = reply {
            if message.hasPrefix("UNCERTAIN") { return .indefinite(.timedOut) }
            return .definite(.invalid(message))
        }
        return .definite(.invalid("unexpected reply \(reply)"))
    }

    /// Wall-clock time in Unix milliseconds, to turn a PTTL into an expiry time.
    static func now() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }
}
