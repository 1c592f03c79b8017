#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The engines' key order: bytes compared as unsigned, a prefix before its extensions. This is
/// RocksDB's default bytewise comparator and `lexicographicallyPrecedes` on `[UInt8]`; memcmp makes it
/// fast in debug builds too, where the generic comparison is not specialized.
enum KeyOrder {
    /// Negative, zero or positive as `a` sorts before, equal to or after `b`.
    static func compare(_ a: [UInt8], _ b: [UInt8]) -> Int {
        let common = min(a.count, b.count)
        let prefix = a.withUnsafeBytes { a in
            b.withUnsafeBytes { b in common == 0 ? 0 : memcmp(a.baseAddress!, b.baseAddress!, common) }
        }
        return prefix != 0 ? Int(prefix) : a.count - b.count
    }

    /// The smallest key after `key`: `key` followed by a zero byte.
    static func successor(of key: [UInt8]) -> [UInt8] { key + [0] }

    /// Whether `range` holds no key at all (its end is at or before its start).
    static func isEmpty(_ range: KeyRange) -> Bool {
        range.end.map { compare($0, range.start) <= 0 } ?? false
    }
}
