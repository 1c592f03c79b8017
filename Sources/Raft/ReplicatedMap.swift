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

    public func snapshotView() -> any StateMachineView { View(values: values.withLock { $0 }) }

    public func restore(from data: [UInt8]) throws {
        var restored: [String: String] = [:]
        var offset = 0
        func field() throws -> String {
            guard offset + 4 <= data.count else { throw SnapshotFormatError(offset: offset) }
            let length = (0..<4).reduce(0) { $0 | Int(data[offset + $1]) << (8 * $1) }
            guard offset + 4 + length <= data.count else { throw SnapshotFormatError(offset: offset) }
            defer { offset += 4 + length }
            return String(decoding: data[(offset + 4)..<(offset + 4 + length)], as: UTF8.self)
        }
        while offset < data.count {
            let key = try field()
            restored[key] = try field()
        }
        values.withLock { $0 = restored }
    }

    /// The map as it was when the view was taken: key and value, each length-prefixed, in key order.
    struct View: StateMachineView {
        let values: [String: String]

        func serialized() -> [UInt8] {
            var data: [UInt8] = []
            for key in values.keys.sorted() {
                for text in [key, values[key]!] {
                    let bytes = Array(text.utf8)
                    data += (0..<4).map { UInt8(truncatingIfNeeded: bytes.count >> (8 * $0)) } + bytes
                }
            }
            return data
        }
    }

    /// Snapshot data that does not parse.
    public struct SnapshotFormatError: Error, CustomStringConvertible {
        public var offset: Int
        public var description: String { "replicated map snapshot is malformed at byte \(offset)" }
    }

    /// The value of `key` as applied here. Call after `RaftGroup.readIndex()` for a linearizable read.
    public func value(of key: String) -> String? { values.withLock { $0[key] } }

}
