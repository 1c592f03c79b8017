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
    /// Proposals waiting for their entry to apply, by log index.
    var pendingApplies: [UInt64: PendingApply] = [:]
    /// Reads waiting for their read index and for the state machine to reach it, by context.
    var pendingReads: [UInt64: PendingRead] = [:]
    /// Outcomes of requests whose caller has not suspended yet (it was running the Ready loop).
    var finishedApplies: [UInt64: Result<[UInt8], RaftError>] = [:]
    var finishedReads: [UInt64: Result<UInt64, RaftError>] = [:]
    var nextTicket: UInt64 = 1
    /// Reads whose index is known, waiting for the state machine to reach it.
    var confirmedReads: [(index: UInt64, context: UInt64)] = []
    /// Ticks since `start`: the clock of request deadlines and snapshot transfers.
    var ticks: UInt64 = 0
    /// Snapshots this leader offered, by follower: the snapshot's index and the tick of the
    /// follower's last chunk request.
    var outgoingSnapshots: [NodeID: (index: UInt64, lastActivity: UInt64)] = [:]
    /// The snapshot this follower is fetching from its leader.
    var incomingSnapshot: IncomingSnapshot?
    /// The snapshot the leader serves chunks from, kept so that each chunk costs one read.
    var servedSnapshot: StoredSnapshot?
    /// Received snapshots refused because a file did not match the leader's manifest (then fetched again).
    public internal(set) var rejectedSnapshots = 0
    var nextReadContext: UInt64 = 1
    /// Set when the state machine or the disk failed: the group stops serving until restarted.
    public private(set) var failure: String?
    var replicatorListeners: [any ReplicatorStateListener] = []
    var leaderListeners: [@Sendable (_ leader: NodeID?, _ term: UInt64) -> Void] = []
    var droppedProposalListeners: [@Sendable (_ id: UInt64) -> Void] = []
    /// When a message from each peer last arrived.
    var lastContact: [NodeID: ContinuousClock.Instant] = [:]
    var isProcessing = false
    /// The last hard state handed to the log (durable or queued).
    var queuedHardState: HardState
    var isStopped = false
    var ticker: RaftTicker?
    var snapshotter: Task<Void, Never>?
    var isSnapshotting = false
    /// Entries up to this index are already in the state machine's own durable state.
    var skipApplyingThrough: UInt64 = 0

    struct PendingApply {
        var ticket: UInt64
        var term: UInt64
        var deadline: UInt64
        var waiter: CheckedContinuation<[UInt8], any Error>?
    }

    /// When a caller of `process` leaves the loop.
    enum LoopGoal {
        case drained
        case oneRound
        case apply(ticket: UInt64)
        case read(context: UInt64)
    }

    struct PendingRead {
        var deadline: UInt64
        var waiter: CheckedContinuation<UInt64, any Error>?
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
        // The core holds a snapshot's manifest, not its bytes: the files stay in the store.
        let stored = try snapshots.latest()
        let snapshot = stored.map { Snapshot(metadata: $0.manifest.metadata, data: $0.manifest.encodedBytes()) }
        if let state = log.state(of: group), state.lastIndex > 0 || state.hardState != nil || snapshot != nil {
            let first = max(state.firstIndex, (snapshot?.metadata.index ?? 0) + 1)
            let entries = state.lastIndex >= first ? try log.entries(group: group, in: first..<(state.lastIndex + 1)) : []
            if let stored, stateMachine.durableAppliedIndex < stored.manifest.metadata.index {
                try stateMachine.restore(from: Self.readWhole(stored))
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
        queuedHardState = recovered.hardState
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

    /// Stops ticking and fails every waiting request definitely or indefinitely, as fits.
    public func stop() {
        isStopped = true
        ticker?.unregister(self)
        snapshotter?.cancel()
        incomingSnapshot = nil
        for index in Array(pendingApplies.keys) { finishApply(at: index, .failure(.indefinite(.leadershipLost))) }
        for context in Array(pendingReads.keys) { finishRead(context, .failure(.definite(.shuttingDown))) }
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
        await receive([message])
    }

    /// Feeds messages from peers in order, then runs the loop once for all of them: a burst that
    /// queued while the group was busy costs one actor hop and one round.
    public func receive(_ messages: [Message]) async {
        for message in messages {
            guard !isStopped else { return }
            await step(message)
        }
        await process()
    }

    /// Hands one message to the core, or to the snapshot transfer it belongs to.
    private func step(_ message: Message) async {
        lastContact[message.from] = .now
        switch message.payload {
        case .snapshot(let snapshot):
            if await receiveSnapshotOffer(message, snapshot) { return }
        case .snapshotChunkRequest(let piece):
            serveSnapshotChunk(piece, to: message.from)
            return
        case .snapshotChunk(let piece, let data):
            await receiveSnapshotChunk(piece, data, from: message.from)
            return
        case .proposal(let id, var data) where node.currentRole == .leader:
            stateMachine.stampForwardedProposal(&data)
            node.step(Message(from: message.from, to: message.to, term: message.term, payload: .proposal(id: id, data: data)))
            return
        default:
            break
        }
        node.step(message)
    }

    /// Tells the core that the transport could not reach `peer`: the leader stops pipelining to it,
    /// and a quiesced group wakes, so that followers of a dead leader elect another.
    public func reportUnreachable(_ peer: NodeID) async {
        guard !isStopped else { return }
        node.reportUnreachable(peer)
        await process()
    }

    func tick() async {
        guard !isStopped else { return }
        ticks += 1
        node.tick()
        expireRequests()
        tickSnapshotTransfers()
        // At most one round here: the ticker must not wait behind a busy group's disk.
        await process(until: .oneRound)
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
        let ticket = nextTicket
        nextTicket += 1
        pendingApplies[index] = PendingApply(ticket: ticket, term: node.term, deadline: ticks + timeoutTicks, waiter: nil)
        // The caller drives the Ready loop itself when it is idle (no task to start), and leaves it
        // as soon as its own entry is done.
        await process(until: .apply(ticket: ticket))
        if let outcome = finishedApplies.removeValue(forKey: ticket) { return try outcome.get() }
        return try await withCheckedThrowingContinuation { continuation in
            pendingApplies[index]?.waiter = continuation
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
        // One round carries the proposal to the log and the leader; whatever follows is the loop's.
        await process(until: .oneRound)
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
        pendingReads[context] = PendingRead(deadline: ticks + timeoutTicks, waiter: nil)
        await process(until: .read(context: context))
        if let outcome = finishedReads.removeValue(forKey: context) { return try outcome.get() }
        return try await withCheckedThrowingContinuation { continuation in
            pendingReads[context]?.waiter = continuation
        }
    }

    /// `applyTimeout` in ticks, rounded up.
    var timeoutTicks: UInt64 {
        UInt64((options.applyTimeout / options.heartbeatInterval).rounded(.up))
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

    /// Completes a proposal: resumes its caller, or keeps the outcome for a caller still running the loop.
    func finishApply(at index: UInt64, _ outcome: Result<[UInt8], RaftError>) {
        guard let pending = pendingApplies.removeValue(forKey: index) else { return }
        if let waiter = pending.waiter {
            waiter.resume(with: outcome.mapError { $0 as any Error })
        } else {
            finishedApplies[pending.ticket] = outcome
        }
    }

    func finishRead(_ context: UInt64, _ outcome: Result<UInt64, RaftError>) {
        guard let pending = pendingReads.removeValue(forKey: context) else { return }
        if let waiter = pending.waiter {
            waiter.resume(with: outcome.mapError { $0 as any Error })
        } else {
            finishedReads[context] = outcome
        }
    }

    /// Fails requests whose deadline passed: checked on ticks, so a request costs no timer of its own.
    func expireRequests() {
        let timeout = options.applyTimeout
        for (index, pending) in pendingApplies where pending.deadline <= ticks {
            finishApply(at: index, .failure(.indefinite(.timedOut(after: timeout))))
        }
        // A read has no effect, so a read that timed out is a definite failure.
        for (context, pending) in pendingReads where pending.deadline <= ticks {
            finishRead(context, .failure(.definite(.rejected(.noLeader))))
        }
    }

    // MARK: - The Ready loop

    /// Hands every `Ready` to the network, the log and the state machine, in the order the core's
    /// contract demands. Re-entrant calls return at once: the running loop collects their output.
    /// A caller that waits for its own request stops once it is done; a task takes over the rest.
    func process(until goal: LoopGoal = .drained) async {
        guard !isProcessing else { return }
        isProcessing = true
        while !isStopped, let ready = node.ready() {
            guard await handle(ready) else { break }
            switch goal {
            case .drained: continue
            case .oneRound: break
            case .apply(let ticket): if finishedApplies[ticket] == nil { continue }
            case .read(let context): if finishedReads[context] == nil { continue }
            }
            break
        }
        isProcessing = false
        if !isStopped && node.hasReady { Task { await self.process() } }
    }

    /// One round of the loop; false when the group failed.
    func handle(_ ready: consuming Ready) async -> Bool {
        if !ready.messages.isEmpty { send(ready.messages) }
        if let snapshot = ready.snapshot {
            // The snapshot's files arrived in the store before the core saw the offer.
            do {
                guard let stored = try snapshots.snapshot(index: snapshot.metadata.index, term: snapshot.metadata.term) else {
                    throw RaftConfigError.invalid("snapshot \(snapshot.metadata.index)/\(snapshot.metadata.term) is not in the store")
                }
                try stateMachine.restore(from: Self.readWhole(stored))
            } catch {
                fail("snapshot at \(snapshot.metadata.index): \(error)")
                return false
            }
        }
        if ready.entries.isEmpty && ready.snapshot == nil, let hardState = ready.hardState,
           hardState.term == queuedHardState.term && hardState.vote == queuedHardState.vote {
            // Only the commit index moved. Nothing sent or applied depends on it being durable (the
            // entries are on a quorum already; a restart may find an older commit and relearn it, and
            // entries the state machine already holds are skipped), so it is queued behind earlier
            // writes without an fdatasync of its own (etcd's MustSync is false here too).
            do {
                _ = try log.enqueue([LogWrite(group: group, hardState: hardState)], sync: .deferred)
                queuedHardState = hardState
            } catch {
                fail("storage: \(error)")
                return false
            }
        } else if !ready.entries.isEmpty || ready.hardState != nil || ready.snapshot != nil {
            if let hardState = ready.hardState { queuedHardState = hardState }
            do {
                let started = ContinuousClock.now
                defer { metrics.persistLatency.recordInterval(since: started) }
                try await log.write([LogWrite(
                    group: group, snapshot: ready.snapshot?.metadata, entries: ready.entries, hardState: ready.hardState)])
            } catch {
                fail("storage: \(error)")
                return false
            }
        }
        if !ready.messagesAfterPersist.isEmpty { send(ready.messagesAfterPersist) }
        apply(ready.committedEntries)
        metrics.applied.increment(by: ready.committedEntries.count)
        for state in ready.readStates {
            confirmedReads.append((state.index, state.context))
        }
        for event in ready.events { handle(event) }
        node.advance(ready)
        serveConfirmedReads()
        return true
    }

    /// Sends messages, noting the snapshots offered so that a stalled transfer is noticed.
    func send(_ messages: [Message]) {
        for message in messages {
            if case .snapshot(let snapshot) = message.payload {
                outgoingSnapshots[message.to] = (snapshot.metadata.index, ticks)
            }
        }
        sender.send(messages, group: group)
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
            guard let pending = pendingApplies[entry.index] else { continue }
            if entry.term == pending.term {
                finishApply(at: entry.index, .success(results[entry.index] ?? []))
            } else {
                finishApply(at: entry.index, .failure(.definite(.overwritten(index: entry.index))))
            }
        }
    }

    func serveConfirmedReads() {
        let applied = node.appliedIndex
        confirmedReads.removeAll { read in
            guard read.index <= applied else { return false }
            finishRead(read.context, .success(read.index))
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
            for context in contexts { finishRead(context, .failure(.definite(.rejected(.notLeader(leaderHint: nil))))) }
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
        for index in Array(pendingApplies.keys) { finishApply(at: index, .failure(.indefinite(.leadershipLost))) }
        stateMachine.leaderStopped()
    }

    func fail(_ reason: String) {
        logger.error("group stopped", metadata: ["reason": "\(reason)"])
        metrics.failures.increment()
        failure = reason
        for index in Array(pendingApplies.keys) { finishApply(at: index, .failure(.indefinite(.stateMachineFailed(reason)))) }
        stop()
    }
}
