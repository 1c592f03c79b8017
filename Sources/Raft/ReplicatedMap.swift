import RaftCore
import Synchronization

/// The built-in state machine of `divan server` until Divan KV lands: a replicated map of strings.
/// A command is `put` or `delete`; the result of each is the previous value (empty when none).
public final class ReplicatedMap: StateMachine {
    private let values = Mutex<[String: String]>([:])

    public init() {}

    /// A change to the map, as it travels in a log entry.
    public enum Command: Sendable, Hashable {
        case put(key: String, value: String)
        case delete(key: String)

        /// One tag byte, the key's length (4 bytes, little-endian), the key, then the value.
        public var encoded: [UInt8] {
            switch self {
            case .put(let key, let value): return [1] + Self.lengthPrefixed(key) + Array(value.utf8)
            case .delete(let key): return [2] + Self.lengthPrefixed(key)
            }
        }

        public init?(_ data: [UInt8]) {
            guard data.count >= 5 else { return nil }
            let length = (1...4).reduce(0) { $0 | Int(data[$1]) << (8 * ($1 - 1)) }
            guard data.count >= 5 + length else { return nil }
            let key = String(decoding: data[5..<(5 + length)], as: UTF8.self)
            switch data[0] {
            case 1: self = .put(key: key, value: String(decoding: data[(5 + length)...], as: UTF8.self))
            case 2: self = .delete(key: key)
            default: return nil
            }
        }

        private static func lengthPrefixed(_ key: String) -> [UInt8] {
            let bytes = Array(key.utf8)
            return (0..<4).map { UInt8(truncatingIfNeeded: bytes.count >> (8 * $0)) } + bytes
        }
    }

    public func apply(_ entries: [CommittedEntry]) throws -> [[UInt8]] {
        values.withLock { map in
            entries.map { entry in
                switch Command(entry.data) {
                case .put(let key, let value):
                    defer { map[key] = value }
                    return Array((map[key] ?? "").utf8)
                case .delete(let key):
                    return Array((map.removeValue(forKey: key) ?? "").utf8)
                case nil:
                    // Garbage cannot come from our own clients; skipping it keeps every replica equal.
                    return []
                }
            }
        }
    }

    /// The value of `key` as applied here. Call after `RaftGroup.readIndex()` for a linearizable read.
    public func value(of key: String) -> String? { values.withLock { $0[key] } }

    public var count: Int { values.withLock { $0.count } }
}
