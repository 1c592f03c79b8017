import Foundation
import KVStore
import Testing

/// The engines the shared suite runs on.
enum EngineKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case memory
    case rocksDB

    var testDescription: String { rawValue }
}

/// Runs `body` with a new directory under the system's temporary directory, removed afterwards.
func withTemporaryDirectory<Result>(_ body: (String) throws -> Result) rethrows -> Result {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("divan-engine-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try body(path)
}

/// Runs `body` with a new, empty engine of `kind`; a RocksDB engine lives in a temporary directory
/// that is removed afterwards.
func withEngine<Result>(_ kind: EngineKind, _ body: (any StorageEngine) throws -> Result) throws -> Result {
    switch kind {
    case .memory: try body(MemoryEngine())
    case .rocksDB: try withTemporaryDirectory { try body(RocksDBEngine(directory: $0)) }
    }
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

extension StorageEngine {
    func put(_ key: [UInt8], _ value: [UInt8]) throws { try write(WriteBatch([.put(key: key, value: value)])) }
    func delete(_ key: [UInt8]) throws { try write(WriteBatch([.delete(key: key)])) }
    func deleteRange(_ range: KeyRange) throws { try write(WriteBatch([.deleteRange(range)])) }
    func keys(_ range: KeyRange = .all, reverse: Bool = false) throws -> [[UInt8]] {
        try scan(range, limit: .max, reverse: reverse).map(\.key)
    }
}

@Suite("Storage engines")
struct EngineTests {
    @Test("put, get, overwrite and delete, with empty keys and values", arguments: EngineKind.allCases)
    func getPutDelete(kind: EngineKind) throws {
        try withEngine(kind) { engine in
            #expect(try engine.get(bytes("a")) == nil)
            try engine.put(bytes("a"), bytes("1"))
            #expect(try engine.get(bytes("a")) == bytes("1"))
            try engine.put(bytes("a"), bytes("2"))
            #expect(try engine.get(bytes("a")) == bytes("2"))
            try engine.put([], bytes("empty key"))
            try engine.put(bytes("e"), [])
            #expect(try engine.get([]) == bytes("empty key"))
            #expect(try engine.get(bytes("e")) == [])
            try engine.delete(bytes("a"))
            try engine.delete(bytes("never written"))
            #expect(try engine.get(bytes("a")) == nil)
            #expect(try engine.keys() == [[], bytes("e")])
        }
    }

    @Test("a batch applies its operations in order", arguments: EngineKind.allCases)
    func batchOrder(kind: EngineKind) throws {
        try withEngine(kind) { engine in
            try engine.write(WriteBatch([
                .put(key: bytes("gone"), value: bytes("1")),
                .delete(key: bytes("gone")),
                .delete(key: bytes("back")),
                .put(key: bytes("back"), value: bytes("2")),
                .put(key: bytes("twice"), value: bytes("first")),
                .put(key: bytes("twice"), value: bytes("second")),
                .put(key: bytes("m1"), value: bytes("3")),
                .deleteRange(KeyRange(start: bytes("m"), end: bytes("n"))),
                .put(key: bytes("m2"), value: bytes("4")),
            ]))
            #expect(try engine.get(bytes("gone")) == nil)
            #expect(try engine.get(bytes("back")) == bytes("2"))
            #expect(try engine.get(bytes("twice")) == bytes("second"))
            #expect(try engine.keys() == [bytes("back"), bytes("m2"), bytes("twice")])
            try engine.write(WriteBatch())
            #expect(try engine.keys().count == 3)
        }
    }

    /// Readers on other threads see each batch whole: every batch sets both keys to the same value.
    @Test("readers never see half a batch", arguments: EngineKind.allCases)
    func batchAtomicity(kind: EngineKind) throws {
        try withEngine(kind) { engine throws in
            let batches = 300
            DispatchQueue.concurrentPerform(iterations: 3) { worker in
                do {
                    for round in 0..<batches {
                        if worker == 0 {
                            let value = bytes(String(round))
                            try engine.write(WriteBatch([.put(key: bytes("x"), value: value), .put(key: bytes("y"), value: value)]))
                        } else {
                            let pairs = try engine.scan(.all, limit: 2, reverse: false)
                            #expect(pairs.isEmpty || pairs.count == 2 && pairs[0].value == pairs[1].value)
                            let snapshot = engine.snapshot()
                            #expect(try snapshot.get(bytes("x")) == snapshot.get(bytes("y")))
                        }
                    }
                } catch {
                    Issue.record(error)
                }
            }
            #expect(try engine.get(bytes("x")) == bytes(String(batches - 1)))
        }
    }

    @Test("deleteRange: empty, bounded, open-ended and everything", arguments: EngineKind.allCases)
    func deleteRange(kind: EngineKind) throws {
        try withEngine(kind) { engine in
            let all = ["a", "b", "c", "d", "e"].map(bytes)
            try engine.write(WriteBatch(all.map { .put(key: $0, value: $0) }))

            try engine.deleteRange(KeyRange(start: bytes("c"), end: bytes("c")))
            try engine.deleteRange(KeyRange(start: bytes("d"), end: bytes("b")))
            try engine.deleteRange(KeyRange(start: bytes("z"), end: nil))
            #expect(try engine.keys() == all)

            try engine.deleteRange(KeyRange(start: bytes("b"), end: bytes("d")))
            #expect(try engine.keys() == ["a", "d", "e"].map(bytes))

            try engine.deleteRange(KeyRange(start: bytes("d"), end: nil))
            #expect(try engine.keys() == [bytes("a")])

            // An open-ended range also removes keys that the same batch put before it, even past
            // every key already stored, and keeps those put after it.
            try engine.write(WriteBatch([
                .put(key: [0xFF, 0xFF], value: bytes("1")),
                .deleteRange(KeyRange(start: bytes("b"), end: nil)),
                .put(key: bytes("c"), value: bytes("2")),
            ]))
            #expect(try engine.keys() == [bytes("a"), bytes("c")])

            try engine.deleteRange(.all)
            #expect(try engine.keys() == [])
            #expect(try engine.get(bytes("a")) == nil)
        }
    }

    /// Every range between interesting keys (empty, zero bytes, 0xFF bytes, prefixes), with and
    /// without a limit, both ways, against a sorted list.
    @Test("scans match a sorted list, forward and reverse, for every bound and limit", arguments: EngineKind.allCases)
    func scans(kind: EngineKind) throws {
        let stored: [[UInt8]] = [
            [], [0x00], [0x00, 0x00], [0x00, 0x01], bytes("a"), bytes("a") + [0x00], bytes("ab"), bytes("b"),
            [0x7F], [0x80], [0xFF], [0xFF, 0x00], [0xFF, 0xFF], [0xFF, 0xFF, 0xFF],
        ]
        let sorted = stored.sorted { $0.lexicographicallyPrecedes($1) }
        let bounds = stored + [bytes("aa"), [0x00, 0x00, 0x00], [0xFF, 0xFE], [0xFF, 0xFF, 0xFF, 0xFF]]
        try withEngine(kind) { engine in
            try engine.write(WriteBatch(stored.reversed().map { .put(key: $0, value: $0 + [0x2A]) }))
            for start in bounds {
                for end in [nil] + bounds {
                    let range = KeyRange(start: start, end: end)
                    let expected = sorted.filter(range.contains)
                    for limit in [0, 1, 3, Int.max] {
                        for reverse in [false, true] {
                            let pairs = try engine.scan(range, limit: limit, reverse: reverse)
                            let ordered = reverse ? expected.reversed() : expected
                            #expect(pairs.map(\.key) == Array(ordered.prefix(max(0, limit))), "\(range) limit \(limit) reverse \(reverse)")
                            #expect(pairs.allSatisfy { $0.value == $0.key + [0x2A] })
                        }
                    }
                }
            }
        }
    }

    @Test("a snapshot does not see later writes, even a deleteRange of everything", arguments: EngineKind.allCases)
    func snapshotIsolation(kind: EngineKind) throws {
        try withEngine(kind) { engine in
            try engine.write(WriteBatch((0..<100).map { .put(key: bytes("k\($0)"), value: bytes("v\($0)")) }))
            let snapshot = engine.snapshot()
            try engine.put(bytes("k5"), bytes("changed"))
            try engine.put(bytes("new"), bytes("1"))
            try engine.delete(bytes("k7"))
            #expect(try snapshot.get(bytes("k5")) == bytes("v5"))
            #expect(try snapshot.get(bytes("new")) == nil)
            #expect(try snapshot.get(bytes("k7")) == bytes("v7"))

            try engine.deleteRange(.all)
            #expect(try engine.keys() == [])
            #expect(try snapshot.scan(.all, limit: .max, reverse: false).count == 100)
            #expect(try snapshot.scan(KeyRange(start: bytes("k1"), end: bytes("k2")), limit: 3, reverse: true).map(\.key)
                == ["k19", "k18", "k17"].map(bytes))
            try engine.put(bytes("k1"), bytes("again"))
            #expect(try snapshot.get(bytes("k1")) == bytes("v1"))
        }
    }

    @Test("100,000 keys: batched writes, full scans, a snapshot and a big deleteRange", arguments: EngineKind.allCases)
    func manyKeys(kind: EngineKind) throws {
        func key(_ index: Int) -> [UInt8] { withUnsafeBytes(of: UInt32(index).bigEndian) { Array($0) } }
        try withEngine(kind) { engine in
            let count = 100_000
            for first in stride(from: 0, to: count, by: 1_000) {
                try engine.write(WriteBatch((first..<first + 1_000).map { .put(key: key($0), value: key($0 * 7)) }))
            }
            #expect(try engine.get(key(54_321)) == key(54_321 * 7))
            let forward = try engine.scan(.all, limit: .max, reverse: false)
            #expect(forward.count == count)
            #expect(forward.indices.allSatisfy { forward[$0].key == key($0) })
            #expect(try engine.scan(.all, limit: 2, reverse: true).map(\.key) == [key(count - 1), key(count - 2)])

            let snapshot = engine.snapshot()
            try engine.deleteRange(KeyRange(start: key(25_000), end: key(75_000)))
            #expect(try engine.scan(.all, limit: .max, reverse: false).count == count / 2)
            #expect(try engine.get(key(50_000)) == nil)
            #expect(try snapshot.scan(.all, limit: .max, reverse: true).count == count)
        }
    }
}

@Suite("RocksDB engine")
struct RocksDBEngineTests {
    @Test("a reopened directory keeps the data", arguments: [
        RocksDBEngine.Durability.syncedLog, .unsyncedLog, .noLog,
    ])
    func reopen(durability: RocksDBEngine.Durability) throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/nested/store"
            try reopen(path: path, options: RocksDBEngine.Options(durability: durability))
        }
    }

    private func reopen(path: String, options: RocksDBEngine.Options) throws {
        do {
            let engine = try RocksDBEngine(directory: path, options: options)
            try engine.write(WriteBatch([
                .put(key: bytes("a"), value: bytes("1")),
                .put(key: bytes("b"), value: bytes("2")),
                .put(key: bytes("c"), value: bytes("3")),
                .deleteRange(KeyRange(start: bytes("b"), end: nil)),
                .put(key: [0x00, 0xFF], value: []),
            ]))
            if options.durability == .noLog { try engine.flush() }
        }
        let engine = try RocksDBEngine(directory: path, options: options)
        #expect(try engine.scan(.all, limit: .max, reverse: false)
            == [KeyValuePair(key: [0x00, 0xFF], value: []), KeyValuePair(key: bytes("a"), value: bytes("1"))])
    }

    @Test("an error carries RocksDB's message: a directory is open only once")
    func lockedDirectory() throws {
        try withTemporaryDirectory { directory in
            let engine = try RocksDBEngine(directory: directory)
            #expect {
                try RocksDBEngine(directory: directory)
            } throws: { error in
                guard let error = error as? RocksDBError else { return false }
                return error.operation == "open" && error.message.contains("lock")
            }
            try engine.put(bytes("still"), bytes("open"))
            #expect(try engine.get(bytes("still")) == bytes("open"))
        }
    }

    @Test("a snapshot keeps the database open until it goes")
    func snapshotKeepsDatabaseOpen() throws {
        try withTemporaryDirectory { directory in
            var snapshot = try takeSnapshot(directory: directory)
            #expect(try snapshot?.get(bytes("k")) == bytes("v"))
            #expect(throws: RocksDBError.self) { try RocksDBEngine(directory: directory) }
            snapshot = nil
            #expect(try RocksDBEngine(directory: directory).get(bytes("k")) == bytes("v"))
        }
    }

    /// A snapshot of a database whose engine is already gone when this returns.
    private func takeSnapshot(directory: String) throws -> (any EngineSnapshot)? {
        let engine = try RocksDBEngine(directory: directory)
        try engine.put(bytes("k"), bytes("v"))
        return engine.snapshot()
    }
}
