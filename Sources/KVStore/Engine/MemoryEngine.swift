import Synchronization

/// A storage engine in memory, for tests and `--engine memory` in the demo: a copy-on-write treap
/// behind a mutex. Writes cost O(log n) per key, and so does a whole `deleteRange`; a snapshot is a
/// copy of the tree's root, O(1) to take, and later writes copy the nodes they would change.
public final class MemoryEngine: StorageEngine {
    private let tree = Mutex(PersistentTreap())

    public init() {}

    public func get(_ key: [UInt8]) -> [UInt8]? {
        current().value(at: key)
    }

    public func scan(_ range: KeyRange, limit: Int, reverse: Bool) -> [KeyValuePair] {
        current().pairs(in: range, limit: limit, reverse: reverse)
    }

    /// Applies the batch under the lock, so readers see all of it or none of it.
    public func write(_ batch: WriteBatch) {
        tree.withLock { tree in
            for operation in batch.operations {
                switch operation {
                case .put(let key, let value): tree.insert(key, value)
                case .delete(let key): tree.remove(key)
                case .deleteRange(let range): tree.removeAll(in: range)
                }
            }
        }
    }

    public func snapshot() -> any EngineSnapshot {
        MemorySnapshot(tree: current())
    }

    /// Nothing to do: a memory engine keeps nothing across a restart.
    public func flush() {}

    /// A copy of the tree to read outside the lock, so a long scan does not hold up writes. While
    /// the copy lives, writes copy the nodes they change instead of changing them.
    private func current() -> PersistentTreap {
        tree.withLock { $0 }
    }
}

/// A frozen view of a `MemoryEngine`: a copy of its tree, which later writes to the engine don't touch.
struct MemorySnapshot: EngineSnapshot {
    let tree: PersistentTreap

    func get(_ key: [UInt8]) -> [UInt8]? {
        tree.value(at: key)
    }

    func scan(_ range: KeyRange, limit: Int, reverse: Bool) -> [KeyValuePair] {
        tree.pairs(in: range, limit: limit, reverse: reverse)
    }
}
