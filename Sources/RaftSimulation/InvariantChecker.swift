import RaftCore

/// Raft's safety properties, checked incrementally after every step of a simulation.
struct InvariantChecker {
    /// Every leader seen, by term.
    private var leaders: [UInt64: NodeID] = [:]
    /// Every entry persisted anywhere, by (index, term): its payload and the term before it.
    private var persisted: [EntryKey: (payload: EntryPayload, previousTerm: UInt64?)] = [:]
    /// The entry applied at each index, by whichever node applied it first.
    private var applied: [UInt64: Entry] = [:]
    private(set) var highestApplied: UInt64 = 0
    /// For each committed index: the term of the leader that first committed it, and the entry's term.
    private var commits: [UInt64: (leaderTerm: UInt64, entryTerm: UInt64)] = [:]
    private var highestCommitted: UInt64 = 0
    /// Per key: the newest write order of any operation that has completed (linearizability floor).
    private var completedOrder: [UInt8: UInt64] = [:]
    /// Writes acknowledged to clients: index → operation.
    private var acknowledged: [UInt64: UInt64] = [:]
    private var acknowledgedOperations: Set<UInt64> = []

    struct EntryKey: Hashable {
        var index: UInt64
        var term: UInt64
    }

    enum Outcome {
        case written(order: UInt64)
        case read(order: UInt64)
        case failed
        case unknown
    }

    /// At most one leader per term (Election Safety); a priority-0 node never leads; a new leader
    /// holds every committed entry (Leader Completeness).
    mutating func becameLeader(_ node: SimulatedNode, term: UInt64, at time: UInt64, step: Int) throws {
        if let other = leaders[term], other != node.id {
            throw Violation(kind: .twoLeadersInOneTerm, step: step, time: time, detail: "nodes \(other) and \(node.id) both lead term \(term)")
        }
        leaders[term] = node.id
        guard let raft = node.raft else { return }
        if raft.membership.priority(of: node.id).isNeverLeader {
            throw Violation(kind: .priorityZeroLeader, step: step, time: time, detail: "node \(node.id) has priority 0 and leads term \(term)")
        }
        // Leader Completeness covers what leaders of earlier terms committed; a leader of a later
        // term may legitimately commit entries that this (slow) leader of an older term never saw.
        var index = max(raft.firstIndex, 1)
        while index <= highestCommitted {
            if let commit = commits[index], commit.leaderTerm < term, raft.term(at: index) != commit.entryTerm {
                throw Violation(kind: .leaderCompleteness, step: step, time: time, detail:
                    "leader \(node.id) of term \(term) has term \(raft.term(at: index).map(String.init) ?? "none") at index \(index), which the leader of term \(commit.leaderTerm) committed with term \(commit.entryTerm)")
            }
            index += 1
        }
    }

    /// Log Matching: two entries with the same index and term hold the same payload and follow the same term.
    mutating func persisted(_ entries: [Entry], by node: SimulatedNode, at time: UInt64, step: Int) throws {
        guard let raft = node.raft else { return }
        for entry in entries {
            let previousTerm = entry.index > 1 ? raft.term(at: entry.index - 1) : 0
            let key = EntryKey(index: entry.index, term: entry.term)
            if let known = persisted[key] {
                let termsDiffer = known.previousTerm != nil && previousTerm != nil && known.previousTerm != previousTerm
                if known.payload != entry.payload || termsDiffer {
                    throw Violation(kind: .logMatching, step: step, time: time, detail:
                        "node \(node.id) holds a different entry at index \(entry.index) term \(entry.term)")
                }
            } else {
                persisted[key] = (entry.payload, previousTerm)
            }
        }
    }

    /// State Machine Safety: no two nodes apply different entries at one index, and no acknowledged
    /// write is replaced.
    mutating func applied(_ entry: Entry, on node: SimulatedNode, at time: UInt64, step: Int) throws {
        if let known = applied[entry.index] {
            if known != entry {
                let lost = acknowledged[entry.index].map { " (acknowledged write \($0) lost)" } ?? ""
                throw Violation(kind: acknowledged[entry.index] == nil ? .divergentApply : .lostAcknowledgedWrite,
                                step: step, time: time, detail:
                    "node \(node.id) applies term \(entry.term) at index \(entry.index), another node applied term \(known.term)\(lost)")
            }
        } else {
            applied[entry.index] = entry
            highestApplied = max(highestApplied, entry.index)
        }
    }

    /// Commit and apply indices never go back within one life of a node.
    mutating func checkProgress(of node: SimulatedNode, among nodes: [SimulatedNode], at time: UInt64, step: Int) throws {
        guard let raft = node.raft else { return }
        if raft.isLeader && raft.commitIndex > highestCommitted {
            for index in (highestCommitted + 1)...raft.commitIndex where commits[index] == nil {
                if let entryTerm = raft.term(at: index) {
                    commits[index] = (raft.term, entryTerm)
                    try checkDurable(index: index, term: entryTerm, committedBy: node, among: nodes, at: time, step: step)
                }
            }
            highestCommitted = raft.commitIndex
        }
        if raft.commitIndex < node.lastCommit {
            throw Violation(kind: .commitWentBack, step: step, time: time, detail:
                "node \(node.id) commit went from \(node.lastCommit) to \(raft.commitIndex)")
        }
        if raft.appliedIndex < node.lastApplied {
            throw Violation(kind: .appliedWentBack, step: step, time: time, detail:
                "node \(node.id) applied went from \(node.lastApplied) to \(raft.appliedIndex)")
        }
        node.lastCommit = raft.commitIndex
        node.lastApplied = raft.appliedIndex
    }

    func isAcknowledged(_ operationID: UInt64) -> Bool { acknowledgedOperations.contains(operationID) }

    /// Leader Completeness, checked ahead of time: when an entry commits, no voter that lacks it may
    /// have a log at least as up to date as a quorum's, or it could be elected and lose the entry.
    /// (In correct Raft the holders form a quorum whose logs are strictly newer than any non-holder's.)
    func checkDurable(index: UInt64, term: UInt64, committedBy leader: SimulatedNode, among nodes: [SimulatedNode], at time: UInt64, step: Int) throws {
        let membership = leader.raft!.membership
        let voters = Set(membership.voters).union(membership.outgoingVoters).sorted()
        func view(_ id: NodeID) -> SimulatedNode? { nodes.first { $0.id == id } }
        for candidate in voters {
            guard let node = view(candidate), !node.holds(index: index, term: term) else { continue }
            let position = node.logPosition
            let supporters = Set(voters.filter { view($0).map { $0.logPosition <= position } ?? false })
            if membership.isQuorum(supporters.contains) {
                throw Violation(kind: .leaderCompleteness, step: step, time: time, detail:
                    "leader \(leader.id) committed index \(index) (term \(term)), but node \(candidate) lacks it and its log (term \(position.term), index \(position.index)) is as up to date as a quorum's: it could be elected and lose the entry")
            }
        }
    }

    /// The newest write order that a read starting now must at least see.
    func floor(for key: UInt8) -> UInt64 { completedOrder[key] ?? 0 }

    /// Linearizability of each register: writes take effect in log order, so a read is correct
    /// exactly when it sees a write no older than anything completed before it began.
    mutating func operationEnded(_ operation: ClientOperation, outcome: Outcome, at time: UInt64, step: Int) throws {
        let key = operation.key
        switch outcome {
        case .written(let order):
            acknowledged[order] = operation.id
            acknowledgedOperations.insert(operation.id)
            completedOrder[key] = max(completedOrder[key] ?? 0, order)
        case .read(let order):
            if order < operation.floor {
                throw Violation(kind: .nonLinearizableRead, step: step, time: time, detail:
                    "read \(operation.id) of key \(key) started at \(operation.started) saw the write at index \(order), but the write at index \(operation.floor) had completed before it began")
            }
            completedOrder[key] = max(completedOrder[key] ?? 0, order)
        case .failed, .unknown:
            break
        }
    }
}
