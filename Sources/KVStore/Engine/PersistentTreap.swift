/// A sorted map from byte keys to byte values whose copies share structure: copying it is O(1) and a
/// copy never sees later changes to the original, which is what makes `MemoryEngine` snapshots cheap.
///
/// It is a treap (a binary search tree that is also a heap on a per-key priority) with copy-on-write
/// nodes. An insert mutates the nodes on its path in place when nothing else refers to them and copies
/// them otherwise; removals split the tree and merge the remaining parts, copying the O(log n) nodes
/// on the split paths, so that removing a whole range costs no more than removing one key. The
/// priority is a hash of the key, so the same keys always give the same, expected-balanced shape.
struct PersistentTreap: Sendable {
    private var root: Node?

    init() {}

    /// The value stored at `key`, or nil.
    func value(at key: [UInt8]) -> [UInt8]? {
        var node = root
        while let current = node {
            let order = KeyOrder.compare(key, current.key)
            if order == 0 { return current.value }
            node = order < 0 ? current.left : current.right
        }
        return nil
    }

    /// Sets `key` to `value`.
    mutating func insert(_ key: [UInt8], _ value: [UInt8]) {
        Self.insert(key, value, priority: Self.priority(of: key), into: &root)
    }

    /// Removes every key of `range`.
    mutating func removeAll(in range: KeyRange) {
        guard !KeyOrder.isEmpty(range) else { return }
        let (below, rest) = Self.split(root, before: range.start)
        let above = range.end.flatMap { Self.split(rest, before: $0).atOrAbove }
        root = Self.merge(below, above)
    }

    /// Removes `key`.
    mutating func remove(_ key: [UInt8]) {
        removeAll(in: KeyRange(start: key, end: KeyOrder.successor(of: key)))
    }

    /// Up to `limit` pairs of `range`, ascending, or descending when `reverse`.
    func pairs(in range: KeyRange, limit: Int, reverse: Bool) -> [KeyValuePair] {
        guard limit > 0, !KeyOrder.isEmpty(range) else { return [] }
        return reverse ? descending(in: range, limit: limit) : ascending(in: range, limit: limit)
    }

    /// An in-order walk with an explicit stack of the nodes whose key and right subtree are still to
    /// come; it starts with the path to the first key at or after `range.start`.
    private func ascending(in range: KeyRange, limit: Int) -> [KeyValuePair] {
        var result: [KeyValuePair] = []
        var pending: [Node] = []
        var node = root
        while let current = node {
            if KeyOrder.compare(current.key, range.start) >= 0 {
                pending.append(current)
                node = current.left
            } else {
                node = current.right
            }
        }
        while result.count < limit, let next = pending.popLast() {
            if let end = range.end, KeyOrder.compare(next.key, end) >= 0 { break }
            result.append(KeyValuePair(key: next.key, value: next.value))
            node = next.right
            while let current = node {
                pending.append(current)
                node = current.left
            }
        }
        return result
    }

    /// The mirror of `ascending`: it starts with the path to the last key before `range.end`.
    private func descending(in range: KeyRange, limit: Int) -> [KeyValuePair] {
        var result: [KeyValuePair] = []
        var pending: [Node] = []
        var node = root
        while let current = node {
            if range.end.map({ KeyOrder.compare(current.key, $0) < 0 }) ?? true {
                pending.append(current)
                node = current.right
            } else {
                node = current.left
            }
        }
        while result.count < limit, let next = pending.popLast() {
            if KeyOrder.compare(next.key, range.start) < 0 { break }
            result.append(KeyValuePair(key: next.key, value: next.value))
            node = next.left
            while let current = node {
                pending.append(current)
                node = current.right
            }
        }
        return result
    }

    /// A tree node. It is mutated only while the tree that owns it is its only owner (checked with
    /// `isKnownUniquelyReferenced` on every node of a write's path); once a copy of the tree or a
    /// reader's walk holds it, or holds an ancestor that leads to it, writers copy it instead. Readers
    /// on other threads therefore only ever see nodes that no thread changes any more, which is why
    /// the unchecked Sendable is sound.
    private final class Node: @unchecked Sendable {
        var key: [UInt8]
        var value: [UInt8]
        let priority: UInt64
        var left: Node?
        var right: Node?

        init(key: [UInt8], value: [UInt8], priority: UInt64, left: Node? = nil, right: Node? = nil) {
            self.key = key
            self.value = value
            self.priority = priority
            self.left = left
            self.right = right
        }

        func with(left: Node?, right: Node?) -> Node {
            Node(key: key, value: value, priority: priority, left: left, right: right)
        }
    }

    private static func insert(_ key: [UInt8], _ value: [UInt8], priority: UInt64, into slot: inout Node?) {
        guard slot != nil else {
            slot = Node(key: key, value: value, priority: priority)
            return
        }
        if !isKnownUniquelyReferenced(&slot) { slot = slot!.with(left: slot!.left, right: slot!.right) }
        let node = slot!
        let order = KeyOrder.compare(key, node.key)
        if order == 0 {
            node.value = value
        } else if order < 0 {
            insert(key, value, priority: priority, into: &node.left)
            if node.left!.priority > node.priority { rotateRight(&slot) }
        } else {
            insert(key, value, priority: priority, into: &node.right)
            if node.right!.priority > node.priority { rotateLeft(&slot) }
        }
    }

    /// Lifts the left child of `slot` above it; both nodes are already owned by this tree alone.
    private static func rotateRight(_ slot: inout Node?) {
        let node = slot!
        let left = node.left!
        node.left = left.right
        left.right = node
        slot = left
    }

    /// Lifts the right child of `slot` above it; both nodes are already owned by this tree alone.
    private static func rotateLeft(_ slot: inout Node?) {
        let node = slot!
        let right = node.right!
        node.right = right.left
        right.left = node
        slot = right
    }

    /// The keys of `node`'s tree before `key`, and those at or after it, as two new trees that copy
    /// the nodes on the split path and share every other node with the original.
    private static func split(_ node: Node?, before key: [UInt8]) -> (below: Node?, atOrAbove: Node?) {
        guard let node else { return (nil, nil) }
        if KeyOrder.compare(node.key, key) < 0 {
            let (below, atOrAbove) = split(node.right, before: key)
            return (node.with(left: node.left, right: below), atOrAbove)
        }
        let (below, atOrAbove) = split(node.left, before: key)
        return (below, node.with(left: atOrAbove, right: node.right))
    }

    /// One tree holding the keys of `lower` and `upper`, where every key of `lower` sorts first.
    private static func merge(_ lower: Node?, _ upper: Node?) -> Node? {
        guard let lower else { return upper }
        guard let upper else { return lower }
        if lower.priority > upper.priority {
            return lower.with(left: lower.left, right: merge(lower.right, upper))
        }
        return upper.with(left: merge(lower, upper.left), right: upper.right)
    }

    /// FNV-1a over the key, finished with SplitMix64's mixer so that keys differing in one byte get
    /// unrelated priorities. Deterministic across runs, unlike `Hasher`.
    private static func priority(of key: [UInt8]) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        hash = (hash ^ (hash >> 30)) &* 0xbf58_476d_1ce4_e5b9
        hash = (hash ^ (hash >> 27)) &* 0x94d0_49bb_1331_11eb
        return hash ^ (hash >> 31)
    }
}
