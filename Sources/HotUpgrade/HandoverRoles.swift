#if canImport(Glibc)
import Glibc
#endif

/// A listening socket handed over by name.
public struct HandoverListener: Sendable, Equatable {
    public var name: String
    public var descriptor: CInt

    public init(name: String, descriptor: CInt) {
        self.name = name
        self.descriptor = descriptor
    }
}

/// What a handover moved, for logs and metrics.
public struct HandoverReport: Sendable, Equatable {
    /// Which side of the handover this process was.
    public enum Role: String, Sendable {
        case old
        case new
    }

    /// How it ended: `moved` (committed and finished), `rolledBack` (before the commit point) or `resumed` (after it).
    public enum Outcome: String, Sendable {
        case moved
        case rolledBack = "rolled_back"
        case resumed
    }

    public var role: Role
    public var outcome: Outcome
    public var connectionsMoved: Int
    /// Bytes that moved with connections: pre-read request bytes and tunnel bytes owed either way.
    public var bytesForwarded: Int
    public var duration: Duration

    public init(role: Role, outcome: Outcome, connectionsMoved: Int, bytesForwarded: Int, duration: Duration) {
        self.role = role
        self.outcome = outcome
        self.connectionsMoved = connectionsMoved
        self.bytesForwarded = bytesForwarded
        self.duration = duration
    }
}

/// A connection a proxy could not serve, and why; its descriptors are still the caller's.
public struct HandoverAdoptionFailure: Sendable {
    public var connection: HandoverConnection
    public var reason: String

    public init(connection: HandoverConnection, reason: String) {
        self.connection = connection
        self.reason = reason
    }
}

/// The old process's proxy, as the handover shell uses it.
public protocol HandoverDonor: Sendable {
    /// Duplicates of every listening socket, by name. The proxy keeps accepting on its own copies.
    func duplicateListeners() async throws -> [HandoverListener]
    /// Stops accepting (the commit point). Connections that cannot move (HTTP/2) are asked to drain.
    func stopAccepting() async
    /// Accepts again, on the listener copies made by `duplicateListeners` (after a failure past the commit point).
    func resumeAccepting(_ listeners: [HandoverListener]) async throws
    /// Asks up to `limit` more connections to stop at their next safe point, and returns every connection that is
    /// stopped there now, captured: its channels are closed and its descriptors are duplicates the caller owns.
    func captureConnections(markingUpTo limit: Int) async -> [HandoverConnection]
    /// Client connections still open here.
    func heldConnectionCount() async -> Int
    /// Serves captured connections taken back; returns those it could not serve. It owns the descriptors of the others.
    func adopt(_ connections: [HandoverConnection]) async -> [HandoverAdoptionFailure]
    func record(_ report: HandoverReport)
}

/// The new process's proxy, as the handover shell uses it.
public protocol HandoverRecipient: Sendable {
    /// The listener names of this process's config.
    var listenerNames: Set<String> { get }
    /// Takes a listening socket without accepting on it yet.
    func adoptListener(_ listener: HandoverListener) async throws
    /// Starts accepting on every adopted listener.
    func startAccepting() async
    /// Serves connections received from the old process, all at once; returns those it could not serve. It owns the
    /// descriptors of the others.
    func adopt(_ connections: [HandoverConnection]) async -> [HandoverAdoptionFailure]
    func record(_ report: HandoverReport)
}

func closeDescriptors(_ connections: [HandoverConnection]) {
    for connection in connections {
        for fd in connection.descriptors { close(fd) }
    }
}
