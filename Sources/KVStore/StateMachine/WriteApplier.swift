import KVWire
import RaftCore

/// Applies KV writes to an engine as one atomic batch. Later writes of the batch see earlier ones
/// through an overlay, so a Raft entry with many writes behaves exactly as if they ran one by one.
/// It also keeps the region's key and byte counts, which the placement driver splits on.
struct WriteApplier {
    let engine: any StorageEngine
    /// The proposal's time (the leader's clock when it proposed), in Unix milliseconds.
    var now: Int64
    private(set) var batch = WriteBatch()
    private var overlay: [Bytes: Bytes?] = [:]
    /// What the engine held for keys read in this batch: a SET reads its key for its condition and
    /// again for the region's counts, and the engine is asked once.
    private var readCache: [Bytes: Bytes?] = [:]
    private var deletedRanges: [KeyRange] = []
    private(set) var keyDelta: Int64 = 0
    private(set) var byteDelta: Int64 = 0

    init(engine: any StorageEngine, now: Int64) {
        self.engine = engine
        self.now = now
    }

    // MARK: - Raw access through the overlay

    private mutating func stored(_ engineKey: Bytes) throws -> Bytes? {
        if let value = overlay[engineKey] { return value }
        if deletedRanges.contains(where: { $0.contains(engineKey) }) { return nil }
        if let value = readCache[engineKey] { return value }
        do {
            let value = try engine.get(engineKey)
            readCache[engineKey] = .some(value)
            return value
        } catch {
            throw KVStoreError.engine("\(error)")
        }
    }

    private mutating func store(_ engineKey: Bytes, _ value: Bytes, counted: Bool) throws {
        if counted {
            let previous = try stored(engineKey)
            if previous == nil { keyDelta += 1 }
            byteDelta += Int64(value.count) - Int64(previous?.count ?? -engineKey.count)
        }
        overlay[engineKey] = .some(value)
        batch.put(engineKey, value)
    }

    private mutating func remove(_ engineKey: Bytes, counted: Bool) throws {
        if counted, let previous = try stored(engineKey) {
            keyDelta -= 1
            byteDelta -= Int64(previous.count + engineKey.count)
        }
        overlay[engineKey] = .some(nil)
        batch.delete(engineKey)
    }

    private mutating func liveRecord(_ key: Bytes) throws -> StoredRecord? {
        guard let bytes = try stored(EngineLayout.key(EngineLayout.dataSpace, key)) else { return nil }
        let record = try StoredRecord(decoding: bytes)
        return record.isLive(at: now) ? record : nil
    }

    private mutating func put(_ key: Bytes, _ record: StoredRecord) throws {
        try store(EngineLayout.key(EngineLayout.dataSpace, key), record.encoded, counted: true)
    }

    private mutating func delete(_ key: Bytes) throws {
        try remove(EngineLayout.key(EngineLayout.dataSpace, key), counted: true)
    }

    private func expiry(_ expiry: Expiry, keeping old: StoredRecord?) -> Int64? {
        switch expiry {
        case .none: return nil
        case .keep: return old?.expiresAt
        case .after(let milliseconds): return now &+ milliseconds
        case .at(let time): return time
        }
    }

    // MARK: - Writes

    mutating func apply(_ write: KVWrite) throws -> KVWriteResult {
        switch write {
        case .set(let key, let value, let condition, let expiry, let returnPrevious):
            let old = try liveRecord(key)
            let performed: Bool
            switch condition {
            case .always: performed = true
            case .ifAbsent: performed = old == nil
            case .ifPresent: performed = old != nil
            case .ifEqual(let expected): performed = old?.value == expected
            case .ifNotEqual(let unexpected): performed = old?.value != unexpected
            }
            if performed { try put(key, StoredRecord(value: value, expiresAt: self.expiry(expiry, keeping: old))) }
            return .set(performed: performed, previous: returnPrevious ? old?.value : nil)

        case .delete(let keys):
            var count = 0
            for key in keys where try liveRecord(key) != nil {
                try delete(key)
                count += 1
            }
            return .count(count)

        case .deleteIfEqual(let key, let value):
            guard let old = try liveRecord(key), old.value == value else { return .count(0) }
            try delete(key)
            return .count(1)

        case .deleteRange(let start, let end):
            return .count(try deleteRange(start: start, end: end))

        case .getAndDelete(let key):
            guard let old = try liveRecord(key) else { return .value(nil) }
            try delete(key)
            return .value(old.value)

        case .incrementBy(let key, let delta):
            let old = try liveRecord(key)
            var current: Int64 = 0
            if let old {
                guard let parsed = Self.parseInteger(old.value) else { return .refused(.notAnInteger) }
                current = parsed
            }
            let (sum, overflow) = current.addingReportingOverflow(delta)
            if overflow { return .refused(.overflow) }
            try put(key, StoredRecord(value: Array(String(sum).utf8), expiresAt: old?.expiresAt))
            return .integer(sum)

        case .append(let key, let value):
            let old = try liveRecord(key)
            let combined = (old?.value ?? []) + value
            try put(key, StoredRecord(value: combined, expiresAt: old?.expiresAt))
            return .integer(Int64(combined.count))

        case .expire(let key, let expiry):
            guard var old = try liveRecord(key) else { return .count(0) }
            switch expiry {
            case .keep:
                return .count(0)
            case .none:
                guard old.expiresAt != nil else { return .count(0) }
                old.expiresAt = nil
            case .after, .at:
                old.expiresAt = self.expiry(expiry, keeping: old)
            }
            if old.isLive(at: now) { try put(key, old) } else { try delete(key) }
            return .count(1)

        case .setMany(let pairs, let onlyIfNoneExists):
            if onlyIfNoneExists {
                for pair in pairs where try liveRecord(pair.key) != nil { return .count(0) }
            }
            for pair in pairs { try put(pair.key, StoredRecord(value: pair.value, expiresAt: nil)) }
            return .count(1)

        case .nextSequence(let key, let count):
            let engineKey = EngineLayout.key(EngineLayout.sequenceSpace, key)
            let current = try stored(engineKey).map { EngineLayout.uint64(bigEndian: $0) } ?? 0
            let (next, overflow) = current.addingReportingOverflow(count)
            if overflow { return .refused(.overflow) }
            try store(engineKey, EngineLayout.bigEndian(next), counted: false)
            return .sequence(start: current, end: next)

        case .lock(let name, let owner, let lease):
            let engineKey = EngineLayout.key(EngineLayout.lockSpace, name)
            let old = try lockRecord(engineKey)
            if let old, old.isHeld(at: now), old.owner != owner {
                return .lock(.busy(owner: old.owner, expiresAt: old.expiresAt))
            }
            // The holder asking again keeps its token (a re-entrant extension); anyone else gets a new one.
            let token = old.map { $0.isHeld(at: now) ? $0.token : $0.token + 1 } ?? 1
            let lock = StoredLock(owner: owner, token: token, expiresAt: now &+ lease)
            try store(engineKey, lock.encodedBytes(), counted: false)
            return .lock(.held(token: token, expiresAt: lock.expiresAt))

        case .keepAlive(let name, let owner, let token, let lease):
            let engineKey = EngineLayout.key(EngineLayout.lockSpace, name)
            guard var lock = try lockRecord(engineKey), lock.isHeld(at: now), lock.owner == owner, lock.token == token else {
                return .lock(.notHeld)
            }
            lock.expiresAt = now &+ lease
            try store(engineKey, lock.encodedBytes(), counted: false)
            return .lock(.held(token: token, expiresAt: lock.expiresAt))

        case .unlock(let name, let owner, let token):
            let engineKey = EngineLayout.key(EngineLayout.lockSpace, name)
            guard var lock = try lockRecord(engineKey), lock.owner == owner, lock.token == token else {
                return .lock(.notHeld)
            }
            lock.owner = []
            try store(engineKey, lock.encodedBytes(), counted: false)
            return .lock(.released)

        case .removeExpired(let keys):
            var count = 0
            for key in keys {
                let engineKey = EngineLayout.key(EngineLayout.dataSpace, key)
                guard let bytes = try stored(engineKey), !(try StoredRecord(decoding: bytes)).isLive(at: now) else { continue }
                try remove(engineKey, counted: true)
                count += 1
            }
            return .count(count)
        }
    }

    private mutating func lockRecord(_ engineKey: Bytes) throws -> StoredLock? {
        guard let bytes = try stored(engineKey) else { return nil }
        do {
            return try StoredLock(decoding: bytes)
        } catch {
            throw KVStoreError.corrupt("lock record: \(error)")
        }
    }

    /// Deletes every user key in `[start, end)` and returns how many live strings it removed.
    mutating func deleteRange(start: Bytes, end: Bytes?) throws -> Int {
        var removed = 0
        let dataRange = EngineLayout.range(EngineLayout.dataSpace, start: start, end: end)
        try forEachStored(in: dataRange) { key, value in
            keyDelta -= 1
            byteDelta -= Int64(key.count + value.count)
            if (try StoredRecord(decoding: value)).isLive(at: now) { removed += 1 }
        }
        for range in EngineLayout.userRanges(start: start, end: end) {
            batch.deleteRange(range)
            deletedRanges.append(range)
            for key in overlay.keys where range.contains(key) { overlay.removeValue(forKey: key) }
        }
        return removed
    }

    /// Visits every stored pair of `range` as the batch so far leaves it.
    private func forEachStored(in range: KeyRange, _ body: (Bytes, Bytes) throws -> Void) throws {
        var merged: [Bytes: Bytes] = [:]
        var cursor = range
        while true {
            let page: [KeyValuePair]
            do {
                page = try engine.scan(cursor, limit: 1024, reverse: false)
            } catch {
                throw KVStoreError.engine("\(error)")
            }
            for pair in page where !deletedRanges.contains(where: { $0.contains(pair.key) }) { merged[pair.key] = pair.value }
            guard page.count == 1024, let last = page.last else { break }
            cursor.start = last.key + [0]
        }
        for (key, value) in overlay where range.contains(key) { merged[key] = value }
        for (key, value) in merged { try body(key, value) }
    }

    /// Redis's rule for an integer value: optional minus sign, decimal digits, no spaces or plus sign.
    static func parseInteger(_ bytes: Bytes) -> Int64? {
        guard !bytes.isEmpty, bytes.count <= 20, bytes.first != UInt8(ascii: "+") else { return nil }
        if bytes.count > 1, bytes.first == UInt8(ascii: "0") { return nil }
        if bytes.count > 2, bytes.first == UInt8(ascii: "-"), bytes[1] == UInt8(ascii: "0") { return nil }
        return Int64(String(decoding: bytes, as: UTF8.self))
    }

}
