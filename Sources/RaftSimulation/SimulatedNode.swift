import RaftCore

/// One simulated process: a Raft node (nil while crashed), its disk, and its state machine.
final class SimulatedNode {
    let id: NodeID
    var raft: RaftNode?
    /// Bumped on every start, so ticks of a previous life are ignored.
    var incarnation: UInt64 = 0
    var disk = SimulatedDisk.empty
    var stateMachine = RegisterStateMachine(snapshot: nil)
    var pausedUntil: UInt64 = 0
    var readStates: [ReadState] = []
    /// Client operations waiting on this node, by operation id (also the read context).
    var pendingOperations: [UInt64: ClientOperation] = [:]
    /// Commit and apply indices seen in this life, to check that they never go back.
    var lastCommit: UInt64 = 0
    var lastApplied: UInt64 = 0

    init(id: NodeID) { self.id = id }

    /// Where this node's log ends, as a candidate would present it: in memory while it runs, on disk
    /// while it is down.
    var logPosition: LogPosition {
        if let raft { return LogPosition(term: raft.term(at: raft.lastIndex) ?? 0, index: raft.lastIndex) }
        if let last = disk.entries.last { return LogPosition(term: last.term, index: last.index) }
        return LogPosition(term: disk.snapshot?.metadata.term ?? 0, index: disk.snapshot?.metadata.index ?? 0)
    }

    /// True when this node's log holds the entry at `index` of `term`, or a snapshot covering it.
    func holds(index: UInt64, term: UInt64) -> Bool {
        if let raft { return index < raft.firstIndex || raft.term(at: index) == term }
        if let snapshot = disk.snapshot, index <= snapshot.metadata.index { return true }
        return disk.entries.contains { $0.index == index && $0.term == term }
    }
}

/// The (last term, last index) pair that Raft's up-to-date rule compares.
struct LogPosition: Comparable, Sendable {
    var term: UInt64
    var index: UInt64

    static func < (lhs: Self, rhs: Self) -> Bool { (lhs.term, lhs.index) < (rhs.term, rhs.index) }
}

/// What a node has persisted: exactly what survives a crash.
struct SimulatedDisk: Sendable {
    var hardState: HardState
    var snapshot: Snapshot?
    var entries: [Entry]

    static let empty = SimulatedDisk(hardState: HardState(), snapshot: nil, entries: [])

    static func bootstrap(_ membership: Membership) -> SimulatedDisk {
        let state = RecoveredState.bootstrap(membership)
        return SimulatedDisk(hardState: state.hardState, snapshot: nil, entries: state.entries)
    }

    var recoveredState: RecoveredState { RecoveredState(hardState: hardState, snapshot: snapshot, entries: entries) }

    mutating func append(_ newEntries: [Entry]) {
        guard let first = newEntries.first else { return }
        entries.removeAll { $0.index >= first.index }
        entries.append(contentsOf: newEntries)
    }

    mutating func install(_ newSnapshot: Snapshot) {
        snapshot = newSnapshot
        entries.removeAll()
    }

    mutating func compact(_ newSnapshot: Snapshot) {
        snapshot = newSnapshot
        entries.removeAll { $0.index <= newSnapshot.metadata.index }
    }
}

/// A client's write as it travels in an entry: which key, which value, and which operation wrote it.
struct WriteCommand: Sendable, Hashable {
    var key: UInt8
    var operationID: UInt64

    init(key: UInt8, operationID: UInt64) {
        self.key = key
        self.operationID = operationID
    }

    init?(_ data: [UInt8]) {
        guard data.count == 9 else { return nil }
        key = data[0]
        operationID = data[1...].reduce(0) { $0 << 8 | UInt64($1) }
    }

    var encoded: [UInt8] { [key] + (0..<8).reversed().map { UInt8(truncatingIfNeeded: operationID >> ($0 * 8)) } }
}

/// The simulated application: one register per key. Each value remembers the log index that wrote
/// it, which is its place in the order of writes.
struct RegisterStateMachine: Sendable {
    private var values: [UInt8: (operationID: UInt64, order: UInt64)] = [:]

    init(snapshot: Snapshot?) {
        guard let data = snapshot?.data else { return }
        var offset = 0
        while offset + 17 <= data.count {
            let key = data[offset]
            let id = data[(offset + 1)..<(offset + 9)].reduce(0) { $0 << 8 | UInt64($1) }
            let order = data[(offset + 9)..<(offset + 17)].reduce(0) { $0 << 8 | UInt64($1) }
            values[key] = (id, order)
            offset += 17
        }
    }

    mutating func apply(_ command: WriteCommand, at index: UInt64) {
        values[command.key] = (command.operationID, index)
    }

    func value(of key: UInt8) -> (operationID: UInt64, order: UInt64) { values[key] ?? (0, 0) }

    var snapshotData: [UInt8] {
        var data: [UInt8] = []
        for key in values.keys.sorted() {
            let value = values[key]!
            data.append(key)
            for shift in stride(from: 56, through: 0, by: -8) { data.append(UInt8(truncatingIfNeeded: value.operationID >> UInt64(shift))) }
            for shift in stride(from: 56, through: 0, by: -8) { data.append(UInt8(truncatingIfNeeded: value.order >> UInt64(shift))) }
        }
        return data
    }
}

/// A client operation in flight.
struct ClientOperation: Sendable {
    enum Kind: Sendable {
        case write(key: UInt8, node: NodeID, index: UInt64)
        case read(key: UInt8)
    }

    var id: UInt64
    var kind: Kind
    var started: UInt64
    /// For reads: the newest write order any operation that completed before this one began had seen.
    var floor: UInt64

    var key: UInt8 {
        switch kind {
        case .write(let key, _, _), .read(let key): return key
        }
    }
}
