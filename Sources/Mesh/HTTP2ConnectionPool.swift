/// The HTTP/2 upstream connections of one cluster as a plain value: which connection takes a new stream, when
/// another connection is opened, and when one is no longer needed. `Cluster` keeps it under its lock and acts on
/// what it returns; it never touches a channel.
///
/// Connections are kept per endpoint and event loop, as Envoy keeps them per worker: a stream channel lives on its
/// connection's event loop, and the client handler that uses it calls it directly, so both must share a loop.
/// A stream is reserved before it exists (a request waiting for a connection that is still being made holds one),
/// so the streams of a connection never exceed what the upstream allows, and a request that finds every
/// connection full and no room for another is refused (503) rather than queued.
public struct HTTP2ConnectionPool: Sendable, Equatable {
    /// Identifies one connection for as long as the cluster lives.
    public typealias ConnectionID = Int

    /// Streams a connection is assumed to take before its first SETTINGS frame says otherwise
    /// (RFC 9113 §6.5.2 recommends that a server allow at least 100).
    public static let assumedMaxConcurrentStreams = 100

    /// One connection's share of the bookkeeping.
    public struct Connection: Sendable, Equatable {
        public let endpoint: Int
        public let loop: ObjectIdentifier
        /// Streams reserved or open on it.
        public var streams = 0
        /// The upstream's SETTINGS_MAX_CONCURRENT_STREAMS, or the assumption until it is known.
        public var maxStreams = HTTP2ConnectionPool.assumedMaxConcurrentStreams
        /// GOAWAY received: its open streams finish, new ones go elsewhere.
        public var isDraining = false

        var hasRoom: Bool { !isDraining && streams < maxStreams }
    }

    /// Where a new request's stream goes.
    public enum Placement: Sendable, Equatable {
        /// On this connection (ready or still being made).
        case existing(ConnectionID)
        /// On a new connection, which the caller opens.
        case open(ConnectionID)
        /// Every connection to the endpoint on this loop is full and no other may be opened.
        case full
    }

    public private(set) var connections: [ConnectionID: Connection] = [:]
    private var nextID: ConnectionID = 0

    public init() {}

    /// Reserves a stream toward `endpoint` for a request on `loop`: on the busiest connection that still has room
    /// (so that extra connections empty out and close), else on a new connection when `mayOpen`.
    public mutating func reserveStream(endpoint: Int, loop: ObjectIdentifier, mayOpen: Bool) -> Placement {
        let candidates = connections.filter { $0.value.endpoint == endpoint && $0.value.loop == loop && $0.value.hasRoom }
        if let (id, _) = candidates.max(by: { ($0.value.streams, -$0.key) < ($1.value.streams, -$1.key) }) {
            connections[id]!.streams += 1
            return .existing(id)
        }
        guard mayOpen else { return .full }
        let id = nextID
        nextID += 1
        connections[id] = Connection(endpoint: endpoint, loop: loop, streams: 1)
        return .open(id)
    }

    /// A stream ended (or was never opened). Returns whether the connection should now be closed: it carries no
    /// stream and is either draining or not the only usable connection to its endpoint on its loop. A connection
    /// to be closed takes no more streams from this moment, so no request lands on it while it closes.
    public mutating func streamClosed(_ id: ConnectionID) -> Bool {
        guard var connection = connections[id] else { return false }
        connection.streams = max(0, connection.streams - 1)
        connections[id] = connection
        guard isSuperfluous(id) else { return false }
        connections[id]!.isDraining = true
        return true
    }

    /// The upstream's SETTINGS named its SETTINGS_MAX_CONCURRENT_STREAMS. (Until one does there is no limit, and
    /// the assumption stands: the cluster's own limits bound the rest.)
    public mutating func settingsReceived(_ id: ConnectionID, maxConcurrentStreams: Int) {
        guard connections[id] != nil else { return }
        connections[id]!.maxStreams = maxConcurrentStreams
    }

    /// The upstream sent GOAWAY. Returns whether the connection should be closed now (no stream left on it).
    public mutating func goAwayReceived(_ id: ConnectionID) -> Bool {
        guard connections[id] != nil else { return false }
        connections[id]!.isDraining = true
        return connections[id]!.streams == 0
    }

    /// The connection is gone (closed, failed, or never made); its reservations go with it.
    public mutating func connectionClosed(_ id: ConnectionID) {
        connections[id] = nil
    }

    private func isSuperfluous(_ id: ConnectionID) -> Bool {
        guard let connection = connections[id], connection.streams == 0 else { return false }
        if connection.isDraining { return true }
        return connections.contains { other in
            other.key != id && other.value.endpoint == connection.endpoint && other.value.loop == connection.loop
                && !other.value.isDraining
        }
    }
}
