import KVWire
import Synchronization
import Testing

@testable import KVStore

/// A clock the test moves by hand, in Unix milliseconds.
final class ManualClock: Sendable {
    let now = Mutex<Int64>(1_000_000)
    func advance(by milliseconds: Int64) { now.withLock { $0 += milliseconds } }
    var read: @Sendable () -> Int64 { { self.now.withLock { $0 } } }
}

/// The KV state machine's operations and their edge cases, through the same write and read code the
/// regions run (here on one memory engine, without replication).
struct KVOperationsTests {
    let clock = ManualClock()
    let kv: LocalKVService

    init() {
        kv = LocalKVService(engine: MemoryEngine(), clock: clock.read)
    }

    func bytes(_ text: String) -> Bytes { Array(text.utf8) }

    func get(_ key: String) async throws -> String? {
        guard case .value(let value) = try await kv.read(.get(key: bytes(key))) else { Issue.record("not a value"); return nil }
        return value.map { String(decoding: $0, as: UTF8.self) }
    }

    @discardableResult
    func set(_ key: String, _ value: String, _ condition: SetCondition = .always, expiry: Expiry = .none, returnPrevious: Bool = false) async throws -> KVWriteResult {
        try await kv.write(.set(key: bytes(key), value: bytes(value), condition: condition, expiry: expiry, returnPrevious: returnPrevious))
    }

    @Test func setConditionsFollowRedis() async throws {
        #expect(try await set("k", "1", .ifPresent) == .set(performed: false, previous: nil))
        #expect(try await set("k", "1", .ifAbsent) == .set(performed: true, previous: nil))
        #expect(try await set("k", "2", .ifAbsent, returnPrevious: true) == .set(performed: false, previous: bytes("1")))
        #expect(try await set("k", "3", .ifEqual(bytes("2"))) == .set(performed: false, previous: nil))
        #expect(try await set("k", "3", .ifEqual(bytes("1"))) == .set(performed: true, previous: nil))
        #expect(try await set("k", "4", .ifNotEqual(bytes("3"))) == .set(performed: false, previous: nil))
        #expect(try await set("k", "4", .ifNotEqual(bytes("9"))) == .set(performed: true, previous: nil))
        // CAS on a missing key fails; IFNE on a missing key sets it.
        #expect(try await set("missing", "x", .ifEqual(bytes("x"))) == .set(performed: false, previous: nil))
        #expect(try await set("other", "x", .ifNotEqual(bytes("x"))) == .set(performed: true, previous: nil))
        #expect(try await get("k") == "4")
    }

    @Test func expiryIsDecidedByTheProposalsClockAndHidesKeysAtOnce() async throws {
        try await set("a", "1", expiry: .after(milliseconds: 100))
        try await set("b", "2", expiry: .at(unixMilliseconds: clock.read() + 50))
        guard case .record(let record?) = try await kv.read(.getRecord(key: bytes("a"))) else { Issue.record("no record"); return }
        #expect(record.expiresAt == clock.read() + 100)
        clock.advance(by: 60)
        #expect(try await get("b") == nil)
        #expect(try await get("a") == "1")
        // KEEPTTL keeps it; a plain SET clears it.
        try await set("a", "kept", expiry: .keep)
        clock.advance(by: 50)
        #expect(try await get("a") == nil)
        try await set("c", "1", expiry: .after(milliseconds: 10))
        try await set("c", "2")
        clock.advance(by: 20)
        #expect(try await get("c") == "2")
        // Expired keys count as absent for NX and in scans, and background removal deletes them.
        #expect(try await set("a", "new", .ifAbsent) == .set(performed: true, previous: nil))
        try await set("d", "1", expiry: .after(milliseconds: 5))
        clock.advance(by: 10)
        guard case .pairs(let pairs) = try await kv.read(.scan(start: [], end: nil, limit: 10, reverse: false)) else { return }
        #expect(pairs.map { String(decoding: $0.key, as: UTF8.self) } == ["a", "c"])
        #expect(try await kv.write(.removeExpired(keys: [bytes("d"), bytes("a")])) == .count(1))
    }

    @Test func expireAndPersist() async throws {
        #expect(try await kv.write(.expire(key: bytes("none"), expiry: .after(milliseconds: 10))) == .count(0))
        try await set("k", "v")
        #expect(try await kv.write(.expire(key: bytes("k"), expiry: .none)) == .count(0), "PERSIST without a timeout")
        #expect(try await kv.write(.expire(key: bytes("k"), expiry: .after(milliseconds: 10))) == .count(1))
        #expect(try await kv.write(.expire(key: bytes("k"), expiry: .none)) == .count(1))
        clock.advance(by: 20)
        #expect(try await get("k") == "v")
        #expect(try await kv.write(.expire(key: bytes("k"), expiry: .after(milliseconds: -1))) == .count(1))
        #expect(try await get("k") == nil, "an expiry in the past deletes the key")
    }

    @Test func incrementsRefuseNonIntegersAndOverflow() async throws {
        #expect(try await kv.write(.incrementBy(key: bytes("n"), delta: 5)) == .integer(5))
        #expect(try await kv.write(.incrementBy(key: bytes("n"), delta: -7)) == .integer(-2))
        try await set("text", "abc")
        #expect(try await kv.write(.incrementBy(key: bytes("text"), delta: 1)) == .refused(.notAnInteger))
        for bad in [" 1", "+1", "01", "1.5", ""] {
            try await set("bad", bad)
            #expect(try await kv.write(.incrementBy(key: bytes("bad"), delta: 1)) == .refused(.notAnInteger), "\(bad)")
        }
        try await set("big", String(Int64.max))
        #expect(try await kv.write(.incrementBy(key: bytes("big"), delta: 1)) == .refused(.overflow))
        #expect(try await get("big") == String(Int64.max))
        try await set("t", "10", expiry: .after(milliseconds: 100))
        _ = try await kv.write(.incrementBy(key: bytes("t"), delta: 1))
        guard case .record(let record?) = try await kv.read(.getRecord(key: bytes("t"))) else { return }
        #expect(record.expiresAt != nil, "INCR keeps the expiry")
    }

    @Test func appendMergesAndCreates() async throws {
        #expect(try await kv.write(.append(key: bytes("m"), value: bytes("ab"))) == .integer(2))
        #expect(try await kv.write(.append(key: bytes("m"), value: bytes("cd"))) == .integer(4))
        #expect(try await get("m") == "abcd")
    }

    @Test func deletesCountWhatExisted() async throws {
        try await set("a", "1")
        try await set("b", "2")
        #expect(try await kv.write(.delete(keys: [bytes("a"), bytes("a"), bytes("x")])) == .count(1))
        #expect(try await kv.write(.deleteIfEqual(key: bytes("b"), value: bytes("9"))) == .count(0))
        #expect(try await kv.write(.deleteIfEqual(key: bytes("b"), value: bytes("2"))) == .count(1))
        try await set("c", "3")
        #expect(try await kv.write(.getAndDelete(key: bytes("c"))) == .value(bytes("3")))
        #expect(try await kv.write(.getAndDelete(key: bytes("c"))) == .value(nil))
    }

    @Test func deleteRangeRemovesKeysLocksAndSequencesInRangeOnly() async throws {
        for key in ["a", "b", "c", "d"] { try await set(key, key) }
        _ = try await kv.write(.nextSequence(key: bytes("b2"), count: 5))
        #expect(try await kv.write(.deleteRange(start: bytes("b"), end: bytes("d"))) == .count(2))
        #expect(try await get("a") == "a")
        #expect(try await get("d") == "d")
        #expect(try await kv.write(.nextSequence(key: bytes("b2"), count: 1)) == .sequence(start: 0, end: 1))
        #expect(try await kv.write(.deleteRange(start: bytes("x"), end: bytes("x"))) == .count(0), "an empty range")
        #expect(try await kv.write(.deleteRange(start: [], end: nil)) == .count(2))
        #expect(try await kv.read(.count(start: [], end: nil)) == .count(0))
    }

    @Test func scansHonourBoundsDirectionAndLimits() async throws {
        for key in ["a", "b", "c", "d", "e"] { try await set(key, key.uppercased()) }
        func keys(_ read: KVRead) async throws -> [String] {
            guard case .pairs(let pairs) = try await kv.read(read) else { return [] }
            return pairs.map { String(decoding: $0.key, as: UTF8.self) }
        }
        #expect(try await keys(.scan(start: bytes("b"), end: bytes("d"), limit: 10, reverse: false)) == ["b", "c"])
        #expect(try await keys(.scan(start: bytes("b"), end: bytes("e"), limit: 10, reverse: true)) == ["d", "c", "b"])
        #expect(try await keys(.scan(start: [], end: nil, limit: 2, reverse: true)) == ["e", "d"])
        #expect(try await keys(.scan(start: bytes("z"), end: nil, limit: 5, reverse: false)) == [])
        #expect(try await keys(.scan(start: bytes("c"), end: bytes("c"), limit: 5, reverse: false)) == [])
        #expect(try await kv.read(.multiGet(keys: [bytes("a"), bytes("x"), bytes("e")])) == .values([bytes("A"), nil, bytes("E")]))
        #expect(try await kv.read(.exists(keys: [bytes("a"), bytes("a"), bytes("x")])) == .count(2))
    }

    @Test func setManyWithNXIsAllOrNothing() async throws {
        try await set("b", "old")
        let pairs = [KVPair(key: bytes("a"), value: bytes("1")), KVPair(key: bytes("b"), value: bytes("2"))]
        #expect(try await kv.write(.setMany(pairs: pairs, onlyIfNoneExists: true)) == .count(0))
        #expect(try await get("a") == nil)
        #expect(try await kv.write(.setMany(pairs: pairs, onlyIfNoneExists: false)) == .count(1))
        #expect(try await get("b") == "2")
    }

    @Test func sequencesAreMonotonic() async throws {
        #expect(try await kv.write(.nextSequence(key: bytes("s"), count: 10)) == .sequence(start: 0, end: 10))
        #expect(try await kv.write(.nextSequence(key: bytes("s"), count: 1)) == .sequence(start: 10, end: 11))
        #expect(try await kv.write(.nextSequence(key: bytes("s"), count: UInt64.max)) == .refused(.overflow))
    }

    @Test func locksHaveLeasesAndRisingFencingTokens() async throws {
        let name = bytes("lock")
        guard case .lock(.held(let first, _)) = try await kv.write(.lock(name: name, owner: bytes("A"), leaseMilliseconds: 100)) else {
            Issue.record("A did not get the lock"); return
        }
        guard case .lock(.busy(let owner, _)) = try await kv.write(.lock(name: name, owner: bytes("B"), leaseMilliseconds: 100)) else {
            Issue.record("B got a held lock"); return
        }
        #expect(owner == bytes("A"))
        #expect(try await kv.write(.keepAlive(name: name, owner: bytes("A"), token: first, leaseMilliseconds: 100))
            == .lock(.held(token: first, expiresAt: clock.read() + 100)))
        // A pauses past its lease: B gets the lock with a higher token, and A's token is dead.
        clock.advance(by: 150)
        guard case .lock(.held(let second, _)) = try await kv.write(.lock(name: name, owner: bytes("B"), leaseMilliseconds: 100)) else {
            Issue.record("B did not get the expired lock"); return
        }
        #expect(second > first)
        #expect(try await kv.write(.keepAlive(name: name, owner: bytes("A"), token: first, leaseMilliseconds: 100)) == .lock(.notHeld))
        #expect(try await kv.write(.unlock(name: name, owner: bytes("A"), token: first)) == .lock(.notHeld))
        #expect(try await kv.write(.unlock(name: name, owner: bytes("B"), token: second)) == .lock(.released))
        #expect(try await kv.read(.lockState(name: name)) == .lock(.notHeld))
        guard case .lock(.held(let third, _)) = try await kv.write(.lock(name: name, owner: bytes("A"), leaseMilliseconds: 100)) else {
            Issue.record("A did not get the released lock"); return
        }
        #expect(third > second, "the token keeps rising after a release")
    }
}
