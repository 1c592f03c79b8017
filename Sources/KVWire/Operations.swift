/// Bytes of a key or a value.
public typealias Bytes = [UInt8]

/// A write to the KV store. Each write touches one region; the leader stamps the proposal with its
/// clock, so expiry and leases are decided once and every replica applies the same outcome.
public enum KVWrite: Sendable, Hashable {
    /// SET with its options. `returnPrevious` is SET's GET option.
    case set(key: Bytes, value: Bytes, condition: SetCondition, expiry: Expiry, returnPrevious: Bool)
    /// Deletes the keys that exist; the result counts them.
    case delete(keys: [Bytes])
    /// Deletes `key` only when it holds `value` (DELEX IFEQ).
    case deleteIfEqual(key: Bytes, value: Bytes)
    /// Deletes every key, lock and sequence in the range (FLUSHDB, RheaKV's deleteRange).
    case deleteRange(start: Bytes, end: Bytes?)
    /// Deletes `key` and returns what it held (GETDEL).
    case getAndDelete(key: Bytes)
    /// Adds to the key's decimal integer value (INCR, INCRBY, DECR, DECRBY); a missing key counts as 0.
    case incrementBy(key: Bytes, delta: Int64)
    /// Appends to the key's value, creating it when missing (APPEND, RheaKV's merge).
    case append(key: Bytes, value: Bytes)
    /// Sets or clears a key's expiry (EXPIRE, PEXPIRE, PERSIST). `.keep` is not allowed here.
    case expire(key: Bytes, expiry: Expiry)
    /// Sets several keys at once (MSET, and MSETNX when `onlyIfNoneExists`). All keys must lie in one region.
    case setMany(pairs: [KVPair], onlyIfNoneExists: Bool)
    /// Reserves `count` numbers of a monotonic sequence (RheaKV's getSequence).
    case nextSequence(key: Bytes, count: UInt64)
    /// Acquires the named lock for `owner` when it is free or its lease ran out.
    case lock(name: Bytes, owner: Bytes, leaseMilliseconds: Int64)
    /// Extends the lease of a lock still held by `owner` with `token`.
    case keepAlive(name: Bytes, owner: Bytes, token: UInt64, leaseMilliseconds: Int64)
    /// Releases a lock held by `owner` with `token`.
    case unlock(name: Bytes, owner: Bytes, token: UInt64)
    /// Removes the keys among these whose expiry has passed at the proposal's time (background expiry).
    case removeExpired(keys: [Bytes])

    /// The key that decides the region, for writes of one key.
    public var routingKey: Bytes? {
        switch self {
        case .set(let key, _, _, _, _), .deleteIfEqual(let key, _), .getAndDelete(let key),
             .incrementBy(let key, _), .append(let key, _), .expire(let key, _), .nextSequence(let key, _):
            return key
        case .lock(let name, _, _), .keepAlive(let name, _, _, _), .unlock(let name, _, _):
            return name
        case .delete(let keys), .removeExpired(let keys):
            return keys.first
        case .setMany(let pairs, _):
            return pairs.first?.key
        case .deleteRange(let start, _):
            return start
        }
    }

    /// Every key the write touches (for region checks of multi-key writes).
    public var keys: [Bytes] {
        switch self {
        case .delete(let keys), .removeExpired(let keys): return keys
        case .setMany(let pairs, _): return pairs.map(\.key)
        case .deleteRange: return []
        default: return routingKey.map { [$0] } ?? []
        }
    }
}

/// A key and its value.
public struct KVPair: Sendable, Hashable {
    public var key: Bytes
    public var value: Bytes

    public init(key: Bytes, value: Bytes) {
        self.key = key
        self.value = value
    }
}

/// When a SET takes place.
public enum SetCondition: Sendable, Hashable {
    case always
    /// NX, RheaKV's putIfAbsent.
    case ifAbsent
    /// XX.
    case ifPresent
    /// IFEQ (Valkey 8.1, Redis 8.4), RheaKV's compareAndPut: only when the key holds this value.
    case ifEqual(Bytes)
    /// IFNE (Redis 8.4): only when the key exists and holds another value, or does not exist.
    case ifNotEqual(Bytes)
}

/// The expiry a write gives a key.
public enum Expiry: Sendable, Hashable {
    /// No expiry: a SET without options clears any earlier one (PERSIST too).
    case none
    /// KEEPTTL: the key keeps the expiry it had.
    case keep
    /// Expires this many milliseconds after the proposal's time (EX, PX, EXPIRE).
    case after(milliseconds: Int64)
    /// Expires at this Unix time in milliseconds (EXAT, PXAT).
    case at(unixMilliseconds: Int64)
}

/// The outcome of one write.
public enum KVWriteResult: Sendable, Hashable {
    /// A SET: whether it took place, and the previous value when it asked for it.
    case set(performed: Bool, previous: Bytes?)
    /// How many keys were affected.
    case count(Int)
    /// The value a key held (GETDEL).
    case value(Bytes?)
    /// A new integer value (INCR) or length (APPEND).
    case integer(Int64)
    /// A reserved range of a sequence: `start..<end`.
    case sequence(start: UInt64, end: UInt64)
    /// The state of a lock after LOCK, KEEPALIVE or UNLOCK.
    case lock(LockOutcome)
    /// The write was refused by the state machine for a reason of the data itself; nothing changed.
    case refused(WriteRefusal)
}

/// A lock operation's answer.
public enum LockOutcome: Sendable, Hashable {
    /// Held by the caller, with its fencing token and lease end (Unix milliseconds).
    case held(token: UInt64, expiresAt: Int64)
    /// Held by someone else until `expiresAt`.
    case busy(owner: Bytes, expiresAt: Int64)
    /// The caller does not hold it (KEEPALIVE or UNLOCK of a lost lock).
    case notHeld
    /// Released.
    case released
}

/// Why the state machine refused a write.
public enum WriteRefusal: Sendable, Hashable {
    /// INCR on a value that is not a decimal 64-bit integer.
    case notAnInteger
    /// INCR beyond the 64-bit range.
    case overflow
    /// A multi-key write whose keys lie in more than one region.
    case crossRegion
}

/// A read of the KV store. Reads are linearizable: the node confirms a read index with the region's
/// leader (ReadIndex) before reading its own replica, on any role, learners included.
public enum KVRead: Sendable, Hashable {
    case get(key: Bytes)
    /// A key's value and expiry (TTL, PTTL, TYPE, STRLEN, GETRANGE).
    case getRecord(key: Bytes)
    case multiGet(keys: [Bytes])
    /// How many of the keys exist (EXISTS counts repeats).
    case exists(keys: [Bytes])
    /// Live keys with their values in `[start, end)`, ascending or descending, at most `limit`.
    case scan(start: Bytes, end: Bytes?, limit: Int, reverse: Bool)
    /// How many live keys lie in `[start, end)` (DBSIZE).
    case count(start: Bytes, end: Bytes?)
    /// The state of a lock.
    case lockState(name: Bytes)

    /// The key that decides the region, for reads of one key.
    public var routingKey: Bytes {
        switch self {
        case .get(let key), .getRecord(let key): return key
        case .multiGet(let keys), .exists(let keys): return keys.first ?? []
        case .scan(let start, _, _, _), .count(let start, _): return start
        case .lockState(let name): return name
        }
    }
}

/// A key's value and its expiry (Unix milliseconds), if any.
public struct KVRecord: Sendable, Hashable {
    public var value: Bytes
    public var expiresAt: Int64?

    public init(value: Bytes, expiresAt: Int64?) {
        self.value = value
        self.expiresAt = expiresAt
    }
}

/// The outcome of one read.
public enum KVReadResult: Sendable, Hashable {
    case value(Bytes?)
    case record(KVRecord?)
    case values([Bytes?])
    case count(Int)
    case pairs([KVPair])
    case lock(LockOutcome)
}
