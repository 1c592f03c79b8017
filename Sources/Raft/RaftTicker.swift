import Synchronization

/// One timer for every Raft group of a process: a single task ticks all registered groups each
/// heartbeat interval, instead of a task per group (SOFAJRaft shares one timer pool the same way).
public final class RaftTicker: Sendable {
    public let interval: Duration
    private let groups = Mutex<[ObjectIdentifier: RaftGroup]>([:])
    private let task = Mutex<Task<Void, Never>?>(nil)

    public init(interval: Duration = .milliseconds(100)) {
        self.interval = interval
    }

    deinit { task.withLock { $0?.cancel() } }

    func register(_ group: RaftGroup) {
        groups.withLock { $0[ObjectIdentifier(group)] = group }
        task.withLock { task in
            guard task == nil else { return }
            let interval = interval
            task = Task { [weak self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    guard let self else { return }
                    for group in self.groups.withLock({ Array($0.values) }) { await group.tick() }
                }
            }
        }
    }

    func unregister(_ group: RaftGroup) {
        groups.withLock { $0[ObjectIdentifier(group)] = nil }
    }

    /// How many groups it ticks.
    public var count: Int { groups.withLock { $0.count } }

    /// Stops ticking every group.
    public func stop() {
        task.withLock { $0?.cancel() }
    }
}
