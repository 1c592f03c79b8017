import RaftCore
import Testing

/// An in-memory Raft group for scenario tests.
///
/// Each node has a disk that keeps exactly what its `Ready`s told it to persist, so `crash` and
/// `restart` lose what a real process would lose. Messages wait in `inFlight` until a test delivers
/// them, so a test decides what is lost, when, and in which order. Nothing here reads a clock.
struct Cluster {
    /// What one node has made durable: all that survives a crash.
    struct Disk {
        var hardState = HardState()
        var snapshot: Snapshot?
        var entries: [Entry] = []

        var recovered: RecoveredState { RecoveredState(hardState: hardState, snapshot: snapshot, entries: entries) }
    }

    /// Everything one `Ready` held, copied out so that tests can inspect and compare it.
    struct ReadyRecord: Hashable {
        var hardState: HardState?
        var entries: [Entry]
        var snapshot: Snapshot?
        var messages: [Message]
        var messagesAfterPersist: [Message]
        var committedEntries: [Entry]
        var readStates: [ReadState]
        var events: [RaftEvent]
    }

    struct Node {
        var config: RaftConfig
        /// Nil while crashed.
        var raft: RaftNode?
        var disk: Disk
        /// The snapshot the state machine was restored from in this life, if any.
        var restoredSnapshot: Snapshot?
        /// Entries applied in this life, after `restoredSnapshot`.
        var applied: [Entry] = []
        var readStates: [ReadState] = []
        var events: [RaftEvent] = []
        var readies: [ReadyRecord] = []
    }

    private(set) var nodes: [NodeID: Node] = [:]
    /// Messages sent and not yet delivered, oldest first.
    private(set) var inFlight: [Message] = []
    /// Every message any node sent, delivered or not; tests clear it to count from a point on.
    var sent: [Message] = []
    /// Nodes cut off from everyone: messages to or from them are lost.
    private(set) var isolated: Set<NodeID> = []
    private let template: RaftConfig

    /// Founds a group: every voter and learner starts from the same bootstrap entry, which each
    /// applies at once so that the membership is in force before the first tick.
    init(
        voters: [NodeID], learners: [NodeID] = [], priorities: [NodeID: ElectionPriority] = [:],
        seed: UInt64 = 0, configure: (inout RaftConfig) -> Void = { _ in }
    ) {
        var template = RaftConfig(id: 1)
        template.randomSeed = seed
        configure(&template)
        self.template = template
        let founding = RecoveredState.bootstrap(Membership(voters: voters, learners: learners, priorities: priorities))
        for id in voters + learners {
            start(id, disk: Disk(hardState: founding.hardState, entries: founding.entries))
        }
    }

    subscript(id: NodeID) -> RaftNode {
        get { nodes[id]!.raft! }
        set { nodes[id]!.raft = newValue }
    }

    func node(_ id: NodeID) -> Node { nodes[id]! }

    var runningNodes: [NodeID] { nodes.keys.sorted().filter { nodes[$0]!.raft != nil } }

    var leaders: [NodeID] { runningNodes.filter { self[$0].isLeader } }

    /// The application data `id` applied in this life, in order.
    func appliedData(_ id: NodeID) -> [String] {
        nodes[id]!.applied.compactMap { entry in
            if case .normal(let bytes) = entry.payload { return String(decoding: bytes, as: UTF8.self) }
            return nil
        }
    }

    // MARK: - Driving nodes

    /// Starts a node that joins an existing group with an empty log.
    mutating func addNode(_ id: NodeID) {
        start(id, disk: Disk())
    }

    private mutating func start(_ id: NodeID, disk: Disk) {
        var config = template
        config.id = id
        nodes[id] = Node(config: config, raft: try! RaftNode(config: config, recovered: disk.recovered), disk: disk,
                         restoredSnapshot: disk.snapshot)
        process(id)
    }

    /// Stops a node. It keeps its disk; what was on the wire to it is lost.
    mutating func crash(_ id: NodeID) {
        nodes[id]!.raft = nil
        inFlight.removeAll { $0.to == id }
    }

    /// Starts a crashed node again from what its disk holds. Its event and `Ready` history stay,
    /// so a test can read a node's whole story.
    mutating func restart(_ id: NodeID) {
        let previous = nodes[id]!
        nodes[id]!.raft = try! RaftNode(config: previous.config, recovered: previous.disk.recovered)
        nodes[id]!.restoredSnapshot = previous.disk.snapshot
        nodes[id]!.applied = []
        nodes[id]!.readStates = []
        process(id)
    }

    mutating func isolate(_ id: NodeID) { isolated.insert(id) }

    mutating func heal() { isolated = [] }

    /// Ticks one node once per round, handling its output; what it sends stays in flight.
    mutating func tick(_ id: NodeID, times: Int = 1) {
        for _ in 0..<times {
            self[id].tick()
            process(id)
        }
    }

    /// Ticks every running node once per round and delivers everything that follows.
    mutating func tickAll(times: Int = 1) {
        for _ in 0..<times { tickAllOnce() }
    }

    /// Ticks every running node until `condition` holds; returns the ticks it took, or nil after `limit`.
    mutating func tickAll(until condition: (Cluster) -> Bool, limit: Int) -> Int? {
        for ticks in 0...limit {
            if condition(self) { return ticks }
            tickAllOnce()
        }
        return nil
    }

    private mutating func tickAllOnce() {
        for id in runningNodes {
            self[id].tick()
            process(id)
        }
        deliverAll()
    }

    /// Makes `id` campaign now, delivers the election, and lets one heartbeat tick pass so that
    /// every follower knows the leader and the leader has committed an entry of its term.
    mutating func electLeader(_ id: NodeID) {
        self[id].campaign()
        process(id)
        deliverAll()
        tick(id)
        deliverAll()
    }

    /// Proposes application data on `id`, and delivers the replication that follows.
    mutating func propose(_ data: String, on id: NodeID) throws(ProposalError) {
        try self[id].propose(Array(data.utf8))
        process(id)
        deliverAll()
    }

    /// Takes a snapshot of what `id` applied and compacts its log and disk up to it.
    @discardableResult
    mutating func compact(_ id: NodeID, data: String) -> Bool {
        let snapshot = Snapshot(metadata: self[id].snapshotMetadata, data: Array(data.utf8))
        guard self[id].compact(snapshot) else { return false }
        nodes[id]!.disk.snapshot = snapshot
        nodes[id]!.disk.entries.removeAll { $0.index <= snapshot.metadata.index }
        return true
    }

    // MARK: - The network

    /// Delivers messages in order, and those they cause, until none is left. Messages to or from
    /// an isolated or crashed node, and those `shouldDrop` picks, are lost.
    mutating func deliverAll(dropping shouldDrop: (Message) -> Bool = { _ in false }) {
        var delivered = 0
        while !inFlight.isEmpty {
            let message = inFlight.removeFirst()
            if shouldDrop(message) { continue }
            deliver(message)
            delivered += 1
            if delivered > 100_000 {
                Issue.record("the cluster never stops sending messages; the last: \(inFlight.suffix(6))")
                return
            }
        }
    }

    /// Delivers at most `count` messages in order; the network loses the rest.
    mutating func deliver(atMost count: Int) {
        for _ in 0..<count where !inFlight.isEmpty {
            deliver(inFlight.removeFirst())
        }
        inFlight = []
    }

    /// Hands one message to its addressee, as a transport would, and reports snapshot transfers back.
    mutating func deliver(_ message: Message) {
        let isLost = isolated.contains(message.from) || isolated.contains(message.to) || nodes[message.to]?.raft == nil
        if !isLost {
            self[message.to].step(message)
            process(message.to)
        }
        if case .snapshot = message.payload, nodes[message.from]?.raft != nil {
            self[message.from].reportSnapshot(peer: message.to, success: !isLost)
            process(message.from)
        }
    }

    /// Injects a message as if it came from the network, bypassing the queue. `node` defaults to the
    /// addressee; naming another node hands it a message that was not meant for it.
    mutating func step(_ message: Message, into node: NodeID? = nil) {
        let id = node ?? message.to
        self[id].step(message)
        process(id)
    }

    // MARK: - Handling Ready

    /// Handles every `Ready` of `id` in the documented order: send, persist, send what waited for the
    /// persist, apply, collect reads and events, advance.
    mutating func process(_ id: NodeID) {
        while nodes[id]?.raft != nil, let ready = nodes[id]!.raft!.ready() {
            nodes[id]!.readies.append(ReadyRecord(
                hardState: ready.hardState, entries: ready.entries, snapshot: ready.snapshot,
                messages: ready.messages, messagesAfterPersist: ready.messagesAfterPersist,
                committedEntries: ready.committedEntries, readStates: ready.readStates, events: ready.events))
            send(ready.messages)
            if let snapshot = ready.snapshot {
                nodes[id]!.disk.snapshot = snapshot
                nodes[id]!.disk.entries = []
                nodes[id]!.restoredSnapshot = snapshot
                nodes[id]!.applied = []
            }
            if let first = ready.entries.first {
                nodes[id]!.disk.entries.removeAll { $0.index >= first.index }
                nodes[id]!.disk.entries += ready.entries
            }
            if let hardState = ready.hardState { nodes[id]!.disk.hardState = hardState }
            send(ready.messagesAfterPersist)
            nodes[id]!.applied += ready.committedEntries
            nodes[id]!.readStates += ready.readStates
            nodes[id]!.events += ready.events
            nodes[id]!.raft!.advance(ready)
        }
    }

    private mutating func send(_ messages: [Message]) {
        sent += messages
        inFlight += messages
    }
}

extension Message.Payload {
    var isHeartbeat: Bool { if case .heartbeat = self { true } else { false } }
    var isAppend: Bool { if case .append = self { true } else { false } }
    var isVoteResponse: Bool { if case .voteResponse = self { true } else { false } }
    var isVoteRequest: Bool { if case .voteRequest = self { true } else { false } }

    var appendedEntries: [Entry] { if case .append(let append) = self { append.entries } else { [] } }

    var isRejectedAppendResponse: Bool {
        if case .appendResponse(let response) = self { response.isRejected } else { false }
    }
}
