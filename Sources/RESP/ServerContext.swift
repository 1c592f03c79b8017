#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import KVWire
import NIOCore
import Synchronization

/// One connection's state that commands read and change (HELLO, AUTH, CLIENT SETNAME).
struct Session: Sendable {
    let id: UInt64
    var name: Bytes?
    var version: ProtocolVersion = .resp2
    var isAuthenticated: Bool
    let remoteAddress: String
    let localAddress: String
    /// Unix milliseconds when the connection was accepted (CLIENT INFO's age).
    let connectedAt: Int64

    init(id: UInt64, isAuthenticated: Bool, remoteAddress: String = "?", localAddress: String = "?", connectedAt: Int64) {
        self.id = id
        self.isAuthenticated = isAuthenticated
        self.remoteAddress = remoteAddress
        self.localAddress = localAddress
        self.connectedAt = connectedAt
    }
}

/// What every connection of one server shares: options, the clock, client ids and counts, and the
/// SCAN cursors.
struct ServerContext: Sendable {
    let options: RESPServerOptions
    let clients: ClientRegistry
    let cursors: ScanCursors
    /// Unix time in milliseconds. Injected so tests can pin TTL arithmetic.
    let now: @Sendable () -> Int64
    /// Unix milliseconds when the server started (INFO uptime).
    let startedAt: Int64
    /// Tells this server process apart from others in default lock owner names.
    let instance: String

    init(options: RESPServerOptions, now: @escaping @Sendable () -> Int64 = ServerContext.systemNow) {
        self.options = options
        self.clients = ClientRegistry()
        self.cursors = ScanCursors(capacity: options.maximumScanCursors)
        self.now = now
        self.startedAt = now()
        self.instance = String(UInt64.random(in: 1...UInt64.max), radix: 36)
    }

    @Sendable static func systemNow() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }
}

/// Hands out client ids and counts connected clients (CLIENT ID, INFO clients).
final class ClientRegistry: Sendable {
    private let state = Mutex<(nextID: UInt64, connected: Int)>((1, 0))

    /// Registers a new connection and returns its id.
    func connect() -> UInt64 {
        state.withLock { state in
            defer { state.nextID += 1 }
            state.connected += 1
            return state.nextID
        }
    }

    func disconnect() {
        state.withLock { $0.connected -= 1 }
    }

    var connectedCount: Int { state.withLock { $0.connected } }
}

/// SCAN cursors. Clients parse a cursor as an unsigned 64-bit number (redis-cli with `strtoull`,
/// redis-py with `int`), so a cursor cannot carry the next key itself: the server remembers the key
/// under a number. The table is bounded; the oldest cursors are forgotten first.
final class ScanCursors: Sendable {
    private struct State {
        var next: UInt64 = 1
        var keys: [UInt64: Bytes] = [:]
        var order = CircularBuffer<UInt64>()
    }

    private let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    /// A new cursor that resumes at `key`.
    func remember(_ key: Bytes) -> UInt64 {
        state.withLock { state in
            let cursor = state.next
            state.next += 1
            state.keys[cursor] = key
            state.order.append(cursor)
            while state.order.count > capacity, let oldest = state.order.popFirst() {
                state.keys[oldest] = nil
            }
            return cursor
        }
    }

    /// The key a cursor resumes at, or nil for a cursor never given out or already forgotten.
    func key(for cursor: UInt64) -> Bytes? {
        state.withLock { $0.keys[cursor] }
    }
}
