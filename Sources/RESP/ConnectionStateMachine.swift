import KVWire
import NIOCore

/// One client connection as a plain state machine (style.md §4): bytes and call completions go in,
/// actions come out, and the channel handler only performs them.
///
/// Commands run in the order they arrive, and their replies leave in that order. A command that
/// needs the KV service becomes a call that may run while earlier calls are still running, unless
/// it touches a key an earlier running call writes (or reads, for a write), or either is a
/// whole-keyspace call: then it waits, and so does everything after it. So a pipelined burst of
/// writes to different keys reaches the store at once and can share Raft proposals, while a client
/// never sees its own commands reordered.
struct ConnectionStateMachine {
    /// What the channel handler must do.
    enum Action: Sendable {
        /// Write these encoded replies and flush.
        case write(ByteBuffer)
        /// Run this call and report its reply with `completed(_:reply:)`.
        case start(id: UInt64, call: KVCall)
        /// Close the connection (after the writes before this action).
        case close
    }

    /// A reply's place in the output order.
    private struct Slot {
        var reply: RESPValue?
        /// The version at the time the command ran: HELLO changes it for later commands only.
        let version: ProtocolVersion
        var closesAfter = false
    }

    private(set) var session: Session
    private let server: ServerContext
    private var parser: RESPParser
    private var slots = CircularBuffer<Slot>()
    /// The id of `slots.first`; slot ids are consecutive.
    private var firstSlotID: UInt64 = 0
    private var running = RunningCalls()
    /// A call that must wait for running ones; nothing after it is parsed until it starts.
    private var waiting: (id: UInt64, call: KVCall)?
    /// Set once QUIT or a protocol error ends the input; nothing more is parsed.
    private var isInputClosed = false
    private var allocator = ByteBufferAllocator()

    init(session: Session, server: ServerContext) {
        self.session = session
        self.server = server
        self.parser = RESPParser(limits: server.options.limits)
    }

    /// Whether the handler should read more bytes: not while commands are waiting their turn or too
    /// many replies are pending, so a fast client cannot make the server buffer without bound.
    var wantsInput: Bool {
        !isInputClosed && waiting == nil && slots.count < server.options.limits.maximumPipelinedCommands
    }

    mutating func received(_ bytes: ByteBuffer) -> [Action] {
        guard !isInputClosed else { return [] }
        guard parser.append(bytes) else {
            isInputClosed = true
            return [.close]
        }
        var actions: [Action] = []
        parseCommands(into: &actions)
        flush(into: &actions)
        return actions
    }

    /// A call's reply. Later completions of the same call (after its timeout answered) are ignored.
    mutating func completed(_ id: UInt64, reply: RESPValue) -> [Action] {
        guard id >= firstSlotID, id < firstSlotID + UInt64(slots.count) else { return [] }
        let index = slots.index(slots.startIndex, offsetBy: Int(id - firstSlotID))
        guard slots[index].reply == nil else { return [] }
        slots[index].reply = reply
        running.remove(id)
        var actions: [Action] = []
        if let waiting, canStart(waiting.call.access) {
            self.waiting = nil
            start(waiting.id, waiting.call, into: &actions)
        }
        // Flushing first makes room under the pipelining limit for commands already buffered.
        flush(into: &actions)
        parseCommands(into: &actions)
        flush(into: &actions)
        return actions
    }

    private mutating func parseCommands(into actions: inout [Action]) {
        while wantsInput {
            let command: [Bytes]?
            do {
                command = try parser.next()
            } catch {
                isInputClosed = true
                append(Slot(reply: .error("ERR \(error.message)"), version: session.version, closesAfter: true))
                return
            }
            guard let command else { return }
            switch CommandTable.plan(Arguments(command), session: &session, server: server) {
            case .reply(let reply):
                append(Slot(reply: reply, version: session.version))
            case .replyThenClose(let reply):
                append(Slot(reply: reply, version: session.version, closesAfter: true))
                isInputClosed = true
            case .call(let call):
                let id = append(Slot(reply: nil, version: session.version))
                if canStart(call.access) {
                    start(id, call, into: &actions)
                } else {
                    waiting = (id, call)
                }
            }
        }
    }

    @discardableResult
    private mutating func append(_ slot: Slot) -> UInt64 {
        slots.append(slot)
        return firstSlotID + UInt64(slots.count - 1)
    }

    private mutating func start(_ id: UInt64, _ call: KVCall, into actions: inout [Action]) {
        running.insert(id, call.access)
        actions.append(.start(id: id, call: call))
    }

    private func canStart(_ access: KVCall.Access) -> Bool {
        running.allows(access)
    }

    /// Encodes the replies ready at the front into one buffer, so a pipeline costs few writes.
    private mutating func flush(into actions: inout [Action]) {
        var buffer: ByteBuffer?
        var closes = false
        while let first = slots.first, let reply = first.reply {
            if buffer == nil { buffer = allocator.buffer(capacity: 256) }
            reply.encode(into: &buffer!, version: first.version)
            slots.removeFirst()
            firstSlotID += 1
            if first.closesAfter {
                closes = true
                break
            }
        }
        if let buffer { actions.append(.write(buffer)) }
        if closes { actions.append(.close) }
    }
}

/// The running calls of one connection, indexed by the keys they touch, so that deciding whether a
/// command may start costs a look-up per key, not a pass over everything running.
private struct RunningCalls {
    private var accesses: [UInt64: KVCall.Access] = [:]
    private var readers: [Bytes: Int] = [:]
    private var writers: [Bytes: Int] = [:]
    private var barriers = 0

    func allows(_ access: KVCall.Access) -> Bool {
        if barriers > 0 { return false }
        switch access {
        case .barrier: return accesses.isEmpty
        case .read(let keys): return keys.allSatisfy { writers[$0] == nil }
        case .write(let keys): return keys.allSatisfy { writers[$0] == nil && readers[$0] == nil }
        }
    }

    mutating func insert(_ id: UInt64, _ access: KVCall.Access) {
        accesses[id] = access
        switch access {
        case .barrier: barriers += 1
        case .read(let keys): for key in keys { readers[key, default: 0] += 1 }
        case .write(let keys): for key in keys { writers[key, default: 0] += 1 }
        }
    }

    mutating func remove(_ id: UInt64) {
        guard let access = accesses.removeValue(forKey: id) else { return }
        switch access {
        case .barrier: barriers -= 1
        case .read(let keys): for key in keys { Self.decrement(&readers, key) }
        case .write(let keys): for key in keys { Self.decrement(&writers, key) }
        }
    }

    private static func decrement(_ counts: inout [Bytes: Int], _ key: Bytes) {
        if let count = counts[key], count > 1 { counts[key] = count - 1 } else { counts[key] = nil }
    }
}
