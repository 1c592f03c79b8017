#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOPosix
import SystemPackage

/// The new process's shell: connects to the old process's upgrade socket and runs `TakeoverStateMachine`.
public enum Takeover {
    /// Takes the old process's listeners and connections over.
    ///
    /// Returns once this process serves everything (the caller then claims the upgrade socket path by starting its
    /// own `UpgradeServer` there). Throws when the takeover failed before the commit point: the old process still
    /// serves, and this one should exit.
    public static func run(
        path: FilePath, recipient: HandoverRecipient, options: HandoverOptions = HandoverOptions(), logger: Logger
    ) async throws(HandoverFailure) -> HandoverReport {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        defer { pool.shutdownGracefully { _ in } }
        func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws(HandoverFailure) -> T {
            do {
                return try await pool.runIfActive(body)
            } catch let failure as HandoverFailure {
                throw failure
            } catch {
                throw .protocolViolation("\(error)")
            }
        }
        let start = ContinuousClock.now
        let socket: HandoverSocket
        do {
            socket = try HandoverSocket.connect(to: path, timeout: options.stepTimeout)
        } catch {
            logger.error("takeover: cannot reach the old process", metadata: ["path": "\(path)", "error": "\(error)"])
            throw .peerGone
        }
        defer { socket.close() }
        var machine = TakeoverStateMachine(knownListeners: recipient.listenerNames)
        var received: [HandoverListener] = []
        var batch: [HandoverConnection] = []
        var moved = 0
        var bytes = 0
        var pending: [TakeoverStateMachine.Action] = []
        func receive() async -> TakeoverStateMachine.Event {
            do {
                switch try await blocking({ try socket.receive() }) {
                case .welcome(let version, let pid):
                    logger.notice("takeover: welcomed", metadata: ["old_pid": "\(pid)"])
                    return .welcome(version: version)
                case .refuse(let reason): return .refused(reason)
                case .listeners(let names, let descriptors):
                    received = zip(names, descriptors).map { HandoverListener(name: $0, descriptor: $1) }
                    return .listeners(names)
                case .connections(let connections):
                    batch = connections
                    return .connections(connections.count)
                case .done: return .done
                case .stoppedAccepting: return .stoppedAccepting
                case let other: return .failed(.protocolViolation("unexpected \(other)"))
                }
            } catch {
                return .failed(error)
            }
        }
        do {
            try await blocking { try socket.send(.hello(version: HandoverStateMachine.protocolVersion, pid: getpid())) }
        } catch {
            pending = machine.handle(.failed(error))
        }
        logger.notice("takeover: said hello", metadata: ["path": "\(path)"])
        while true {
            if pending.isEmpty {
                if case .finished = machine.state { break }
                if case .failed = machine.state { break }
                pending = machine.handle(await receive())
                continue
            }
            switch pending.removeFirst() {
            case .adoptListeners:
                do {
                    for listener in received { try await recipient.adoptListener(listener) }
                    logger.notice("takeover: holding the old process's listeners", metadata: ["count": "\(received.count)"])
                    pending += machine.handle(.listenersAdopted)
                } catch {
                    pending += machine.handle(.listenersFailed("\(error)"))
                }
            case .startAccepting:
                await recipient.startAccepting()
                logger.notice("takeover: accepting")
            case .sendReady:
                do {
                    try await blocking { try socket.send(.ready) }
                } catch {
                    pending += machine.handle(.failed(error))
                }
            case .sendAbort(let reason):
                logger.error("takeover: aborting", metadata: ["reason": "\(reason)"])
                try? await blocking { try socket.send(.abort(reason: reason)) }
            case .adoptConnections:
                let failures = await recipient.adopt(batch)
                for failure in failures {
                    // The old process has closed its side: the connection ends here rather than hang.
                    logger.error("takeover: cannot adopt a connection", metadata: ["id": "\(failure.connection.id)", "error": "\(failure.reason)"])
                    closeDescriptors([failure.connection])
                }
                moved += batch.count - failures.count
                bytes += batch.reduce(0) { $0 + $1.bufferedBytes }
                pending += machine.handle(.connectionsAdopted(batch.count))
                batch = []
            case .sendAdopted(let count):
                do {
                    try await blocking { try socket.send(.adopted(count: UInt32(count))) }
                } catch {
                    pending += machine.handle(.failed(error))
                }
            case .close:
                socket.close()
            }
        }
        let duration = ContinuousClock.now - start
        if case .failed(let failure) = machine.state {
            logger.error("takeover: failed before the commit point; the old process keeps serving", metadata: ["reason": "\(failure)"])
            throw failure
        }
        logger.notice("takeover: finished", metadata: ["connections": "\(moved)", "bytes": "\(bytes)", "duration": "\(duration)"])
        let report = HandoverReport(role: .new, outcome: .moved, connectionsMoved: moved, bytesForwarded: bytes, duration: duration)
        recipient.record(report)
        return report
    }
}
