/// The in-memory view of a node's log: everything after the last snapshot, and which part of it
/// is persisted, committed and applied.
///
/// Invariant: `snapshotIndex <= applied <= committed <= lastIndex`, and `stableIndex <= lastIndex`.
struct RaftLog: Sendable {
    /// The index and term of the last entry the snapshot covers; entries start right after it.
    private(set) var snapshotIndex: UInt64
    private(set) var snapshotTerm: UInt64
    /// `entries[i]` has index `snapshotIndex + 1 + i`.
    private(set) var entries: [Entry]
    /// The highest index known to be committed.
    private(set) var committed: UInt64
    /// The highest index handed to the application (acknowledged through `advance`).
    var applied: UInt64
    /// Every entry up to this index is durable on this node.
    var stableIndex: UInt64
    /// A snapshot received from the leader that the application has not persisted yet.
    var pendingSnapshot: Snapshot?

    init(snapshotIndex: UInt64, snapshotTerm: UInt64, entries: [Entry], committed: UInt64) {
        self.snapshotIndex = snapshotIndex
        self.snapshotTerm = snapshotTerm
        self.entries = entries
        self.committed = committed
        self.applied = snapshotIndex
        self.stableIndex = snapshotIndex + UInt64(entries.count)
    }

    var firstIndex: UInt64 { snapshotIndex + 1 }
    var lastIndex: UInt64 { snapshotIndex + UInt64(entries.count) }
    var lastTerm: UInt64 { entries.last?.term ?? snapshotTerm }

    /// The term of the entry at `index`, or nil when it is compacted away or not there yet.
    func term(at index: UInt64) -> UInt64? {
        if index == snapshotIndex { return snapshotTerm }
        if index < snapshotIndex || index > lastIndex { return nil }
        return entries[Int(index - snapshotIndex - 1)].term
    }

    func entry(at index: UInt64) -> Entry? {
        guard index > snapshotIndex, index <= lastIndex else { return nil }
        return entries[Int(index - snapshotIndex - 1)]
    }

    func matchesTerm(_ index: UInt64, _ term: UInt64) -> Bool { self.term(at: index) == term }

    /// Raft §5.4.1: a candidate's log is at least as up to date as ours.
    func isUpToDate(lastIndex otherIndex: UInt64, lastTerm otherTerm: UInt64) -> Bool {
        otherTerm > lastTerm || (otherTerm == lastTerm && otherIndex >= lastIndex)
    }

    /// Entries from `index` on, within the count and byte limits; at least one entry if any exists.
    /// Nil when `index` is compacted away.
    func entries(from index: UInt64, maxCount: Int, maxBytes: Int) -> [Entry]? {
        if index <= snapshotIndex { return nil }
        if index > lastIndex { return [] }
        let start = Int(index - snapshotIndex - 1)
        var end = start
        var bytes = 0
        while end < entries.count, end - start < maxCount {
            bytes += entries[end].approximateSize
            if bytes > maxBytes && end > start { break }
            end += 1
        }
        return Array(entries[start..<end])
    }

    /// Entries not yet handed to storage.
    var unstableEntries: ArraySlice<Entry> {
        let from = max(stableIndex, snapshotIndex)
        return entries[Int(from - snapshotIndex)...]
    }

    /// Committed entries the application has not been given yet.
    var unappliedCommittedEntries: ArraySlice<Entry> {
        guard committed > applied, applied >= snapshotIndex else { return [] }
        let from = Int(applied - snapshotIndex)
        let to = Int(committed - snapshotIndex)
        return entries[from..<to]
    }

    /// etcd's `findConflictByTerm`: the largest index at or below `index` whose term is at most `term`.
    /// Lets a rejecting follower and the leader skip a whole term of conflicting entries per round trip.
    func largestIndex(atOrBelow index: UInt64, withTermAtMost term: UInt64) -> UInt64 {
        var i = min(index, lastIndex)
        while i > snapshotIndex {
            if let t = self.term(at: i), t <= term { return i }
            i -= 1
        }
        return snapshotIndex
    }

    /// Appends leader entries after checking that they follow `previousIndex`/`previousTerm` (Raft's
    /// consistency check). Returns the index of the last new entry, or nil on a mismatch.
    mutating func maybeAppend(previousIndex: UInt64, previousTerm: UInt64, entries newEntries: [Entry]) -> UInt64? {
        guard matchesTerm(previousIndex, previousTerm) else { return nil }
        let lastNew = previousIndex + UInt64(newEntries.count)
        // Only an entry whose term differs is a conflict; identical ones are duplicates of a resent append.
        for entry in newEntries where entry.index > snapshotIndex {
            guard let existing = term(at: entry.index) else {
                append(Array(newEntries.drop { $0.index < entry.index }))
                return lastNew
            }
            if existing != entry.term {
                append(Array(newEntries.drop { $0.index < entry.index }))
                return lastNew
            }
        }
        return lastNew
    }

    /// Appends entries, truncating any existing suffix from the first new index on.
    /// The caller guarantees that the first entry's index is in `firstIndex...lastIndex + 1`.
    mutating func append(_ newEntries: [Entry]) {
        guard let first = newEntries.first else { return }
        let keep = Int(first.index - snapshotIndex - 1)
        if keep < entries.count {
            entries.removeSubrange(keep...)
            stableIndex = min(stableIndex, first.index - 1)
        }
        entries.append(contentsOf: newEntries)
    }

    mutating func commit(to index: UInt64) {
        if index > committed { committed = min(index, lastIndex) }
    }

    /// Drops the entries a snapshot covers.
    mutating func compact(through index: UInt64) {
        guard index > snapshotIndex, index <= applied, let t = term(at: index) else { return }
        entries.removeFirst(Int(index - snapshotIndex))
        snapshotIndex = index
        snapshotTerm = t
    }

    /// Replaces the whole log by a snapshot received from the leader.
    mutating func restore(_ snapshot: Snapshot) {
        snapshotIndex = snapshot.metadata.index
        snapshotTerm = snapshot.metadata.term
        entries = []
        committed = snapshot.metadata.index
        stableIndex = min(stableIndex, snapshotIndex)
        pendingSnapshot = snapshot
    }

    /// Called once the application has persisted and restored `pendingSnapshot`.
    mutating func snapshotPersisted(index: UInt64) {
        guard pendingSnapshot?.metadata.index == index else { return }
        pendingSnapshot = nil
        applied = max(applied, index)
        stableIndex = max(stableIndex, index)
    }
}
