import NIOCore
import RaftCore

/// The outgoing side of one peer: connection phase, reconnect backoff and the bounded queue.
///
/// Pure (generic over the connection so tests need no socket): each method returns an action for
/// the shell to perform. Which connection closed is told by identity, so a late close of an old
/// connection cannot tear down its successor.
struct OutboundStateMachine<Connection: AnyObject & Sendable>: Sendable {
    enum Phase {
        case idle
        case connecting(attempt: Int)
        case connected(Connection)
        case backingOff(attempt: Int)
        case shutDown
    }

    enum EnqueueAction {
        case none
        case connect
        case scheduleFlush(Connection)
    }

    enum ConnectedAction {
        /// Send the handshake, then these messages.
        case handshake(Connection, then: [GroupMessage])
        /// The machine was shut down while connecting.
        case close(Connection)
    }

    enum FlushAction {
        case none
        case write(Connection, [GroupMessage])
    }

    enum FailureAction {
        case none
        /// Tell the caller the peer is unreachable, drop what was queued for it, retry later.
        case reportUnreachable(retryAfter: TimeAmount, dropped: Int)
    }

    private(set) var phase: Phase = .idle
    private var queue = CircularBuffer<GroupMessage>()
    /// Snapshot chunks: a lane of their own, one chunk per write, behind everything in `queue`, so
    /// a snapshot stream never holds up heartbeats by more than one chunk on the wire.
    private var bulk = CircularBuffer<GroupMessage>()
    private var isFlushScheduled = false
    /// False while the socket's send buffer is above its high-water mark: messages then wait in the
    /// bounded queue here rather than piling up, unbounded, in the channel.
    private var isWritable = true
    let maximumQueuedMessages: Int
    let backoff: Backoff

    init(maximumQueuedMessages: Int, backoff: Backoff) {
        self.maximumQueuedMessages = maximumQueuedMessages
        self.backoff = backoff
    }

    var queuedCount: Int { queue.count + bulk.count }

    /// Snapshot chunks wait: the shell flushes again after a write until the lane is empty.
    var hasQueuedBulk: Bool { !bulk.isEmpty }

    /// Queues a message; the returned count is how many messages were dropped to stay in bounds.
    mutating func enqueue(_ message: GroupMessage) -> (action: EnqueueAction, dropped: Int) {
        if case .shutDown = phase { return (.none, 1) }
        if case .snapshotChunk = message.message.payload {
            bulk.append(message)
        } else {
            queue.append(message)
        }
        var dropped = 0
        if queuedCount > maximumQueuedMessages {
            dropOne()
            dropped = 1
        }
        switch phase {
        case .idle:
            phase = .connecting(attempt: 0)
            return (.connect, dropped)
        case .connecting, .backingOff, .shutDown:
            return (.none, dropped)
        case .connected(let connection):
            // One flush per event-loop turn: everything queued before it runs goes out as one frame.
            if isFlushScheduled || !isWritable { return (.none, dropped) }
            isFlushScheduled = true
            return (.scheduleFlush(connection), dropped)
        }
    }

    /// Drops the oldest replication traffic first: Raft resends appends and heartbeats on its own,
    /// while a lost vote or read-index message costs an election or a read round.
    /// Snapshot chunks go first of all: the receiver asks for a lost one again.
    private mutating func dropOne() {
        if !bulk.isEmpty {
            bulk.removeFirst()
            return
        }
        let isReplication: (GroupMessage) -> Bool = {
            switch $0.message.payload {
            case .append, .appendResponse, .heartbeat, .heartbeatResponse, .snapshot, .quiesce, .snapshotChunkRequest,
                 .snapshotChunk:
                return true
            case .voteRequest, .voteResponse, .readIndexRequest, .readIndexResponse, .timeoutNow, .proposal, .proposalDropped: return false
            }
        }
        if let index = queue.firstIndex(where: isReplication) {
            queue.remove(at: index)
        } else {
            queue.removeFirst()
        }
    }

    mutating func connectSucceeded(_ connection: Connection) -> ConnectedAction {
        guard case .connecting = phase else { return .close(connection) }
        phase = .connected(connection)
        isFlushScheduled = false
        isWritable = true
        var pending = Array(queue)
        queue.removeAll(keepingCapacity: true)
        if let chunk = bulk.popFirst() { pending.append(chunk) }
        return .handshake(connection, then: pending)
    }

    mutating func flushDue() -> FlushAction {
        isFlushScheduled = false
        return takeQueue()
    }

    /// The connection's send buffer crossed a watermark; once it drains, what queued meanwhile goes out.
    mutating func writabilityChanged(_ connection: Connection, isWritable: Bool) -> FlushAction {
        guard case .connected(let current) = phase, current === connection else { return .none }
        self.isWritable = isWritable
        return takeQueue()
    }

    private mutating func takeQueue() -> FlushAction {
        guard case .connected(let connection) = phase, isWritable, !queue.isEmpty || !bulk.isEmpty else { return .none }
        var pending = Array(queue)
        queue.removeAll(keepingCapacity: true)
        if let chunk = bulk.popFirst() { pending.append(chunk) }
        return .write(connection, pending)
    }

    mutating func connectFailed() -> FailureAction {
        guard case .connecting(let attempt) = phase else { return .none }
        return backOff(attempt: attempt)
    }

    mutating func connectionClosed(_ connection: Connection) -> FailureAction {
        guard case .connected(let current) = phase, current === connection else { return .none }
        return backOff(attempt: 0)
    }

    private mutating func backOff(attempt: Int) -> FailureAction {
        phase = .backingOff(attempt: attempt + 1)
        isFlushScheduled = false
        // A queue kept for an unreachable peer would only deliver stale messages later.
        let dropped = queuedCount
        queue.removeAll(keepingCapacity: true)
        bulk.removeAll(keepingCapacity: true)
        return .reportUnreachable(retryAfter: backoff.delay(attempt: attempt), dropped: dropped)
    }

    /// The backoff delay has passed: whether to try connecting again.
    mutating func retryDue() -> Bool {
        guard case .backingOff(let attempt) = phase else { return false }
        phase = .connecting(attempt: attempt)
        return true
    }

    /// Stops for good; the connection to close, if any.
    mutating func shutDown() -> Connection? {
        defer {
            phase = .shutDown
            queue.removeAll()
            bulk.removeAll()
        }
        if case .connected(let connection) = phase { return connection }
        return nil
    }
}
