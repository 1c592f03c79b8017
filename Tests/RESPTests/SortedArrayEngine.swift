import KVStore
import Synchronization

/// The smallest correct `StorageEngine`: a sorted array behind a lock. The RESP tests need an
/// engine under `LocalKVService`; what they test is the KV state machine above it and the Redis
/// front end above that.
final class SortedArrayEngine: StorageEngine {
    private let pairs = Mutex<[KeyValuePair]>([])

    func get(_ key: [UInt8]) throws -> [UInt8]? {
        pairs.withLock { pairs in
            let index = Self.lowerBound(key, in: pairs)
            return index < pairs.count && pairs[index].key == key ? pairs[index].value : nil
        }
    }

    func scan(_ range: KeyRange, limit: Int, reverse: Bool) throws -> [KeyValuePair] {
        let selected = pairs.withLock { pairs in
            let start = Self.lowerBound(range.start, in: pairs)
            let end = range.end.map { Self.lowerBound($0, in: pairs) } ?? pairs.count
            return start < end ? Array(pairs[start..<end]) : []
        }
        return Array((reverse ? selected.reversed() : selected).prefix(limit))
    }

    func write(_ batch: WriteBatch) throws {
        pairs.withLock { pairs in
            for operation in batch.operations {
                switch operation {
                case .put(let key, let value):
                    let index = Self.lowerBound(key, in: pairs)
                    if index < pairs.count, pairs[index].key == key {
                        pairs[index].value = value
                    } else {
                        pairs.insert(KeyValuePair(key: key, value: value), at: index)
                    }
                case .delete(let key):
                    let index = Self.lowerBound(key, in: pairs)
                    if index < pairs.count, pairs[index].key == key { pairs.remove(at: index) }
                case .deleteRange(let range):
                    pairs.removeAll { range.contains($0.key) }
                }
            }
        }
    }

    func snapshot() -> any EngineSnapshot {
        Frozen(pairs: pairs.withLock { $0 })
    }

    private static func lowerBound(_ key: [UInt8], in pairs: [KeyValuePair]) -> Int {
        var low = 0
        var high = pairs.count
        while low < high {
            let middle = (low + high) / 2
            if pairs[middle].key.lexicographicallyPrecedes(key) { low = middle + 1 } else { high = middle }
        }
        return low
    }

    private struct Frozen: EngineSnapshot {
        let pairs: [KeyValuePair]

        func get(_ key: [UInt8]) throws -> [UInt8]? {
            pairs.first { $0.key == key }?.value
        }

        func scan(_ range: KeyRange, limit: Int, reverse: Bool) throws -> [KeyValuePair] {
            let selected = pairs.filter { range.contains($0.key) }
            return Array((reverse ? selected.reversed() : selected).prefix(limit))
        }
    }
}
