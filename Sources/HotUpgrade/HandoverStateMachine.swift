/// Why a handover did not complete.
public enum HandoverFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// The peer speaks another protocol version.
    case versionMismatch(UInt16)
    /// The peer runs as another user (SO_PEERCRED).
    case wrongUser(UInt32)
    /// The peer said it cannot go on (bad config, a listener it does not know, a failed adoption).
    case peerAborted(String)
    /// The peer refused us (the new process's view of a version or uid refusal).
    case refused(String)
    /// The connection to the peer closed or broke (the peer crashed or was killed).
    case peerGone
    /// A message that makes no sense at this step, or bytes that are not a valid frame.
    case protocolViolation(String)
    /// The peer did not answer within the step deadline.
    case timedOut

    public var description: String {
        switch self {
        case .versionMismatch(let version): "protocol version \(version) is not ours (\(HandoverStateMachine.protocolVersion))"
        case .wrongUser(let uid): "peer runs as uid \(uid)"
        case .peerAborted(let reason): "peer aborted: \(reason)"
        case .refused(let reason): "refused: \(reason)"
        case .peerGone: "peer went away"
        case .protocolViolation(let what): "protocol violation: \(what)"
        case .timedOut: "peer timed out"
        }
    }
}

/// The old process's side of a handover, as a pure value: the shell feeds it what happened and performs the
/// actions it returns (style.md §4). It does no I/O and reads no clock.
///
/// The commit point is the `ready` message: until the new process says it accepts on every listener, the old
/// process has changed nothing and a failure leaves it exactly as it was (`rolledBack`). From `ready` on the old
/// process stops accepting and hands connections over; a failure after that point resumes accepting on the
/// listener copies it kept and takes back the connections the new process has not acknowledged (`resumed`).
/// Connections the new process acknowledged are its own and end with it if it dies.
///
/// Up to `batchesInFlight` batches may be sent before the first is acknowledged. The new process handles batches in
/// the order they arrive on the one stream, so each acknowledgement answers the oldest batch in flight and must
/// count exactly its connections; anything else is a protocol violation.
public struct HandoverStateMachine: Sendable, Equatable {
    /// Bumped whenever a message's encoding or meaning changes; both sides must agree exactly.
    /// 2: connections may carry HTTP/2 state (`HandoverConnection.State.http2`), which version 1 cannot decode.
    public static let protocolVersion: UInt16 = 2
    /// Four batches of at most 250 descriptors keep fewer than 1,024 descriptors in flight, the default open-file
    /// limit past which the kernel refuses to pass more (ETOOMANYREFS).
    public static let defaultBatchesInFlight = 4

    /// Where the handover is.
    public enum State: Sendable, Equatable {
        /// A peer connected; nothing was sent yet.
        case waitingForHello
        /// Listener copies are on their way; the old process still accepts. Before the commit point.
        case waitingForReady
        /// Committed: the old process stopped accepting; `inFlight` holds the size of each batch sent and not yet
        /// acknowledged, oldest first.
        case moving(inFlight: [Int])
        /// The old process holds nothing any more and may exit.
        case finished
        /// Failed before the commit point: nothing changed.
        case rolledBack(HandoverFailure)
        /// Failed after the commit point: accepting again, unacknowledged connections taken back.
        case resumed(HandoverFailure)
    }

    /// What happened, as the shell saw it.
    public enum Event: Sendable, Equatable {
        case hello(version: UInt16, peerUID: UInt32)
        case ready
        case aborted(String)
        /// A batch of this many connections went out; only when `canSendBatch`.
        case batchSent(Int)
        /// The new process acknowledged its oldest batch in flight, which had this many connections.
        case adopted(Int)
        /// The proxy holds no connection and none is in flight.
        case drained
        case failed(HandoverFailure)
    }

    /// What the shell must do, in order.
    public enum Action: Sendable, Equatable {
        case refuse(String)
        case sendWelcome
        case sendListeners
        /// The commit point: stop accepting (keep the listener copies until the end).
        case stopAccepting
        /// Tell the new process it is the only one accepting now (it waited, so that no accept races ours).
        case sendStoppedAccepting
        /// Start capturing connections in batches spread over the window.
        case startMoving
        case resumeAccepting
        case takeBackUnacknowledged
        case sendDone
        case close
    }

    public private(set) var state: State = .waitingForHello
    private let ownUID: UInt32
    /// How many batches may be sent and not yet acknowledged.
    public let batchesInFlight: Int

    public init(ownUID: UInt32, batchesInFlight: Int = Self.defaultBatchesInFlight) {
        precondition(batchesInFlight > 0, "at least one batch must be allowed in flight")
        self.ownUID = ownUID
        self.batchesInFlight = batchesInFlight
    }

    /// Whether the shell may send another batch now.
    public var canSendBatch: Bool {
        guard case .moving(let inFlight) = state else { return false }
        return inFlight.count < batchesInFlight
    }

    /// Whether the handover ended, one way or the other.
    public var isOver: Bool {
        switch state {
        case .finished, .rolledBack, .resumed: true
        case .waitingForHello, .waitingForReady, .moving: false
        }
    }

    public mutating func handle(_ event: Event) -> [Action] {
        switch (state, event) {
        case (.waitingForHello, .hello(let version, let uid)):
            if version != Self.protocolVersion { return refuse(.versionMismatch(version)) }
            if uid != ownUID { return refuse(.wrongUser(uid)) }
            state = .waitingForReady
            return [.sendWelcome, .sendListeners]
        case (.waitingForReady, .ready):
            state = .moving(inFlight: [])
            return [.stopAccepting, .sendStoppedAccepting, .startMoving]
        case (.moving(let inFlight), .batchSent(let count)):
            guard inFlight.count < batchesInFlight else {
                return fail(.protocolViolation("a batch sent with \(inFlight.count) in flight, at most \(batchesInFlight) allowed"))
            }
            state = .moving(inFlight: inFlight + [count])
            return []
        case (.moving(let inFlight), .adopted(let count)):
            guard let oldest = inFlight.first else { return fail(.protocolViolation("\(count) adopted, no batch in flight")) }
            guard count == oldest else { return fail(.protocolViolation("\(count) adopted of a batch of \(oldest)")) }
            state = .moving(inFlight: Array(inFlight.dropFirst()))
            return []
        case (.moving(let inFlight), .drained):
            guard inFlight.isEmpty else { return [] }
            state = .finished
            return [.sendDone, .close]
        case (_, .aborted(let reason)):
            return fail(.peerAborted(reason))
        case (_, .failed(let failure)):
            return fail(failure)
        default:
            return fail(.protocolViolation("\(event) while \(state)"))
        }
    }

    private mutating func refuse(_ failure: HandoverFailure) -> [Action] {
        state = .rolledBack(failure)
        return [.refuse(failure.description), .close]
    }

    private mutating func fail(_ failure: HandoverFailure) -> [Action] {
        switch state {
        case .waitingForHello, .waitingForReady:
            state = .rolledBack(failure)
            return [.close]
        case .moving:
            state = .resumed(failure)
            return [.resumeAccepting, .takeBackUnacknowledged, .close]
        case .finished, .rolledBack, .resumed:
            return []
        }
    }
}

/// The new process's side of a handover, as a pure value.
///
/// Once it is `finished` the shell claims the upgrade socket path, so that the next upgrade finds this process.
/// Its commit point is sending `ready`: from then on it accepts on the listeners. If the old process dies before
/// that, the new one gives up (the old one, if alive, still has everything); if it dies after, the new one keeps
/// what it has and serves on.
public struct TakeoverStateMachine: Sendable, Equatable {
    /// Where the takeover is.
    public enum State: Sendable, Equatable {
        case waitingForWelcome
        case waitingForListeners
        case adoptingListeners
        /// Committed: adopting connections as they come; accepting once the old process has stopped.
        case receiving(isAccepting: Bool)
        /// Serving everything; the old process is done or gone.
        case finished
        /// Gave up before the commit point; the process should exit.
        case failed(HandoverFailure)
    }

    /// What happened, as the shell saw it.
    public enum Event: Sendable, Equatable {
        case welcome(version: UInt16)
        case refused(String)
        case listeners([String])
        case listenersAdopted
        case listenersFailed(String)
        /// The old process no longer accepts.
        case stoppedAccepting
        case connections(Int)
        case connectionsAdopted(Int)
        case done
        case failed(HandoverFailure)
    }

    /// What the shell must do, in order.
    public enum Action: Sendable, Equatable {
        /// Take the listeners without accepting on them yet: two processes accepting from one queue race each other.
        case adoptListeners
        case startAccepting
        case sendReady
        case sendAbort(String)
        case adoptConnections
        case sendAdopted(Int)
        case close
    }

    public private(set) var state: State = .waitingForWelcome
    private let knownListeners: Set<String>

    /// `knownListeners` are the listener names of this process's config; the old process must not send others.
    public init(knownListeners: Set<String>) {
        self.knownListeners = knownListeners
    }

    public mutating func handle(_ event: Event) -> [Action] {
        switch (state, event) {
        case (.waitingForWelcome, .welcome(let version)):
            guard version == HandoverStateMachine.protocolVersion else { return fail(.versionMismatch(version)) }
            state = .waitingForListeners
            return []
        case (.waitingForWelcome, .refused(let reason)):
            return fail(.refused(reason))
        case (.waitingForListeners, .listeners(let names)):
            let unknown = names.filter { !knownListeners.contains($0) }
            guard unknown.isEmpty else {
                let reason = "listeners not in this config: \(unknown.sorted().joined(separator: ", "))"
                state = .failed(.peerAborted(reason))
                return [.sendAbort(reason), .close]
            }
            state = .adoptingListeners
            return [.adoptListeners]
        case (.adoptingListeners, .listenersAdopted):
            state = .receiving(isAccepting: false)
            return [.sendReady]
        case (.adoptingListeners, .listenersFailed(let reason)):
            state = .failed(.peerAborted(reason))
            return [.sendAbort(reason), .close]
        case (.receiving(isAccepting: false), .stoppedAccepting):
            state = .receiving(isAccepting: true)
            return [.startAccepting]
        case (.receiving, .connections):
            return [.adoptConnections]
        case (.receiving, .connectionsAdopted(let count)):
            return [.sendAdopted(count)]
        case (.receiving(let isAccepting), .done):
            state = .finished
            return isAccepting ? [.close] : [.startAccepting, .close]
        case (_, .failed(let failure)):
            return fail(failure)
        default:
            return fail(.protocolViolation("\(event) while \(state)"))
        }
    }

    private mutating func fail(_ failure: HandoverFailure) -> [Action] {
        switch state {
        case .finished, .failed:
            return []
        case .receiving(let isAccepting):
            // The old process died (or broke the protocol) after the commit point: what arrived is ours.
            state = .finished
            return isAccepting ? [.close] : [.startAccepting, .close]
        case .waitingForWelcome, .waitingForListeners, .adoptingListeners:
            state = .failed(failure)
            return [.close]
        }
    }
}
