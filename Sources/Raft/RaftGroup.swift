import Logging
import Metrics
import RaftCore
import RaftStorage

/// One member of one Raft group, running: it drives the pure core with real time, the shared
/// write-ahead log and a message sender, applies committed entries to the state machine, and
/// answers `apply` and `readIndex` calls.
public actor RaftGroup {
    public nonisolated let group: UInt64
    public nonisolated let id: NodeID
    let options: RaftOptions
    let log: WriteAheadLog
    let sender: any RaftMessageSender
    let stateMachine: any StateMachine
    let snapshots: SnapshotStore
    var logger: Logger
    let metrics: GroupMetrics
    var node: RaftNode
    var pendingApplies: [UInt64: PendingApply] = [:]
    var pendingReads: [UInt64: CheckedContinuation<UInt64, any Error>] = [:]
    /// Reads whose index is known, waiting for the state machine to reach it.
    var confirmedReads: [(index: UInt64, context: UInt64)] = []
    var nextReadContext: UInt64 = 1
    /// Set when the state machine or the disk failed: the group stops serving until restarted.
    public private(set) var failure: String?
    var replicatorListeners: [any ReplicatorStateListener] = []
    var leaderListeners: [@Sendable (_ leader: NodeID?, _ term: UInt64) -> Void] = []
    var droppedProposalListeners: [@Sendable (_ id: UInt64) -> Void] = []
    /// When a message from each peer last arrived.
    var lastContact: [NodeID: ContinuousClock.Instant] = [:]
    var isProcessing = false
    var isStopped = false
    var ticker: RaftTicker?
    var snapshotter: Task<Void, Never>?
    var isSnapshotting = false
    /// Entries up to this index are already in the state machine's own durable state.
    var skipApplyingThrough: UInt64 = 0
    /// The name of the one file a state machine snapshot consists of.
    static let snapshotFile = "state"

    struct PendingApply {
        var term: UInt64
        var continuation: CheckedContinuation<[UInt8], any Error>
    }

    /// Opens the group from what `log` and `snapshots` hold. A group never seen before starts from
    /// `bootstrap` (a founding member) or empty (a node that joins an existing group).
    public init(
        group: UInt64, id: NodeID, bootstrap: Membership?, options: RaftOptions = RaftOptions(),
        log: WriteAheadLog, snapshots: SnapshotStore, sender: any RaftMessageSender, stateMachine: any StateMachine
    ) async throws {
        try options.validate()
        self.group = group
        self.id = id
        self.options = options
        self.log = log
        self.snapshots = snapshots
        self.sender = sender
        self.stateMachine = stateMachine
        var logger = Logger(label: "divan.raft")
        logger[metadataKey: "node"] = "\(id)"
        logger[metadataKey: "group"] = "\(group)"
        self.logger = logger
        self.metrics = GroupMetrics()
        let recovered: RecoveredState
        let snapshot = try snapshots.latest().map { stored in
            Snapshot(metadata: stored.manifest.metadata, data: try Self.readWhole(stored))
        }
        if let state = log.state(of: group), state.lastIndex > 0 || state.hardState != nil || snapshot != nil {
            let first = max(state.firstIndex, (snapshot?.metadata.index ?? 0) + 1)
            let entries = state.lastIndex >= first ? try log.entries(group: group, in: first..<(state.lastIndex + 1)) : []
            if let snapshot, stateMachine.durableAppliedIndex < snapshot.metadata.index {
                try stateMachine.restore(from: snapshot.data)
            }
            recovered = RecoveredState(hardState: state.hardState ?? HardState(), snapshot: snapshot, entries: entries)
        } else if let bootstrap {
            recovered = RecoveredState.bootstrap(bootstrap)
            try await log.append(group: group, entries: recovered.entries, hardState: recovered.hardState)
        } else {
            recovered = .empty
        }
        node = try RaftNode(config: options.coreConfig(id: id), recovered: recovered)
        skipApplyingThrough = stateMachine.durableAppliedIndex
        self.logger[metadataKey: "term"] = "\(node.term)"
        self.logger.info("opened", metadata: [
            "commit": "\(node.commitIndex)", "last_index": "\(node.lastIndex)",
            "snapshot_index": "\(recovered.snapshot?.metadata.index ?? 0)",
        ])
    }

    /// Starts ticking on the process's shared `ticker`, and the periodic snapshots. Call once.
    public func start(ticker: RaftTicker) async throws {
        guard ticker.interval == options.heartbeatInterval else {
            throw RaftConfigError.invalid("the ticker ticks every \(ticker.interval), the group's heartbeat is \(options.heartbeatInterval)")
        }
        self.ticker = ticker
        ticker.register(self)
        var random = DeterministicRandom(seed: group &* 0x9E37_79B9_7F4A_7C15 ^ id)
        let first = Self.firstSnapshotDelay(interval: options.snapshotInterval, random: &random)
        let every = options.snapshotInterval
        snapshotter = Task { [weak self] in
            try? await Task.sleep(for: first)
            while !Task.isCancelled {
                _ = try? await self?.takeSnapshot()
                try? await Task.sleep(for: every)
            }
        }
        await process()
    }

    /// SOFAJRaft 1.3.1: a group's first snapshot fires at a random moment in [interval / 2, interval),
    /// so the groups of one process do not all snapshot at once; later ones follow the interval.
    static func firstSnapshotDelay(interval: Duration, random: inout DeterministicRandom) -> Duration {
        let half = interval / 2
        let milliseconds = Int(half / .milliseconds(1))
        return half + .milliseconds(milliseconds > 0 ? random.below(milliseconds) : 0)
    }

    /// Snapshots the state machine as applied now and drops the log it covers. The view is taken at
    /// once; serializing and writing it happen in the background while the group keeps applying.
    /// Returns the snapshot's index, or nil when there is nothing new to cover.
    @discardableResult
    public func takeSnapshot() async throws -> UInt64? {
        guard !isSnapshotting, !isStopped else { return nil }
        let metadata = node.snapshotMetadata
        guard metadata.index >= node.firstIndex else { return nil }
        isSnapshotting = true
        defer { isSnapshotting = false }
        let view = stateMachine.snapshotView()
        let store = snapshots
        let data = try await Task.detached {
            let data = view.serialized()
            try Self.store(Snapshot(metadata: metadata, data: data), in: store)
            return data
        }.value
        guard node.compact(Snapshot(metadata: metadata, data: data)) else { return nil }
        try await log.compact(group: group, through: metadata.index)
        metrics.snapshots.increment()
        metrics.snapshotBytes.increment(by: data.count)
        logger.info("snapshot taken", metadata: ["index": "\(metadata.index)", "bytes": "\(data.count)"])
        return metadata.index
    }

    static func store(_ snapshot: Snapshot, in store: SnapshotStore) throws {
        let writer = try store.create(metadata: snapshot.metadata)
        try writer.write(file: snapshotFile, at: 0, snapshot.data)
        _ = try writer.finish()
    }

    static func readWhole(_ stored: StoredSnapshot) throws -> [UInt8] {
        guard let file = stored.manifest.files.first(where: { $0.name == snapshotFile }) else { return [] }
        var data: [UInt8] = []
        while UInt64(data.count) < file.size {
            data += try stored.reader.read(file: snapshotFile, at: UInt64(data.count), maximumLength: 1 << 20)
        }
        return data
    }

    /// Stops ticking and fails every waiting request definitely or indefinitely, as fits.
    public func stop() {
        isStopped = true
        ticker?.unregister(self)
        snapshotter?.cancel()
        for (_, pending) in pendingApplies { pending.continuation.resume(throwing: RaftError.indefinite(.leadershipLost)) }
        pendingApplies = [:]
        for (_, continuation) in pendingReads { continuation.resume(throwing: RaftError.definite(.shuttingDown)) }
        pendingReads = [:]
    }

    public func addReplicatorStateListener(_ listener: any ReplicatorStateListener) {
        replicatorListeners.append(listener)
    }

    /// Calls `listener` with the new leader (nil while none is known) and term whenever it changes.
    public func addLeaderChangeListener(_ listener: @escaping @Sendable (_ leader: NodeID?, _ term: UInt64) -> Void) {
        leaderListeners.append(listener)
    }

    /// Calls `listener` with the id of each forwarded proposal the leader did not take.
    public func addForwardedProposalDroppedListener(_ listener: @escaping @Sendable (_ id: UInt64) -> Void) {
        droppedProposalListeners.append(listener)
    }

    /// Feeds a message from a peer.
    public func receive(_ message: Message) async {
        guard !isStopped else { return }
        lastContact[message.from] = .now
        var message = message
        if case .proposal(let id, var data) = message.payload, node.currentRole == .leader {
            stateMachine.stampForwardedProposal(&data)
            message.payload = .proposal(id: id, data: data)
        }
        node.step(message)
        await process()
    }

    /// Tells the core that the transport could not reach `peer`, so the leader stops pipelining to it.
    public func reportUnreachable(_ peer: NodeID) async {
        guard !isStopped else { return }
        node.reportUnreachable(peer)
        await process()
    }

    func tick() async {
        guard !isStopped else { return }
        node.tick()
        await process()
    }

    // MARK: - Requests

    /// Replicates `data` and returns the state machine's result for it. Throws `RaftError.definite`
    /// when it certainly did not happen, `RaftError.indefinite` when it may have.
    public func apply(_ data: [UInt8]) async throws -> [UInt8] {
        if isStopped { throw RaftError.definite(.shuttingDown) }
        if let failure { throw RaftError.indefinite(.stateMachineFailed(failure)) }
        let index: UInt64
        metrics.proposals.increment()
        do {
            index = try node.propose(data)
        } catch {
            switch error {
            case .notLeader(let hint): throw RaftError.definite(.notLeader(leaderHint: hint))
            case .tooLarge(let bytes, let limit): throw RaftError.definite(.tooLarge(bytes: bytes, limit: limit))
            default: throw RaftError.definite(.rejected(error))
            }
        }
        let term = node.term
        let timeout = options.applyTimeout
        Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.timeOutApply(index: index, after: timeout)
        }
        return try await withCheckedThrowingContinuation { continuation in
            pendingApplies[index] = PendingApply(term: term, continuation: continuation)
            Task { await self.process() }
        }
    }

    /// Proposes `data` on the leader, or forwards it to the leader from any other role, without
    /// waiting: the caller recognises its entry when the state machine applies it (by an id inside
    /// `data`). Throws a definite error when it was neither proposed nor forwarded. A forwarded
    /// proposal the leader did not take is reported, with `id`, to the forwarded-drop listener.
    public func submit(_ data: [UInt8], id: UInt64) async throws -> ProposalRoute {
        if isStopped { throw RaftError.definite(.shuttingDown) }
        if let failure { throw RaftError.indefinite(.stateMachineFailed(failure)) }
        metrics.proposals.increment()
        let route: ProposalRoute
        do {
            route = try node.proposeOrForward(data, id: id)
        } catch {
            switch error {
            case .notLeader(let hint): throw RaftError.definite(.notLeader(leaderHint: hint))
            case .tooLarge(let bytes, let limit): throw RaftError.definite(.tooLarge(bytes: bytes, limit: limit))
            default: throw RaftError.definite(.rejected(error))
            }
        }
        await process()
        return route
    }

    /// A linearizable read point on any role: once this returns, the local state machine has applied
    /// everything that was committed when the call began.
    public func readIndex() async throws -> UInt64 {
        if isStopped { throw RaftError.definite(.shuttingDown) }
        let context = nextReadContext
        nextReadContext += 1
        do {
            try node.readIndex(context: context)
        } catch {
            throw RaftError.definite(.rejected(error))
        }
        let timeout = options.applyTimeout
        Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.timeOutRead(context: context, after: timeout)
        }
        return try await withCheckedThrowingContinuation { continuation in
            pendingReads[context] = continuation
            Task { await self.process() }
        }
    }

    /// Proposes a membership change (joint consensus for more than one voter).
    public func changeMembership(_ change: ConfigurationChange) async throws {
        do {
            _ = try node.proposeConfigurationChange(change)
        } catch {
            throw RaftError.definite(.rejected(error))
        }
        await process()
    }

    /// Hands leadership to `peer`.
    public func transferLeadership(to peer: NodeID) async throws {
        do {
            try node.transferLeadership(to: peer)
        } catch {
            throw RaftError.definite(.rejected(error))
        }
        await process()
    }

    public var status: RaftStatus { node.status }

    /// How long ago each peer was last heard from (any message), for status pages.
    public var timeSinceLastContact: [NodeID: Duration] {
        let now = ContinuousClock.now
        return lastContact.mapValues { now - $0 }
    }

    func timeOutApply(index: UInt64, after timeout: Duration) {
        pendingApplies.removeValue(forKey: index)?.continuation.resume(throwing: RaftError.indefinite(.timedOut(after: timeout)))
    }

    func timeOutRead(context: UInt64, after timeout: Duration) {
        // A read has no effect, so a read that timed out is a definite failure.
        pendingReads.removeValue(forKey: context)?.resume(throwing: RaftError.definite(.rejected(.noLeader)))
    }

    // MARK: - The Ready loop

    /// Hands every `Ready` to the network, the log and the state machine, in the order the core's
    /// contract demands. Re-entrant calls return at once: the running loop collects their output.
    func process() async {
        guard !isProcessing else { return }
        isProcessing = true
        defer { isProcessing = false }
        while !isStopped, let ready = node.ready() {
            if !ready.messages.isEmpty { sender.send(ready.messages, group: group) }
            if let snapshot = ready.snapshot {
                // The snapshot is durable in the store before the log points at it.
                do {
                    try Self.store(snapshot, in: snapshots)
                    try stateMachine.restore(from: snapshot.data)
                } catch {
                    fail("snapshot at \(snapshot.metadata.index): \(error)")
                    return
                }
            }
            if !ready.entries.isEmpty || ready.hardState != nil || ready.snapshot != nil {
                do {
                    let started = ContinuousClock.now
                    defer { metrics.persistLatency.recordInterval(since: started) }
                    try await log.write([LogWrite(
                        group: group, snapshot: ready.snapshot?.metadata, entries: ready.entries, hardState: ready.hardState)])
                } catch {
                    fail("storage: \(error)")
                    return
                }
            }
            if !ready.messagesAfterPersist.isEmpty { sender.send(ready.messagesAfterPersist, group: group) }
            apply(ready.committedEntries)
            metrics.applied.increment(by: ready.committedEntries.count)
            for state in ready.readStates {
                confirmedReads.append((state.index, state.context))
            }
            for event in ready.events { handle(event) }
            node.advance(ready)
            serveConfirmedReads()
        }
    }

    func apply(_ entries: [Entry]) {
        guard failure == nil, !entries.isEmpty else { return }
        let application = entries.compactMap { entry -> CommittedEntry? in
            guard case .normal(let data) = entry.payload, entry.index > skipApplyingThrough else { return nil }
            return CommittedEntry(index: entry.index, term: entry.term, data: data)
        }
        var results: [UInt64: [UInt8]] = [:]
        if !application.isEmpty {
            do {
                let output = try stateMachine.apply(application)
                for (entry, result) in zip(application, output) { results[entry.index] = result }
            } catch {
                fail("state machine: \(error)")
                return
            }
        }
        for entry in entries {
            guard let pending = pendingApplies.removeValue(forKey: entry.index) else { continue }
            if entry.term == pending.term {
                pending.continuation.resume(returning: results[entry.index] ?? [])
            } else {
                pending.continuation.resume(throwing: RaftError.definite(.overwritten(index: entry.index)))
            }
        }
    }

    func serveConfirmedReads() {
        let applied = node.appliedIndex
        confirmedReads.removeAll { read in
            guard read.index <= applied else { return false }
            pendingReads.removeValue(forKey: read.context)?.resume(returning: read.index)
            return true
        }
    }

    func handle(_ event: RaftEvent) {
        switch event {
        case .roleChanged(let role, let term):
            logger[metadataKey: "term"] = "\(term)"
            logger.info("role changed", metadata: ["role": "\(role.rawValue)"])
            if role == .leader { stateMachine.leaderStarted(term: term) }
        case .leaderChanged(let leader, let term):
            metrics.leaderChanges.increment()
            for listener in leaderListeners { listener(leader, term) }
            logger.info("leader changed", metadata: ["leader": "\(leader.map(String.init) ?? "none")"])
            if leader != id { failPendingAppliesAfterLeadershipLoss() }
        case .forwardedProposalDropped(let id):
            for listener in droppedProposalListeners { listener(id) }
        case .messageDropped(let from, let reason):
            metrics.droppedMessages.increment()
            logger.debug("message dropped", metadata: ["from": "\(from)", "reason": "\(reason.rawValue)"])
        case .readsDropped(let contexts):
            for context in contexts {
                pendingReads.removeValue(forKey: context)?.resume(throwing: RaftError.definite(.rejected(.notLeader(leaderHint: nil))))
            }
        case .replicator(let peer, let replicatorEvent):
            logger.debug("replicator", metadata: ["peer": "\(peer)", "event": "\(replicatorEvent)"])
            metrics.replicatorEvents[Self.name(of: replicatorEvent)]?.increment()
            for listener in replicatorListeners {
                switch replicatorEvent {
                case .created: listener.replicatorCreated(peer: peer)
                case .destroyed: listener.replicatorDestroyed(peer: peer)
                case .error(let reason): listener.replicatorError(peer: peer, reason)
                case .stateChanged, .online, .offline: listener.replicatorStateChanged(peer: peer, to: replicatorEvent)
                }
            }
        default:
            break
        }
    }

    static func name(of event: ReplicatorEvent) -> String {
        switch event {
        case .created: return "created"
        case .stateChanged(.probe): return "probe"
        case .stateChanged(.replicate): return "replicate"
        case .stateChanged(.snapshot): return "snapshot"
        case .online: return "online"
        case .offline: return "offline"
        case .error: return "error"
        case .destroyed: return "destroyed"
        }
    }

    func failPendingAppliesAfterLeadershipLoss() {
        guard !pendingApplies.isEmpty, node.currentRole != .leader else { return }
        // Our entries may still commit under the next leader: we cannot say either way.
        for (_, pending) in pendingApplies {
            pending.continuation.resume(throwing: RaftError.indefinite(.leadershipLost))
        }
        pendingApplies = [:]
        stateMachine.leaderStopped()
    }

    func fail(_ reason: String) {
        logger.error("group stopped", metadata: ["reason": "\(reason)"])
        metrics.failures.increment()
        failure = reason
        for (_, pending) in pendingApplies {
            pending.continuation.resume(throwing: RaftError.indefinite(.stateMachineFailed(reason)))
        }
        pendingApplies = [:]
        stop()
    }
}
