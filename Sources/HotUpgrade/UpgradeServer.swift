#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOConcurrencyHelpers
import NIOPosix
import SystemPackage

/// Timing of a handover.
public struct HandoverOptions: Sendable {
    /// Connections move in batches spread over this window (MOSN uses 30–60 s; short windows suit a sidecar).
    public var window: Duration
    /// How often a batch is taken.
    public var tick: Duration
    /// How long one message may take to arrive before the peer counts as gone.
    public var stepTimeout: Duration
    /// After the window, how long connections that never reach a safe point may keep the old process alive.
    public var drainTimeout: Duration
    /// How many batches may be on their way before the first is acknowledged.
    public var batchesInFlight: Int

    public init(
        window: Duration = .seconds(1), tick: Duration = .milliseconds(20), stepTimeout: Duration = .seconds(30),
        drainTimeout: Duration = .seconds(30), batchesInFlight: Int = HandoverStateMachine.defaultBatchesInFlight
    ) {
        self.window = window
        self.tick = tick
        self.stepTimeout = stepTimeout
        self.drainTimeout = drainTimeout
        self.batchesInFlight = batchesInFlight
    }
}

/// The old process's shell: listens on the upgrade socket and runs `HandoverStateMachine` for each new process that
/// connects; also starts a successor on request (`divan mesh upgrade`, SIGHUP).
public final class UpgradeServer: Sendable {
    public let path: FilePath
    private let listener: HandoverListenerSocket
    private let donor: HandoverDonor
    private let options: HandoverOptions
    private let logger: Logger
    private let spawnSuccessor: @Sendable () throws -> Int32
    private let pool: NIOThreadPool
    private let state = NIOLockedValueBox(ServerState())

    struct ServerState {
        var isStopped = false
        var sessionActive = false
        /// A successor was started and its session has not ended yet.
        var upgrading = false
        /// Set when a session ended after the commit point: the old process is to exit.
        var handedOver = false
        var lastOutcome: HandoverReport.Outcome?
        var sessionsEnded = 0
    }

    /// Binds the upgrade socket at `path` (claiming it from a predecessor, if any).
    ///
    /// `spawnSuccessor` starts the new process (the binary at this process's path, told to take over through `path`)
    /// and returns its pid.
    public init(
        path: FilePath, donor: HandoverDonor, options: HandoverOptions = HandoverOptions(), logger: Logger,
        spawnSuccessor: @escaping @Sendable () throws -> Int32
    ) throws {
        self.path = path
        self.listener = try HandoverListenerSocket(path: path)
        self.donor = donor
        self.options = options
        self.logger = logger
        self.spawnSuccessor = spawnSuccessor
        self.pool = NIOThreadPool(numberOfThreads: 3)
        pool.start()
    }

    /// Serves the upgrade socket until `stop()` or until a handover finished; returns whether one did.
    public func run() async -> Bool {
        logger.notice("upgrade socket listening", metadata: ["path": "\(path)"])
        await withTaskGroup(of: Void.self) { group in
            while !state.withLockedValue({ $0.isStopped || $0.handedOver }) {
                let accepted: HandoverSocket?
                do {
                    accepted = try await pool.runIfActive { [listener, options] in
                        try listener.accept(timeout: .milliseconds(100), ioTimeout: options.stepTimeout)
                    }
                } catch {
                    logger.error("upgrade socket accept failed", metadata: ["error": "\(error)"])
                    break
                }
                guard let socket = accepted else { continue }
                group.addTask { await self.serve(socket) }
            }
        }
        // Closed only here, once no accept is waiting on it: a descriptor closed under a poll may be reused.
        listener.close()
        try? await pool.shutdownGracefully()
        return state.withLockedValue { $0.handedOver }
    }

    /// Makes `run()` return (within its 100 ms accept poll); it then removes the socket file, unless a successor
    /// claimed the path.
    public func stop() {
        state.withLockedValue { $0.isStopped = true }
    }

    /// Starts a successor and hands over to it; returns its pid when it took over, or why not.
    public func upgrade() async -> Result<Int32, HandoverFailure> {
        let (before, busy) = state.withLockedValue { state in
            let busy = state.upgrading || state.sessionActive
            if !busy { state.upgrading = true }
            return (state.sessionsEnded, busy)
        }
        guard !busy else { return .failure(.peerAborted("an upgrade is already in progress")) }
        defer { state.withLockedValue { $0.upgrading = false } }
        let pid: Int32
        do {
            pid = try spawnSuccessor()
        } catch {
            logger.error("upgrade: cannot start the new process", metadata: ["error": "\(error)"])
            return .failure(.peerAborted("cannot start the new process: \(error)"))
        }
        logger.notice("upgrade: new process started", metadata: ["pid": "\(pid)"])
        let deadline = ContinuousClock.now + options.stepTimeout
        while true {
            let (ended, outcome, active) = state.withLockedValue { ($0.sessionsEnded > before, $0.lastOutcome, $0.sessionActive) }
            if ended {
                switch outcome {
                case .moved:
                    return .success(pid)
                case .resumed:
                    // Past the commit point the new process may hold connections: it is left to serve them.
                    return .failure(.peerAborted("handover failed after the commit point; pid \(pid) keeps what it adopted"))
                case .rolledBack, nil:
                    kill(pid, SIGKILL)
                    await reap(pid)
                    return .failure(.peerAborted("handover rolled back"))
                }
            }
            var status: Int32 = 0
            if !active && waitpid(pid, &status, WNOHANG) == pid {
                logger.error("upgrade: new process exited before the handover", metadata: ["pid": "\(pid)", "status": "\(status)"])
                return .failure(.peerGone)
            }
            if !active && ContinuousClock.now > deadline {
                kill(pid, SIGKILL)
                await reap(pid)
                logger.error("upgrade: new process never connected", metadata: ["pid": "\(pid)"])
                return .failure(.timedOut)
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    private func reap(_ pid: Int32) async {
        _ = try? await pool.runIfActive {
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }

    private func serve(_ socket: HandoverSocket) async {
        defer { socket.close() }
        let first: HandoverMessage
        let peer: (pid: Int32, uid: UInt32)
        do {
            peer = try socket.peerCredentials()
            first = try await blocking { try socket.receive() }
        } catch {
            logger.warning("upgrade socket: refused a peer", metadata: ["error": "\(error)"])
            return
        }
        switch first {
        case .upgradeRequest:
            guard peer.uid == getuid() else {
                logger.warning("upgrade socket: refused an upgrade request", metadata: ["uid": "\(peer.uid)"])
                try? await blocking { try socket.send(.refuse(reason: HandoverFailure.wrongUser(peer.uid).description)) }
                return
            }
            let result = await upgrade()
            let reply: HandoverMessage
            switch result {
            case .success(let pid): reply = .upgradeResult(pid: pid, succeeded: true, message: "pid \(getpid()) handed over to pid \(pid)")
            case .failure(let failure): reply = .upgradeResult(pid: getpid(), succeeded: false, message: "\(failure); pid \(getpid()) keeps serving")
            }
            try? await blocking { try socket.send(reply) }
        case .hello(let version, let pid):
            let busy = state.withLockedValue { state in
                defer { state.sessionActive = true }
                return state.sessionActive
            }
            guard !busy else {
                logger.warning("upgrade socket: refused a second new process", metadata: ["pid": "\(pid)"])
                try? await blocking { try socket.send(.refuse(reason: "a handover is in progress")) }
                return
            }
            let outcome = await runSession(socket, version: version, peer: peer)
            state.withLockedValue { state in
                state.sessionActive = false
                state.lastOutcome = outcome
                state.sessionsEnded += 1
                if outcome == .moved { state.handedOver = true }
            }
        default:
            logger.warning("upgrade socket: refused a peer", metadata: ["error": "\(HandoverFailure.protocolViolation("\(first) as first message"))"])
        }
    }

    /// Runs one handover with a new process that said hello.
    private func runSession(_ socket: HandoverSocket, version: UInt16, peer: (pid: Int32, uid: UInt32)) async -> HandoverReport.Outcome {
        var logger = logger
        logger[metadataKey: "new_pid"] = "\(peer.pid)"
        let start = ContinuousClock.now
        var machine = HandoverStateMachine(ownUID: getuid(), batchesInFlight: options.batchesInFlight)
        var listenerCopies: [HandoverListener] = []
        var unacknowledged: [HandoverConnection] = []
        var moved = 0
        var bytes = 0
        var pending = machine.handle(.hello(version: version, peerUID: peer.uid))
        logger.notice("handover: new process said hello", metadata: ["version": "\(version)", "uid": "\(peer.uid)"])
        while !pending.isEmpty {
            let action = pending.removeFirst()
            var event: HandoverStateMachine.Event?
            do {
                switch action {
                case .refuse(let reason):
                    logger.warning("handover: refused", metadata: ["reason": "\(reason)"])
                    try? await blocking { try socket.send(.refuse(reason: reason)) }
                case .sendWelcome:
                    try await blocking { try socket.send(.welcome(version: HandoverStateMachine.protocolVersion, pid: getpid())) }
                case .sendListeners:
                    do {
                        listenerCopies = try await donor.duplicateListeners()
                    } catch {
                        event = .failed(.protocolViolation("cannot duplicate listeners: \(error)"))
                        break
                    }
                    let message = HandoverMessage.listeners(names: listenerCopies.map(\.name), descriptors: listenerCopies.map(\.descriptor))
                    try await blocking { try socket.send(message) }
                    logger.notice("handover: listeners sent", metadata: ["count": "\(listenerCopies.count)"])
                    event = try await receiveEvent(socket)
                case .stopAccepting:
                    await donor.stopAccepting()
                    logger.notice("handover: committed; stopped accepting")
                case .sendStoppedAccepting:
                    try await blocking { try socket.send(.stoppedAccepting) }
                case .startMoving:
                    pending += await moveConnections(
                        socket, machine: &machine, unacknowledged: &unacknowledged, moved: &moved, bytes: &bytes, logger: logger)
                case .resumeAccepting:
                    do {
                        try await donor.resumeAccepting(listenerCopies)
                        listenerCopies = []
                        logger.notice("handover: accepting again")
                    } catch {
                        logger.critical("handover: cannot accept again", metadata: ["error": "\(error)"])
                    }
                case .takeBackUnacknowledged:
                    for failure in await donor.adopt(unacknowledged) {
                        logger.error(
                            "handover: cannot take a connection back", metadata: ["id": "\(failure.connection.id)", "error": "\(failure.reason)"])
                        closeDescriptors([failure.connection])
                    }
                    logger.notice("handover: took back unacknowledged connections", metadata: ["count": "\(unacknowledged.count)"])
                    unacknowledged = []
                case .sendDone:
                    try await blocking { try socket.send(.done) }
                case .close:
                    socket.close()
                }
            } catch let failure as HandoverFailure {
                event = .failed(failure)
            } catch {
                event = .failed(.protocolViolation("\(error)"))
            }
            if let event { pending += machine.handle(event) }
        }
        for copy in listenerCopies { close(copy.descriptor) }
        let duration = ContinuousClock.now - start
        let outcome: HandoverReport.Outcome
        switch machine.state {
        case .finished:
            outcome = .moved
            logger.notice("handover: finished", metadata: ["connections": "\(moved)", "bytes": "\(bytes)", "duration": "\(duration)"])
        case .rolledBack(let failure):
            outcome = .rolledBack
            logger.warning("handover: rolled back before the commit point; serving as before", metadata: ["reason": "\(failure)"])
        case .resumed(let failure):
            outcome = .resumed
            logger.error("handover: failed after the commit point; serving again", metadata: ["reason": "\(failure)", "moved": "\(moved)"])
        case .waitingForHello, .waitingForReady, .moving:
            preconditionFailure("a session ends only in a final state")
        }
        donor.record(HandoverReport(role: .old, outcome: outcome, connectionsMoved: moved, bytesForwarded: bytes, duration: duration))
        return outcome
    }

    private func receiveEvent(_ socket: HandoverSocket) async throws -> HandoverStateMachine.Event {
        switch try await blocking({ try socket.receive() }) {
        case .ready: return .ready
        case .abort(let reason): return .aborted(reason)
        case .adopted(let count): return .adopted(Int(count))
        case let other: return .failed(.protocolViolation("unexpected \(other)"))
        }
    }

    /// Moves connections in batches over the window, keeping up to `batchesInFlight` batches on their way; returns the
    /// actions of the event that ends the phase (`drained` or a failure). On a failure, `unacknowledged` holds every
    /// captured connection the new process did not acknowledge: those in flight and those not sent yet.
    private func moveConnections(
        _ socket: HandoverSocket, machine: inout HandoverStateMachine, unacknowledged: inout [HandoverConnection],
        moved: inout Int, bytes: inout Int, logger: Logger
    ) async -> [HandoverStateMachine.Action] {
        let start = ContinuousClock.now
        let total = await donor.heldConnectionCount()
        let ticks = max(1, Int(options.window / options.tick))
        let perTick = max(1, (total + ticks - 1) / ticks)
        // Sent and not yet acknowledged, oldest first: the new process acknowledges in this order.
        var inFlight: [[HandoverConnection]] = []
        // Captured and not sent yet.
        var waiting: [[HandoverConnection]] = []
        defer { unacknowledged = Array(inFlight.joined()) + Array(waiting.joined()) }
        var lastSent = ContinuousClock.now
        logger.notice(
            "handover: moving connections",
            metadata: ["connections": "\(total)", "window": "\(options.window)", "batches_in_flight": "\(machine.batchesInFlight)"])
        while true {
            let elapsed = ContinuousClock.now - start
            if waiting.isEmpty {
                let limit = elapsed < options.window ? perTick : Int.max
                waiting = Self.batches(await donor.captureConnections(markingUpTo: limit))
            }
            while machine.canSendBatch, let batch = waiting.first {
                waiting.removeFirst()
                inFlight.append(batch)
                _ = machine.handle(.batchSent(batch.count))
                do {
                    try await blocking { try socket.send(.connections(batch)) }
                } catch let failure as HandoverFailure {
                    return machine.handle(.failed(failure))
                } catch {
                    return machine.handle(.failed(.protocolViolation("\(error)")))
                }
                lastSent = .now
            }
            if let oldest = inFlight.first {
                let event: HandoverStateMachine.Event
                do {
                    event = try await receiveEvent(socket)
                } catch let failure as HandoverFailure {
                    event = .failed(failure)
                } catch {
                    event = .failed(.protocolViolation("\(error)"))
                }
                let actions = machine.handle(event)
                if machine.isOver { return actions }
                inFlight.removeFirst()
                closeDescriptors(oldest)
                moved += oldest.count
                bytes += oldest.reduce(0) { $0 + $1.bufferedBytes }
                if !oldest.isEmpty {
                    logger.info("handover: batch moved", metadata: ["connections": "\(oldest.count)", "moved": "\(moved)"])
                }
                continue
            }
            // Nothing in flight and nothing captured.
            if await donor.heldConnectionCount() == 0 { return machine.handle(.drained) }
            if elapsed > options.window + options.drainTimeout {
                logger.warning("handover: connections never reached a safe point; they close with this process")
                return machine.handle(.drained)
            }
            if ContinuousClock.now - lastSent > .seconds(1) {
                // An empty batch keeps the new process from timing out while nothing can move yet.
                waiting = [[]]
                continue
            }
            try? await Task.sleep(for: options.tick)
        }
    }

    /// Splits captured connections into batches of at most `HandoverSocket.maxDescriptorsPerMessage` descriptors.
    private static func batches(_ connections: [HandoverConnection]) -> [[HandoverConnection]] {
        var batches: [[HandoverConnection]] = []
        var descriptors = HandoverSocket.maxDescriptorsPerMessage
        for connection in connections {
            if descriptors + connection.descriptors.count > HandoverSocket.maxDescriptorsPerMessage {
                batches.append([])
                descriptors = 0
            }
            batches[batches.count - 1].append(connection)
            descriptors += connection.descriptors.count
        }
        return batches
    }

    private func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }
}
