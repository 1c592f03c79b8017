import KVWire

/// Answers KV reads from an engine (live, or one of its snapshots) within a region's key range,
/// hiding records whose expiry has passed by the reader's clock.
struct KVReader {
    let get: (Bytes) throws -> Bytes?
    let scan: (KeyRange, Int, Bool) throws -> [KeyValuePair]
    /// The reader's time, Unix milliseconds.
    let now: Int64

    init(engine: any StorageEngine, now: Int64) {
        get = engine.get
        scan = engine.scan
        self.now = now
    }

    init(snapshot: any EngineSnapshot, now: Int64) {
        get = snapshot.get
        scan = snapshot.scan
        self.now = now
    }

    func record(_ key: Bytes) throws -> StoredRecord? {
        guard let bytes = try get(EngineLayout.key(EngineLayout.dataSpace, key)) else { return nil }
        let record = try StoredRecord(decoding: bytes)
        return record.isLive(at: now) ? record : nil
    }

    func read(_ read: KVRead) throws -> KVReadResult {
        switch read {
        case .get(let key):
            return .value(try record(key)?.value)
        case .getRecord(let key):
            return .record(try record(key).map { KVRecord(value: $0.value, expiresAt: $0.expiresAt) })
        case .multiGet(let keys):
            return .values(try keys.map { try record($0)?.value })
        case .exists(let keys):
            return .count(try keys.reduce(0) { $0 + (try record($1) == nil ? 0 : 1) })
        case .scan(let start, let end, let limit, let reverse):
            var pairs: [KVPair] = []
            try forEachLive(start: start, end: end, reverse: reverse) { key, record in
                pairs.append(KVPair(key: key, value: record.value))
                return pairs.count < limit
            }
            return .pairs(pairs)
        case .count(let start, let end):
            var count = 0
            try forEachLive(start: start, end: end, reverse: false) { _, _ in
                count += 1
                return true
            }
            return .count(count)
        case .lockState(let name):
            guard let bytes = try get(EngineLayout.key(EngineLayout.lockSpace, name)) else { return .lock(.notHeld) }
            let lock: StoredLock
            do {
                lock = try StoredLock(decoding: bytes)
            } catch {
                throw KVStoreError.corrupt("lock record: \(error)")
            }
            return .lock(lock.isHeld(at: now) ? .busy(owner: lock.owner, expiresAt: lock.expiresAt) : .notHeld)
        }
    }

    /// Visits live strings of `[start, end)` in order until `body` returns false, paging through the
    /// engine so that expired records never shorten a page.
    func forEachLive(start: Bytes, end: Bytes?, reverse: Bool, _ body: (Bytes, StoredRecord) throws -> Bool) throws {
        var range = EngineLayout.range(EngineLayout.dataSpace, start: start, end: end)
        let page = 256
        while true {
            let pairs = try scan(range, page, reverse)
            for pair in pairs {
                let record = try StoredRecord(decoding: pair.value)
                guard record.isLive(at: now) else { continue }
                if try !body(Array(pair.key.dropFirst()), record) { return }
            }
            guard pairs.count == page, let last = pairs.last else { return }
            if reverse { range.end = last.key } else { range.start = last.key + [0] }
        }
    }

    /// Expired strings among the first `budget` records of `[start, end)`, for background removal,
    /// and the key to continue from (nil when the range is done), so that a large region is swept a
    /// slice at a time.
    func expiredKeys(start: Bytes, end: Bytes?, budget: Int) throws -> (keys: [Bytes], next: Bytes?) {
        let range = EngineLayout.range(EngineLayout.dataSpace, start: start, end: end)
        let pairs = try scan(range, budget, false)
        var keys: [Bytes] = []
        for pair in pairs where !(try StoredRecord(decoding: pair.value)).isLive(at: now) {
            keys.append(Array(pair.key.dropFirst()))
        }
        guard pairs.count == budget, let last = pairs.last else { return (keys, nil) }
        return (keys, Array(last.key.dropFirst()) + [0])
    }
}
