#if canImport(Glibc)
import Glibc
#endif
import KVWire
import Synchronization

/// The KV store's operations on one in-process engine, without replication: the same write and
/// read code the region state machine runs, applied at once. For single-process tests of the
/// layers above (the Redis front end) and nothing that claims durability or replication.
public final class LocalKVService: KVService {
    let engine: any StorageEngine
    let clock: @Sendable () -> Int64
    /// Writes run one at a time, as a Raft log would order them.
    private let writeLock = Mutex(())

    /// `clock` gives Unix milliseconds; tests pass their own to control expiry.
    public init(engine: any StorageEngine, clock: @escaping @Sendable () -> Int64 = UnixClock.milliseconds) {
        self.engine = engine
        self.clock = clock
    }

    public func write(_ write: KVWrite) async throws(KVError) -> KVWriteResult {
        let result: Result<KVWriteResult, KVError> = writeLock.withLock { _ in
            do {
                var applier = WriteApplier(engine: engine, now: clock())
                let result = try applier.apply(write)
                try engine.write(applier.batch)
                return .success(result)
            } catch {
                return .failure(.definite(.failed("\(error)")))
            }
        }
        return try result.get()
    }

    public func read(_ read: KVRead) async throws(KVError) -> KVReadResult {
        do {
            return try KVReader(engine: engine, now: clock()).read(read)
        } catch {
            throw .definite(.failed("\(error)"))
        }
    }

    public func status() async -> ClusterStatus {
        var keys: UInt64 = 0
        if case .count(let count)? = try? KVReader(engine: engine, now: clock()).read(.count(start: [], end: nil)) {
            keys = UInt64(count)
        }
        let region = RegionDescriptor(id: 1, start: [], end: nil, voters: [1])
        return ClusterStatus(node: 1, regions: [RegionStatus(
            region: region, role: "leader", leader: 1, term: 1, commitIndex: 0, appliedIndex: 0, keys: keys, bytes: 0)])
    }
}

/// Wall-clock time in Unix milliseconds: what leaders stamp proposals with and readers judge expiry by.
public enum UnixClock {
    @Sendable public static func milliseconds() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }
}
