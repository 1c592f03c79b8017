import KVWire

/// The KV store as every node serves it: any command on any node. Writes go to the key's region
/// (forwarded to its leader by Raft when this node does not lead it, and batched with concurrent
/// writes); reads confirm a read index with the region's leader and read this node's replica, on
/// any role, learners included. Multi-key commands are split by region where Redis allows it.
public final class NodeKVService: KVService {
    let store: Store
    let clock: @Sendable () -> Int64
    /// How long a request keeps retrying while a region has no leader or is being split.
    let retryWindow: Duration
    /// UNSAFE, for testing the chaos harness only: reads skip ReadIndex and may return stale values.
    let unsafeStaleReads: Bool

    public init(
        store: Store, clock: @escaping @Sendable () -> Int64 = UnixClock.milliseconds, retryWindow: Duration = .seconds(3),
        unsafeStaleReads: Bool = false
    ) {
        self.store = store
        self.clock = clock
        self.retryWindow = retryWindow
        self.unsafeStaleReads = unsafeStaleReads
    }

    // MARK: - Writes

    public func write(_ write: KVWrite) async throws(KVError) -> KVWriteResult {
        try validate(write)
        switch write {
        case .deleteRange(let start, let end):
            var count = 0
            for region in store.orderedRegions {
                guard let range = RegionStateMachine.clip(start: start, end: end, to: region.descriptor) else { continue }
                if case .count(let removed) = try await writeInRegion(.deleteRange(start: range.start, end: range.end), key: range.start) {
                    count += removed
                }
            }
            return .count(count)
        case .delete(let keys), .removeExpired(let keys):
            var count = 0
            for (_, group) in try groupByRegion(keys) {
                let part: KVWrite = if case .delete = write { .delete(keys: group) } else { .removeExpired(keys: group) }
                if case .count(let removed) = try await writeInRegion(part, key: group[0]) { count += removed }
            }
            return .count(count)
        case .setMany(let pairs, _):
            guard try groupByRegion(pairs.map(\.key)).count <= 1 else { return .refused(.crossRegion) }
            return try await writeInRegion(write, key: pairs.first?.key ?? [])
        default:
            return try await writeInRegion(write, key: write.routingKey ?? [])
        }
    }

    func validate(_ write: KVWrite) throws(KVError) {
        let limits = store.options
        for key in write.keys where key.count > limits.maximumKeyBytes {
            throw .definite(.tooLarge("a key of \(key.count) bytes (limit \(limits.maximumKeyBytes))"))
        }
        let valueBytes: Int
        switch write {
        case .set(_, let value, _, _, _), .append(_, let value): valueBytes = value.count
        case .setMany(let pairs, _): valueBytes = pairs.map(\.value.count).max() ?? 0
        default: valueBytes = 0
        }
        if valueBytes > limits.maximumValueBytes {
            throw .definite(.tooLarge("a value of \(valueBytes) bytes (limit \(limits.maximumValueBytes))"))
        }
    }

    /// Proposes a write whose keys lie in one region, retrying while the region has no leader or moved.
    func writeInRegion(_ write: KVWrite, key: Bytes) async throws(KVError) -> KVWriteResult {
        let deadline = ContinuousClock.now + retryWindow
        while true {
            let error: KVError
            if let region = store.region(for: key) {
                switch await region.batcher.propose(write, now: clock()) {
                case .success(let result): return result
                case .failure(let failure): error = failure
                }
            } else {
                error = .definite(.noRegion)
            }
            try await retryOrThrow(error, deadline: deadline)
        }
    }

    /// Sleeps before a retry when `error` is definite and transient (no leader yet, a split moving
    /// the key) and time remains; throws it otherwise.
    func retryOrThrow(_ error: KVError, deadline: ContinuousClock.Instant) async throws(KVError) {
        switch error {
        case .definite(.noLeader), .definite(.notLeader), .definite(.regionMoved), .definite(.noRegion):
            guard ContinuousClock.now < deadline else { throw error }
            do {
                try await Task.sleep(for: .milliseconds(50))
            } catch {
                throw .definite(.shuttingDown)
            }
        default:
            throw error
        }
    }

    /// Keys grouped by the region that holds them here, in the order of first appearance.
    func groupByRegion(_ keys: [Bytes]) throws(KVError) -> [(UInt64, [Bytes])] {
        var order: [UInt64] = []
        var groups: [UInt64: [Bytes]] = [:]
        for key in keys {
            guard let region = store.region(for: key) else { throw .definite(.noRegion) }
            if groups[region.id] == nil { order.append(region.id) }
            groups[region.id, default: []].append(key)
        }
        return order.map { ($0, groups[$0]!) }
    }

    // MARK: - Reads

    public func read(_ read: KVRead) async throws(KVError) -> KVReadResult {
        switch read {
        case .scan(let start, let end, let limit, let reverse):
            var pairs: [KVPair] = []
            try await forEachRegion(start: start, end: end, reverse: reverse) { (part: KeyRange) async throws(KVError) -> (RegionDescriptor, Bool) in
                let read = KVRead.scan(start: part.start, end: part.end, limit: limit - pairs.count, reverse: reverse)
                let key = reverse ? Self.lastKey(below: part.end, from: store.orderedRegions.map(\.descriptor)) : part.start
                let (result, covered) = try await readInRegion(read, key: key)
                if case .pairs(let found) = result { pairs += found }
                return (covered, pairs.count < limit)
            }
            return .pairs(pairs)
        case .count(let start, let end):
            var count = 0
            try await forEachRegion(start: start, end: end, reverse: false) { (part: KeyRange) async throws(KVError) -> (RegionDescriptor, Bool) in
                let (result, covered) = try await readInRegion(.count(start: part.start, end: part.end), key: part.start)
                if case .count(let found) = result { count += found }
                return (covered, true)
            }
            return .count(count)
        case .multiGet(let keys):
            var values: [Bytes: Bytes?] = [:]
            for (_, group) in try groupByRegion(keys) {
                if case .values(let found) = try await readInRegion(.multiGet(keys: group), key: group[0]).0 {
                    for (key, value) in zip(group, found) { values[key] = value }
                }
            }
            return .values(keys.map { values[$0] ?? nil })
        case .exists(let keys):
            var count = 0
            for (_, group) in try groupByRegion(keys) {
                if case .count(let found) = try await readInRegion(.exists(keys: group), key: group[0]).0 { count += found }
            }
            return .count(count)
        default:
            return try await readInRegion(read, key: read.routingKey).0
        }
    }

    /// Walks `[start, end)` region by region, following the ranges each read actually covered, so
    /// that a split between two steps neither skips nor repeats keys. `body` reads one part and says
    /// which region answered and whether to go on.
    func forEachRegion(
        start: Bytes, end: Bytes?, reverse: Bool,
        _ body: (KeyRange) async throws(KVError) -> (RegionDescriptor, Bool)
    ) async throws(KVError) {
        var part = KeyRange(start: start, end: end)
        while part.end.map({ part.start.lexicographicallyPrecedes($0) }) ?? true {
            let (covered, goOn) = try await body(part)
            guard goOn else { return }
            if reverse {
                guard !covered.start.isEmpty, part.start.lexicographicallyPrecedes(covered.start) else { return }
                part.end = covered.start
            } else {
                guard let next = covered.end else { return }
                part.start = next
            }
        }
    }

    /// The region lookup key for a reverse read of `[…, end)`: any key of the region that holds the
    /// keys just below `end`. Region starts are such keys; the region is found by the one before `end`.
    static func lastKey(below end: Bytes?, from regions: [RegionDescriptor]) -> Bytes {
        regions.last { region in end.map { region.start.lexicographicallyPrecedes($0) } ?? true }?.start ?? []
    }

    func readInRegion(_ read: KVRead, key: Bytes) async throws(KVError) -> (KVReadResult, RegionDescriptor) {
        let deadline = ContinuousClock.now + retryWindow
        while true {
            let error: KVError
            if let region = store.region(for: key) {
                do throws(KVError) {
                    return try await region.read(read, now: clock(), unsafeStaleRead: unsafeStaleReads)
                } catch let failure {
                    error = failure
                }
            } else {
                error = .definite(.noRegion)
            }
            try await retryOrThrow(error, deadline: deadline)
        }
    }

    public func status() async -> ClusterStatus {
        await store.status()
    }
}
