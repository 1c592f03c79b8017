/// A sorted key-value engine holding the state of every region of one store (RocksDB on servers,
/// memory in tests and the demo). Keys and values are raw bytes compared lexicographically; the KV
/// state machine decides how user keys, records and region metadata are laid out in it.
public protocol StorageEngine: AnyObject, Sendable {
    /// The value stored at `key`, or nil.
    func get(_ key: [UInt8]) throws -> [UInt8]?
    /// Up to `limit` pairs whose keys lie in `range`, ascending, or descending when `reverse`. A
    /// `limit` of zero or less returns nothing.
    func scan(_ range: KeyRange, limit: Int, reverse: Bool) throws -> [KeyValuePair]
    /// Applies every operation of `batch` atomically, in order: after a crash, all or none of it is there.
    func write(_ batch: WriteBatch) throws
    /// A consistent point-in-time view that later writes do not change. Cheap to take (RocksDB's
    /// snapshot, a copy-on-write copy): snapshots of regions are serialized from it in the background.
    func snapshot() -> any EngineSnapshot
    /// Makes every write so far durable without the engine's own write-ahead log (RocksDB writes its
    /// memtables to SST files and waits). A state machine that runs RocksDB without its WAL calls it
    /// before the Raft log is compacted past the applied index the engine holds.
    func flush() throws
}

/// A frozen, read-only view of a storage engine.
public protocol EngineSnapshot: Sendable {
    func get(_ key: [UInt8]) throws -> [UInt8]?
    func scan(_ range: KeyRange, limit: Int, reverse: Bool) throws -> [KeyValuePair]
}

/// The keys from `start` (included) to `end` (excluded); no `end` means every key from `start` on.
public struct KeyRange: Sendable, Hashable {
    public var start: [UInt8]
    public var end: [UInt8]?

    public init(start: [UInt8], end: [UInt8]?) {
        self.start = start
        self.end = end
    }

    /// Every key.
    public static let all = KeyRange(start: [], end: nil)

    public func contains(_ key: [UInt8]) -> Bool {
        !key.lexicographicallyPrecedes(start) && end.map { key.lexicographicallyPrecedes($0) } ?? true
    }

    /// What remains of this range once `holes` are taken out, in key order.
    public func subtracting(_ holes: [KeyRange]) -> [KeyRange] {
        holes.reduce([self]) { pieces, hole in pieces.flatMap { $0.subtracting(hole) } }
    }

    private func subtracting(_ hole: KeyRange) -> [KeyRange] {
        let holeStartsBeforeEnd = end.map { hole.start.lexicographicallyPrecedes($0) } ?? true
        let startsBeforeHoleEnd = hole.end.map { start.lexicographicallyPrecedes($0) } ?? true
        guard holeStartsBeforeEnd && startsBeforeHoleEnd else { return [self] }
        var pieces: [KeyRange] = []
        if start.lexicographicallyPrecedes(hole.start) { pieces.append(KeyRange(start: start, end: hole.start)) }
        if let holeEnd = hole.end, end.map({ holeEnd.lexicographicallyPrecedes($0) }) ?? true {
            pieces.append(KeyRange(start: holeEnd, end: end))
        }
        return pieces
    }
}

/// One key and its value.
public struct KeyValuePair: Sendable, Hashable {
    public var key: [UInt8]
    public var value: [UInt8]

    public init(key: [UInt8], value: [UInt8]) {
        self.key = key
        self.value = value
    }
}

/// Writes applied together, atomically and in order.
public struct WriteBatch: Sendable, Hashable {
    /// One write of a batch.
    public enum Operation: Sendable, Hashable {
        case put(key: [UInt8], value: [UInt8])
        case delete(key: [UInt8])
        case deleteRange(KeyRange)
    }

    public var operations: [Operation] = []

    public init(_ operations: [Operation] = []) {
        self.operations = operations
    }

    public mutating func put(_ key: [UInt8], _ value: [UInt8]) { operations.append(.put(key: key, value: value)) }
    public mutating func delete(_ key: [UInt8]) { operations.append(.delete(key: key)) }
    public mutating func deleteRange(_ range: KeyRange) { operations.append(.deleteRange(range)) }
    public var isEmpty: Bool { operations.isEmpty }
}
