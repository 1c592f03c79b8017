import KVWire
import Synchronization

/// Commands this node proposed or forwarded, waiting for their entries to be applied here. The
/// state machine answers them by request id, whichever node was leader; a command whose entry
/// never shows up is failed as indefinite (by timeout, or when the leader changes).
final class ProposalWaiters: Sendable {
    private enum Slot {
        case reserved(deadline: ContinuousClock.Instant, count: Int)
        case waiting(deadline: ContinuousClock.Instant, count: Int, CheckedContinuation<[WriteOutcome], Never>)
        case answered([WriteOutcome])
    }

    private struct State {
        var nextRequest: UInt64
        var slots: [UInt64: Slot] = [:]
    }

    private let state: Mutex<State>

    /// Request ids start at a random point in each life of the process: entries a node proposed in
    /// an earlier life (replayed from its log, or forwarded and committed late) carry ids from another
    /// point of the 64-bit space, so they never answer a request of this life.
    init() {
        state = Mutex(State(nextRequest: UInt64.random(in: 1...(UInt64.max / 2))))
    }

    /// Reserves an id for a command of `count` writes, answered before `deadline` or failed as timed out.
    func reserve(count: Int, deadline: ContinuousClock.Instant) -> UInt64 {
        state.withLock { state in
            let id = state.nextRequest
            state.nextRequest += 1
            state.slots[id] = .reserved(deadline: deadline, count: count)
            return id
        }
    }

    /// The outcomes of request `id`; returns at once if they already arrived.
    func wait(_ id: UInt64) async -> [WriteOutcome] {
        await withCheckedContinuation { continuation in
            let ready: [WriteOutcome]? = state.withLock { state in
                switch state.slots[id] {
                case .answered(let outcomes):
                    state.slots[id] = nil
                    return outcomes
                case .reserved(let deadline, let count):
                    state.slots[id] = .waiting(deadline: deadline, count: count, continuation)
                    return nil
                case .waiting, nil:
                    return [.failure(.definite(.invalid("request \(id) is not reserved")))]
                }
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// Answers request `id` (applied here, or failed before it was proposed).
    func resolve(_ id: UInt64, with outcomes: [WriteOutcome]) {
        let continuation: CheckedContinuation<[WriteOutcome], Never>? = state.withLock { state in
            switch state.slots[id] {
            case .reserved:
                state.slots[id] = .answered(outcomes)
                return nil
            case .waiting(_, _, let continuation):
                state.slots[id] = nil
                return continuation
            case .answered, nil:
                return nil
            }
        }
        continuation?.resume(returning: outcomes)
    }

    /// Fails request `id`, if it is still open, with `error` for each of its writes.
    func fail(_ id: UInt64, with error: KVError) {
        let count: Int? = state.withLock { state in
            switch state.slots[id] {
            case .reserved(_, let count), .waiting(_, let count, _): return count
            case .answered, nil: return nil
            }
        }
        guard let count else { return }
        resolve(id, with: Array(repeating: .failure(error), count: count))
    }

    /// Fails every open request with `error`.
    func failAll(_ error: KVError) {
        fail(error) { _ in true }
    }

    /// Brings every open request's deadline to `deadline` at the latest. When the leader changes, an
    /// entry of the old term either commits soon under the new leader or never: waiting a little
    /// tells most of them apart, where failing at once would report them all as unknown.
    func shortenDeadlines(to deadline: ContinuousClock.Instant) {
        state.withLock { state in
            for (id, slot) in state.slots {
                switch slot {
                case .reserved(let old, let count) where old > deadline:
                    state.slots[id] = .reserved(deadline: deadline, count: count)
                case .waiting(let old, let count, let continuation) where old > deadline:
                    state.slots[id] = .waiting(deadline: deadline, count: count, continuation)
                default:
                    continue
                }
            }
        }
    }

    /// Fails the requests whose deadline passed.
    func expire(now: ContinuousClock.Instant) {
        fail(.indefinite(.timedOut)) { $0 <= now }
    }

    private func fail(_ error: KVError, where isDue: (ContinuousClock.Instant) -> Bool) {
        let due: [(UInt64, Int, CheckedContinuation<[WriteOutcome], Never>?)] = state.withLock { state in
            var due: [(UInt64, Int, CheckedContinuation<[WriteOutcome], Never>?)] = []
            for (id, slot) in state.slots {
                switch slot {
                case .reserved(let deadline, let count) where isDue(deadline):
                    due.append((id, count, nil))
                case .waiting(let deadline, let count, let continuation) where isDue(deadline):
                    due.append((id, count, continuation))
                default:
                    continue
                }
            }
            for (id, count, continuation) in due {
                if continuation == nil {
                    state.slots[id] = .answered(Array(repeating: .failure(error), count: count))
                } else {
                    state.slots[id] = nil
                }
            }
            return due
        }
        for (_, count, continuation) in due {
            continuation?.resume(returning: Array(repeating: .failure(error), count: count))
        }
    }

    var isEmpty: Bool { state.withLock { $0.slots.isEmpty } }
}
