import RaftCore

/// What a purge did.
public struct PurgeReport: Sendable, Hashable {
    /// Sequence numbers of the deleted segment files.
    public var deletedSegments: [UInt32] = []
    /// Live entries copied to the head of the log before their segments were deleted.
    public var rewrittenEntries = 0
}

extension WALCore {
    private struct Plan {
        var horizon: UInt32
        var live: [(group: RaftGroupID, index: UInt64, slot: Slot, file: SegmentFile)]
    }

    /// Deletes the longest prefix of sealed segments of which at most `purgeLiveRatio` is live,
    /// after copying the live part forward. Only a prefix is ever deleted: a record's effect on
    /// replay (a truncation, a compaction) only reaches records before it, so dropping a prefix
    /// whose live data was copied cannot change what recovery rebuilds.
    func purge() async throws(StorageError) -> PurgeReport {
        let plan: Plan? = lock.withLock { state in
            guard !state.isPurging, state.failure == nil, !state.isClosing else { return nil }
            guard let plan = makePlan(state) else { return nil }
            state.isPurging = true
            return plan
        }
        guard let plan else { return PurgeReport() }
        defer { lock.withLock { $0.isPurging = false } }

        var report = PurgeReport()
        // Read the live entries (outside the lock), then queue them in chunks of at most half a batch.
        var chunk: [(RaftGroupID, Entry, Slot)] = []
        var chunkBytes = 0
        var record: (segment: UInt32, offset: UInt32, bytes: [UInt8])?
        for item in plan.live {
            if record?.segment != item.slot.segment || record?.offset != item.slot.recordOffset {
                record = (item.slot.segment, item.slot.recordOffset, try readRecord(item.slot, item.file))
            }
            let entry = try decodeEntry(item.slot, record!.bytes, item.file)
            chunk.append((item.group, entry, item.slot))
            chunkBytes += Int(item.slot.entryLength) + 16
            if chunkBytes >= options.maximumBatchBytes / 2 {
                report.rewrittenEntries += try await rewrite(chunk, horizon: plan.horizon, withState: false)
                chunk.removeAll()
                chunkBytes = 0
            }
        }
        report.rewrittenEntries += try await rewrite(chunk, horizon: plan.horizon, withState: true)

        let doomed: [SegmentFile] = lock.withLock { state in
            guard !references(state, atOrBefore: plan.horizon) else { return [] }
            let files = state.segmentOrder.filter { $0 <= plan.horizon }.compactMap { state.segments[$0] }
            for file in files { state.segments[file.sequence] = nil }
            state.segmentOrder.removeAll { $0 <= plan.horizon }
            return files
        }
        for file in doomed {
            try FileSystem.remove(file.path)
            report.deletedSegments.append(file.sequence)
        }
        if !doomed.isEmpty { try FileSystem.syncDirectory(directory) }
        return report
    }

    /// Chooses the horizon: the last segment of the longest sealed prefix that is mostly dead.
    private func makePlan(_ state: WALState) -> Plan? {
        // Only segments before the one the writer last synced are sealed and fully on disk.
        let sealed = state.segmentOrder.filter { $0 < state.durable.segment }
        guard !sealed.isEmpty else { return nil }
        var liveBytes: [UInt32: Int] = [:]
        for log in state.groups.values {
            log.forEachSlot { _, slot in liveBytes[slot.segment, default: 0] += Int(slot.entryLength) + 16 }
            if log.hardStateSegment != 0 { liveBytes[log.hardStateSegment, default: 0] += 32 }
            if log.baseSegment != 0 { liveBytes[log.baseSegment, default: 0] += 32 }
        }
        var horizon: UInt32?
        var live = 0
        var total = 0
        for sequence in sealed {
            live += liveBytes[sequence] ?? 0
            total += options.segmentSize
            if Double(live) <= options.purgeLiveRatio * Double(total) { horizon = sequence }
        }
        guard let horizon else { return nil }
        var items: [(group: RaftGroupID, index: UInt64, slot: Slot, file: SegmentFile)] = []
        for (group, log) in state.groups {
            log.forEachSlot { index, slot in
                if slot.segment <= horizon, let file = state.segments[slot.segment] {
                    items.append((group, index, slot, file))
                }
            }
        }
        items.sort { ($0.slot.segment, $0.slot.recordOffset, $0.group, $0.index) < ($1.slot.segment, $1.slot.recordOffset, $1.group, $1.index) }
        return Plan(horizon: horizon, live: items)
    }

    /// Queues copies of entries that are still live (checked under the lock, at the moment the copy
    /// gets its position), and with `withState` the latest hard states and compaction marks whose
    /// records lie at or before the horizon. Returns how many entries were copied.
    private func rewrite(_ chunk: [(RaftGroupID, Entry, Slot)], horizon: UInt32, withState: Bool) async throws(StorageError) -> Int {
        var copied = 0
        try await submit { state in
            var encoded = Encoded()
            var byGroup: [RaftGroupID: (entries: [Entry], slots: [Slot])] = [:]
            for (group, entry, slot) in chunk where state.groups[group]?.slot(at: entry.index) == slot {
                byGroup[group, default: ([], [])].entries.append(entry)
                byGroup[group]!.slots.append(slot)
            }
            for (group, live) in byGroup.sorted(by: { $0.key < $1.key }) {
                encoded.addEntries(group, live.entries, replacing: live.slots)
                copied += live.entries.count
            }
            if withState {
                for (group, log) in state.groups.sorted(by: { $0.key < $1.key }) {
                    if log.hardStateSegment != 0, log.hardStateSegment <= horizon, let hardState = log.hardState {
                        encoded.addHardState(group, hardState)
                    }
                    if log.baseSegment != 0, log.baseSegment <= horizon, log.baseIndex > 0 {
                        encoded.addCompact(group, index: log.baseIndex, term: log.baseTerm)
                    }
                }
            }
            return encoded.operations.isEmpty ? nil : encoded
        }
        return copied
    }

    /// Whether anything live still points into a segment at or before `horizon`.
    private func references(_ state: WALState, atOrBefore horizon: UInt32) -> Bool {
        for log in state.groups.values {
            if log.hardStateSegment != 0 && log.hardStateSegment <= horizon { return true }
            if log.baseSegment != 0 && log.baseSegment <= horizon { return true }
            var found = false
            log.forEachSlot { _, slot in if slot.segment <= horizon { found = true } }
            if found { return true }
        }
        return false
    }
}
