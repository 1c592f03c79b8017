import KVWire
import Raft
import RaftCore
import Synchronization

/// One region hosted by this store: its Raft group, its state machine, and the batcher that turns
/// concurrent writes into few proposals.
final class Region: Sendable {
    let id: UInt64
    let group: RaftGroup
    let machine: RegionStateMachine
    let waiters: ProposalWaiters
    let batcher: ProposalBatcher
    let writeTimeout: Duration

    init(id: UInt64, group: RaftGroup, machine: RegionStateMachine, waiters: ProposalWaiters, writeTimeout: Duration, maximumBatchBytes: Int) {
        self.id = id
        self.group = group
        self.machine = machine
        self.waiters = waiters
        self.writeTimeout = writeTimeout
        self.batcher = ProposalBatcher(maximumBytes: maximumBatchBytes) { writes, now in
            await Self.propose(writes, now: now, region: id, group: group, waiters: waiters, timeout: writeTimeout)
        }
    }

    var descriptor: RegionDescriptor { machine.descriptor }

    /// Proposes `writes` as one command (forwarded to the leader from a follower or learner) and
    /// waits for their outcomes as this node applies them.
    static func propose(
        _ writes: [KVWrite], now: Int64, region: UInt64, group: RaftGroup, waiters: ProposalWaiters, timeout: Duration
    ) async -> [WriteOutcome] {
        let request = waiters.reserve(count: writes.count, deadline: .now + timeout)
        let command = RegionCommand.writes(now: now, origin: ProposalOrigin(node: group.id, request: request), writes)
        do {
            _ = try await group.submit(command.encodedBytes(), id: request)
        } catch {
            waiters.resolve(request, with: Array(repeating: .failure(kvError(error, region: region)), count: writes.count))
        }
        return await waiters.wait(request)
    }

    /// A linearizable read: confirms a read index (through the leader on any other role), then
    /// reads this replica once it has applied that far. With `unsafeStaleRead` it reads this
    /// replica at once, whatever it has applied: it may return old values.
    func read(_ read: KVRead, now: Int64, unsafeStaleRead: Bool = false) async throws(KVError) -> (KVReadResult, RegionDescriptor) {
        if unsafeStaleRead { return try machine.read(read, now: now) }
        do {
            _ = try await group.readIndex()
        } catch {
            throw Self.kvError(error, region: id)
        }
        return try machine.read(read, now: now)
    }

    static func kvError(_ error: any Error, region: UInt64) -> KVError {
        guard let error = error as? RaftError else { return .definite(.failed("\(error)")) }
        switch error {
        case .definite(let failure):
            switch failure {
            case .notLeader(let hint): return hint == nil ? .definite(.noLeader(region: region)) : .definite(.notLeader(region: region, leader: hint))
            case .rejected(.noLeader), .rejected(.notLeader(leaderHint: nil)): return .definite(.noLeader(region: region))
            // A transfer in progress or a pending membership change: the same "try again soon".
            case .rejected: return .definite(.noLeader(region: region))
            case .tooLarge(let bytes, let limit): return .definite(.tooLarge("a command of \(bytes) bytes (limit \(limit))"))
            case .overwritten: return .definite(.noLeader(region: region))
            case .shuttingDown: return .definite(.shuttingDown)
            case .storage(let failure): return .definite(.failed("\(failure)"))
            }
        case .indefinite(let failure):
            switch failure {
            case .timedOut: return .indefinite(.timedOut)
            case .leadershipLost: return .indefinite(.leadershipLost)
            case .stateMachineFailed(let why): return .definite(.failed(why))
            }
        }
    }
}

/// Gathers the writes that arrive for a region while a proposal is being prepared into one command,
/// so a pipelined burst of writes costs one log entry and one fsync rather than one each.
final class ProposalBatcher: Sendable {
    let maximumBytes: Int
    let proposeCommand: @Sendable ([KVWrite], Int64) async -> [WriteOutcome]
    private let state = Mutex(State())

    private struct State {
        var queue: [(write: KVWrite, now: Int64, continuation: CheckedContinuation<WriteOutcome, Never>)] = []
        var isScheduled = false
    }

    init(maximumBytes: Int, proposeCommand: @escaping @Sendable ([KVWrite], Int64) async -> [WriteOutcome]) {
        self.maximumBytes = maximumBytes
        self.proposeCommand = proposeCommand
    }

    func propose(_ write: KVWrite, now: Int64) async -> WriteOutcome {
        await withCheckedContinuation { continuation in
            let schedule = state.withLock { state in
                state.queue.append((write, now, continuation))
                defer { state.isScheduled = true }
                return !state.isScheduled
            }
            if schedule { Task { await self.flush() } }
        }
    }

    private func flush() async {
        let queue = state.withLock { state in
            defer {
                state.queue = []
                state.isScheduled = false
            }
            return state.queue
        }
        var start = 0
        while start < queue.count {
            var end = start
            var bytes = 0
            while end < queue.count, end == start || bytes + Self.size(of: queue[end].write) <= maximumBytes {
                bytes += Self.size(of: queue[end].write)
                end += 1
            }
            let chunk = Array(queue[start..<end])
            start = end
            Task {
                let outcomes = await proposeCommand(chunk.map(\.write), chunk.map(\.now).max() ?? 0)
                for (item, outcome) in zip(chunk, outcomes) { item.continuation.resume(returning: outcome) }
            }
        }
    }

    static func size(of write: KVWrite) -> Int {
        switch write {
        case .set(let key, let value, _, _, _): return key.count + value.count + 32
        case .setMany(let pairs, _): return pairs.reduce(32) { $0 + $1.key.count + $1.value.count + 8 }
        case .append(let key, let value): return key.count + value.count + 16
        default: return write.keys.reduce(32) { $0 + $1.count + 8 }
        }
    }
}
