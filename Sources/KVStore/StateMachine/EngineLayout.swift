import KVWire
import RaftCore

/// How the KV store lays its data out in the store's one engine. A one-byte namespace comes first,
/// then the user's key, so that a region's key range `[start, end)` is one engine range per namespace
/// and a region's snapshot or deletion is a few range operations.
enum EngineLayout {
    /// Region metadata: `0x00 ++ region id (big-endian)`.
    static let metaSpace: UInt8 = 0x00
    /// Strings: `0x01 ++ key` → `StoredRecord`.
    static let dataSpace: UInt8 = 0x01
    /// Locks: `0x02 ++ name` → `StoredLock`.
    static let lockSpace: UInt8 = 0x02
    /// Sequences: `0x03 ++ key` → the next number, big-endian.
    static let sequenceSpace: UInt8 = 0x03
    static let userSpaces: [UInt8] = [dataSpace, lockSpace, sequenceSpace]

    static func key(_ space: UInt8, _ key: Bytes) -> Bytes {
        var bytes = Bytes()
        bytes.reserveCapacity(key.count + 1)
        bytes.append(space)
        bytes.append(contentsOf: key)
        return bytes
    }

    static func metaKey(region: UInt64) -> Bytes {
        [metaSpace] + bigEndian(region)
    }

    /// Big-endian, so that numbers sort as bytes do.
    static func bigEndian(_ value: UInt64) -> Bytes {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * $0)) }
    }

    static func uint64(bigEndian bytes: some Collection<UInt8>) -> UInt64 {
        bytes.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// The engine range that holds `space`'s keys in `[start, end)`.
    static func range(_ space: UInt8, start: Bytes, end: Bytes?) -> KeyRange {
        KeyRange(start: key(space, start), end: end.map { key(space, $0) } ?? [space + 1])
    }

    /// The engine ranges of every user namespace within `[start, end)`.
    static func userRanges(start: Bytes, end: Bytes?) -> [KeyRange] {
        userSpaces.map { range($0, start: start, end: end) }
    }
}

/// A string value as stored: its bytes and, when it has one, the Unix time in milliseconds at which
/// it expires. A record whose time has come is treated as absent by every operation.
struct StoredRecord: Hashable {
    var value: Bytes
    var expiresAt: Int64?

    func isLive(at now: Int64) -> Bool { expiresAt.map { $0 > now } ?? true }

    var encoded: Bytes {
        guard let expiresAt else { return [0] + value }
        return [1] + EngineLayout.bigEndian(UInt64(bitPattern: expiresAt)) + value
    }

    init(value: Bytes, expiresAt: Int64?) {
        self.value = value
        self.expiresAt = expiresAt
    }

    init(decoding bytes: Bytes) throws(KVStoreError) {
        guard let flag = bytes.first, flag <= 1, flag == 0 || bytes.count >= 9 else {
            throw .corrupt("a stored record of \(bytes.count) bytes")
        }
        if flag == 1 {
            expiresAt = Int64(bitPattern: EngineLayout.uint64(bigEndian: bytes[1..<9]))
            value = Array(bytes[9...])
        } else {
            expiresAt = nil
            value = Array(bytes[1...])
        }
    }
}

/// A lock as stored. The token survives release, so the next holder's fencing token is higher
/// than every earlier one.
struct StoredLock: Hashable, BinaryCodable {
    /// Empty when free.
    var owner: Bytes
    var token: UInt64
    var expiresAt: Int64

    init(owner: Bytes, token: UInt64, expiresAt: Int64) {
        self.owner = owner
        self.token = token
        self.expiresAt = expiresAt
    }

    func isHeld(at now: Int64) -> Bool { !owner.isEmpty && expiresAt > now }

    func encode(to writer: inout ByteWriter) {
        writer.writeLengthPrefixed(owner)
        writer.write(token)
        writer.write(UInt64(bitPattern: expiresAt))
    }

    init(from reader: inout ByteReader) throws(CodecError) {
        owner = try reader.readLengthPrefixed("a lock owner")
        token = try reader.readUInt64("a fencing token")
        expiresAt = Int64(bitPattern: try reader.readUInt64("a lease end"))
    }
}

/// Errors of the KV store's own storage.
public enum KVStoreError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Bytes in the engine or a snapshot that do not decode.
    case corrupt(String)
    /// The engine failed.
    case engine(String)
    /// An option that makes no sense.
    case invalidOption(String)

    public var description: String {
        switch self {
        case .corrupt(let what): return "corrupt KV data: \(what)"
        case .engine(let what): return "storage engine: \(what)"
        case .invalidOption(let what): return "invalid option: \(what)"
        }
    }
}
