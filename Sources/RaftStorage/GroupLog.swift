import RaftCore

/// One group's view of the shared log: where each entry lives, its hard state, the index its log
/// was compacted through, and a cache of its most recent entries.
struct GroupLog: Sendable {
    /// The last index covered by a snapshot or compaction (0 for none), and its term.
    var baseIndex: UInt64 = 0
    var baseTerm: UInt64 = 0
    /// The index of `slots[head]`. Equal to `baseIndex + 1` except during recovery, where rewritten
    /// entries may arrive after later ones.
    private(set) var firstIndex: UInt64 = 1
    private var slots: [Slot] = []
    private var head = 0
    var hardState: HardState?
    /// The segments holding this group's latest hard state and compaction records (0 for none): a
    /// purge must copy these records forward before it deletes their segment.
    var hardStateSegment: UInt32 = 0
    var baseSegment: UInt32 = 0
    /// The most recent entries, always a suffix of the log.
    private var cache: [Entry] = []
    private var cacheHead = 0

    var count: Int { slots.count - head }
    var lastIndex: UInt64 { count == 0 ? baseIndex : firstIndex + UInt64(count) - 1 }
    var lastTerm: UInt64 { count == 0 ? baseTerm : slots[slots.count - 1].term }
    var cachedCount: Int { cache.count - cacheHead }

    func slot(at index: UInt64) -> Slot? {
        guard index >= firstIndex, index <= lastIndex, count > 0 else { return nil }
        return slots[head + Int(index - firstIndex)]
    }

    func term(at index: UInt64) -> UInt64? {
        if index == baseIndex { return baseTerm }
        return slot(at: index)?.term
    }

    func cachedEntry(at index: UInt64) -> Entry? {
        let firstCached = lastIndex + 1 - UInt64(cachedCount)
        guard cachedCount > 0, index >= firstCached, index <= lastIndex else { return nil }
        return cache[cacheHead + Int(index - firstCached)]
    }

    /// Every live slot, with its index, for a purge.
    func forEachSlot(_ body: (UInt64, Slot) -> Void) {
        for i in head..<slots.count { body(firstIndex + UInt64(i - head), slots[i]) }
    }

    /// Replaces the suffix from `first` on with `newSlots` (and their entries, when the caller has them).
    /// During recovery `first` may lie past the end: the gap is left as holes for rewritten entries to fill.
    mutating func append(first: UInt64, _ newSlots: [Slot], entries: [Entry]?) {
        if count == 0 {
            // During recovery `first` may lie past the snapshot index: the entries before it are
            // rewritten copies that replay later (`fill`), or a hole that `firstHole` reports.
            slots.removeAll(keepingCapacity: true)
            head = 0
            firstIndex = first
            dropCache()
        } else if first > lastIndex + 1 {
            while lastIndex + 1 < first { slots.append(.hole) }
            dropCache()
        } else if first < firstIndex {
            slots.removeAll(keepingCapacity: true)
            head = 0
            firstIndex = first
            dropCache()
        } else {
            let keep = Int(first - firstIndex)
            let removed = count - keep
            slots.removeLast(removed)
            cache.removeLast(min(removed, cachedCount))
            if cachedCount == 0 { dropCache() }
        }
        slots.append(contentsOf: newSlots)
        // The cache stays a suffix: whatever was truncated left it ending right before `first`, or empty.
        if let entries { cache.append(contentsOf: entries) } else { dropCache() }
    }

    /// Fills indexes with rewritten entries without truncating anything (recovery only).
    mutating func fill(first: UInt64, _ newSlots: [Slot]) {
        for (i, slot) in newSlots.enumerated() {
            let index = first + UInt64(i)
            if index <= baseIndex { continue }
            if count == 0 {
                slots.removeAll(keepingCapacity: true)
                head = 0
                firstIndex = index
                slots.append(slot)
            } else if index < firstIndex {
                var grown = [Slot](repeating: .hole, count: Int(firstIndex - index))
                grown.append(contentsOf: slots[head...])
                slots = grown
                head = 0
                firstIndex = index
                slots[0] = slot
            } else if index > lastIndex {
                while lastIndex + 1 < index { slots.append(.hole) }
                slots.append(slot)
            } else {
                slots[head + Int(index - firstIndex)] = slot
            }
        }
        dropCache()
    }

    /// Points already-live entries at their rewritten copies.
    mutating func relocate(index: UInt64, from old: Slot, to new: Slot) {
        guard index >= firstIndex, index <= lastIndex else { return }
        let i = head + Int(index - firstIndex)
        if slots[i] == old { slots[i] = new }
    }

    /// Forgets entries up to `index`, whose term is `term`.
    mutating func compact(through index: UInt64, term: UInt64) {
        guard index > baseIndex else { return }
        baseIndex = index
        baseTerm = term
        if count > 0 && index >= firstIndex {
            let drop = min(count, Int(index - firstIndex + 1))
            head += drop
            firstIndex += UInt64(drop)
            // Reclaim the dropped prefix once it is the larger part of the array.
            if head > 1024 && head > slots.count / 2 {
                slots.removeFirst(head)
                head = 0
            }
        }
        if count == 0 {
            slots.removeAll(keepingCapacity: true)
            head = 0
            firstIndex = index + 1
        }
        if cachedCount > count { cacheHead += cachedCount - count }
        if cachedCount == 0 { dropCache() }
    }

    /// Replaces the whole log by a snapshot's position.
    mutating func reset(toSnapshot index: UInt64, term: UInt64) {
        baseIndex = index
        baseTerm = term
        slots.removeAll()
        head = 0
        firstIndex = index + 1
        dropCache()
    }

    /// Drops cached entries from the front while more than `limit` are cached and the entry is
    /// already written (an unwritten entry can only be read from the cache).
    mutating func trimCache(limit: Int, written: LogPosition) {
        guard cachedCount > limit else { return }
        var firstCached = lastIndex + 1 - UInt64(cachedCount)
        while cachedCount > limit, let slot = slot(at: firstCached),
            LogPosition(segment: slot.segment, offset: Int(slot.recordOffset)) < written
        {
            cacheHead += 1
            firstCached += 1
        }
        if cacheHead > 256 && cacheHead > cache.count / 2 {
            cache.removeFirst(cacheHead)
            cacheHead = 0
        }
    }

    private mutating func dropCache() {
        cache.removeAll(keepingCapacity: false)
        cacheHead = 0
    }

    /// After recovery: the first index that is still a hole, if any.
    func firstHole() -> UInt64? {
        for i in head..<slots.count where slots[i].isHole { return firstIndex + UInt64(i - head) }
        return nil
    }
}
