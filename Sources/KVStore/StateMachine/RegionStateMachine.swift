import KVWire
import Raft
import RaftCore
import Synchronization

/// What the store keeps about a region in the engine, next to its data and in the same write batch.
struct RegionMeta: Hashable, BinaryCodable {
    var descriptor: RegionDescriptor
    /// The last entry whose writes are in the engine.
    var applied: UInt64
    /// Strings stored (live or expired but not yet removed) and their bytes: what splits are decided on.
    var keys: Int64
    var bytes: Int64

    init(descriptor: RegionDescriptor, applied: UInt64, keys: Int64, bytes: Int64) {
        self.descriptor = descriptor
        self.applied = applied
        self.keys = keys
        self.bytes = bytes
    }

    func encode(to writer: inout ByteWriter) {
        descriptor.encode(to: &writer)
        writer.write(applied)
        writer.write(UInt64(bitPattern: keys))
        writer.write(UInt64(bitPattern: bytes))
    }

    init(from reader: inout ByteReader) throws(CodecError) {
        descriptor = try RegionDescriptor(from: &reader)
        applied = try reader.readUInt64("an applied index")
        keys = Int64(bitPattern: try reader.readUInt64("a key count"))
        bytes = Int64(bitPattern: try reader.readUInt64("a byte count"))
    }

    static func load(region: UInt64, from engine: any StorageEngine) throws -> RegionMeta? {
        guard let bytes = try engine.get(EngineLayout.metaKey(region: region)) else { return nil }
        do {
            return try RegionMeta(decoding: bytes)
        } catch {
            throw KVStoreError.corrupt("metadata of region \(region): \(error)")
        }
    }
}

/// The KV state machine of one region: applies region commands to the store's shared engine, one
/// write batch per call with the applied index in it, takes point-in-time snapshots of its key
/// range, and reports splits to the store.
public final class RegionStateMachine: StateMachine {
    let engine: any StorageEngine
    let region: UInt64
    /// This node's id: commands it proposed are answered through `waiters`.
    let node: UInt64
    let waiters: ProposalWaiters
    private let meta: Mutex<RegionMeta>
    /// Called (on the group's actor, after the batch is durable in the engine) when a split created a region.
    let onSplit: @Sendable (_ left: RegionDescriptor, _ right: RegionDescriptor) -> Void
    /// The descriptors of every region this store holds.
    let storeRegions: @Sendable () -> [RegionDescriptor]

    /// Opens region `region` from the engine, or creates it with `initial` when the engine has never
    /// held it. Without either, the region starts empty, owning no keys, until a snapshot arrives.
    init(
        engine: any StorageEngine, region: UInt64, node: UInt64, initial: RegionDescriptor?,
        waiters: ProposalWaiters, storeRegions: @escaping @Sendable () -> [RegionDescriptor] = { [] },
        onSplit: @escaping @Sendable (RegionDescriptor, RegionDescriptor) -> Void
    ) throws {
        self.engine = engine
        self.region = region
        self.node = node
        self.waiters = waiters
        self.storeRegions = storeRegions
        self.onSplit = onSplit
        if let stored = try RegionMeta.load(region: region, from: engine) {
            meta = Mutex(stored)
        } else {
            let descriptor = initial ?? RegionDescriptor(id: region, start: [], end: [], rangeVersion: 0, membershipVersion: 0, voters: [])
            let fresh = RegionMeta(descriptor: descriptor, applied: 0, keys: 0, bytes: 0)
            try engine.write(WriteBatch([.put(key: EngineLayout.metaKey(region: region), value: fresh.encodedBytes())]))
            meta = Mutex(fresh)
        }
    }

    var current: RegionMeta { meta.withLock { $0 } }

    /// A split applied here created this region after it was opened as a placeholder: take the
    /// descriptor the split wrote. A region that already has data (from a snapshot) keeps its own.
    func adoptSplit(_ descriptor: RegionDescriptor) {
        meta.withLock { meta in
            guard meta.descriptor.rangeVersion == 0 else { return }
            meta = (try? RegionMeta.load(region: region, from: engine)) ?? meta
        }
    }
    public var descriptor: RegionDescriptor { current.descriptor }
    public var durableAppliedIndex: UInt64 { current.applied }

    /// The key ranges inside `descriptor` that another region of this store holds with a newer range
    /// version. A replica can take the snapshot of a region split off from this one before it applies
    /// the split here (a restarted or lagging node): those keys then belong to the newer region, whose
    /// data already includes every write of this region's log before the split, so this region's
    /// older writes and older snapshot images must leave them alone.
    func supersededRanges(of descriptor: RegionDescriptor) -> [KeyRange] {
        storeRegions().compactMap { other in
            guard other.id != descriptor.id, other.rangeVersion > descriptor.rangeVersion else { return nil }
            return Self.clip(start: other.start, end: other.end, to: descriptor)
        }
    }

    public func apply(_ entries: [CommittedEntry]) throws -> [[UInt8]] {
        var state = current
        // A placeholder (opened on a message, before a snapshot or the split arrived) has no data
        // to apply writes to: applying would diverge from the other replicas. Stop loudly instead.
        guard state.descriptor.rangeVersion > 0 else {
            throw KVStoreError.corrupt("region \(region) got log entries before its data (snapshot or split)")
        }
        var applier = WriteApplier(engine: engine, now: 0)
        var results: [[UInt8]] = []
        var splits: [(left: RegionDescriptor, right: RegionMeta)] = []
        var resolved: [(request: UInt64, outcomes: [WriteOutcome])] = []
        var superseded = supersededRanges(of: state.descriptor)
        for entry in entries {
            let command: RegionCommand
            do {
                command = try RegionCommand(decoding: entry.data)
            } catch {
                throw KVStoreError.corrupt("entry \(entry.index) of region \(region): \(error)")
            }
            switch command {
            case .writes(let now, let origin, let writes):
                applier.now = now
                var outcomes: [WriteOutcome] = []
                outcomes.reserveCapacity(writes.count)
                for write in writes {
                    if let outside = Self.keyOutside(write, state.descriptor) {
                        outcomes.append(.failure(outside))
                    } else if !superseded.isEmpty, let remaining = Self.write(write, excluding: superseded) {
                        for part in remaining { _ = try applier.apply(part) }
                        outcomes.append(.failure(.indefinite(.resultUnknown)))
                    } else {
                        outcomes.append(.success(try applier.apply(write)))
                    }
                }
                results.append(CommandResult.encode(outcomes))
                if origin.node == node { resolved.append((origin.request, outcomes)) }
            case .split(let key, let newRegion, let rangeVersion, let members):
                guard rangeVersion == state.descriptor.rangeVersion, state.descriptor.contains(key),
                      key != state.descriptor.start
                else {
                    results.append(CommandResult.encode([.failure(.definite(.regionMoved(region: region)))]))
                    continue
                }
                var (left, right) = try split(&state, at: key, newRegion: newRegion, applier: &applier)
                if let members {
                    right.descriptor.voters = members.voters
                    right.descriptor.learners = members.learners
                }
                splits.append((left, right))
                superseded = supersededRanges(of: state.descriptor)
                results.append(CommandResult.encode([.success(.count(Int(right.keys)))]))
            }
            state.applied = entry.index
        }
        state.keys += applier.keyDelta
        state.bytes += applier.byteDelta
        var batch = applier.batch
        batch.put(EngineLayout.metaKey(region: region), state.encodedBytes())
        // A new region that took its own snapshot here already has newer metadata than the split's.
        let established = splits.isEmpty ? [] : Set(storeRegions().filter { $0.rangeVersion > 0 }.map(\.id))
        for split in splits where !established.contains(split.right.descriptor.id) {
            batch.put(EngineLayout.metaKey(region: split.right.descriptor.id), split.right.encodedBytes())
        }
        try engine.write(batch)
        meta.withLock { $0 = state }
        for split in splits { onSplit(split.left, split.right.descriptor) }
        for (request, outcomes) in resolved { waiters.resolve(request, with: outcomes) }
        return results
    }

    /// What is left of `write` once the keys in `superseded` are taken out, or nil when it touches
    /// none of them (an empty list when nothing is left).
    static func write(_ write: KVWrite, excluding superseded: [KeyRange]) -> [KVWrite]? {
        func isSuperseded(_ key: Bytes) -> Bool { superseded.contains { $0.contains(key) } }
        switch write {
        case .deleteRange(let start, let end):
            let whole = KeyRange(start: start, end: end)
            let remaining = whole.subtracting(superseded)
            if remaining == [whole] { return nil }
            return remaining.map { KVWrite.deleteRange(start: $0.start, end: $0.end) }
        case .delete(let keys), .removeExpired(let keys):
            guard keys.contains(where: isSuperseded) else { return nil }
            let kept = keys.filter { !isSuperseded($0) }
            if kept.isEmpty { return [] }
            if case .delete = write { return [.delete(keys: kept)] }
            return [.removeExpired(keys: kept)]
        case .setMany(let pairs, let onlyIfNoneExists):
            guard pairs.contains(where: { isSuperseded($0.key) }) else { return nil }
            let kept = pairs.filter { !isSuperseded($0.key) }
            return kept.isEmpty ? [] : [.setMany(pairs: kept, onlyIfNoneExists: onlyIfNoneExists)]
        default:
            return write.keys.contains(where: isSuperseded) ? [] : nil
        }
    }

    /// A definite "region moved" error when `write` touches a key outside the region.
    static func keyOutside(_ write: KVWrite, _ descriptor: RegionDescriptor) -> KVError? {
        if case .deleteRange(let start, let end) = write {
            let inside = !start.lexicographicallyPrecedes(descriptor.start)
                && (descriptor.end.map { end != nil && !$0.lexicographicallyPrecedes(end!) } ?? true)
            return inside ? nil : .definite(.regionMoved(region: descriptor.id))
        }
        return write.keys.allSatisfy(descriptor.contains) ? nil : .definite(.regionMoved(region: descriptor.id))
    }

    /// Splits the region's range at `key`. The data stays where it is in the shared engine: the new
    /// region's metadata claims `[key, end)` with the counts of what lies there. The writes before the
    /// split in this call go to the engine first, so both halves' counts are exact; the two regions'
    /// new metadata goes into the call's final batch with its applied index.
    private func split(
        _ state: inout RegionMeta, at key: Bytes, newRegion: UInt64, applier: inout WriteApplier
    ) throws -> (RegionDescriptor, RegionMeta) {
        state.keys += applier.keyDelta
        state.bytes += applier.byteDelta
        var earlier = applier.batch
        earlier.put(EngineLayout.metaKey(region: region), state.encodedBytes())
        try engine.write(earlier)
        applier = WriteApplier(engine: engine, now: applier.now)
        var keys: Int64 = 0
        var bytes: Int64 = 0
        try KVReader(engine: engine, now: Int64.min).forEachLive(start: key, end: state.descriptor.end, reverse: false) { key, record in
            keys += 1
            bytes += Int64(key.count + 1 + record.encoded.count)
            return true
        }
        var left = state.descriptor
        left.end = key
        left.rangeVersion += 1
        var right = state.descriptor
        right.id = newRegion
        right.start = key
        right.rangeVersion = left.rangeVersion
        state.descriptor = left
        state.keys -= keys
        state.bytes -= bytes
        return (left, RegionMeta(descriptor: right, applied: 0, keys: keys, bytes: bytes))
    }

    /// Expiry and leases are the leader's to decide: a command a follower forwarded gets the
    /// leader's clock in place of the follower's.
    public func stampForwardedProposal(_ data: inout [UInt8]) {
        RegionCommand.restamp(&data, now: UnixClock.milliseconds())
    }

    public func snapshotView() -> any StateMachineView {
        RegionSnapshotView(snapshot: engine.snapshot(), meta: current)
    }

    public func restore(from data: [UInt8]) throws {
        let image = try RegionSnapshotImage(decoding: data)
        // Only the image's range is replaced: a region's range only shrinks (by splits), and what it
        // lost belongs to the regions split off, whose data on this node must survive. An image older
        // than a split whose new region this node already holds leaves that region's keys alone too.
        let descriptor = image.meta.descriptor
        let superseded = supersededRanges(of: descriptor)
        var batch = WriteBatch()
        for range in KeyRange(start: descriptor.start, end: descriptor.end).subtracting(superseded) {
            for engineRange in EngineLayout.userRanges(start: range.start, end: range.end) { batch.deleteRange(engineRange) }
        }
        for pair in image.pairs where superseded.isEmpty || !superseded.contains(where: { $0.contains(Array(pair.key.dropFirst())) }) {
            batch.put(pair.key, pair.value)
        }
        batch.put(EngineLayout.metaKey(region: region), image.meta.encodedBytes())
        try engine.write(batch)
        meta.withLock { $0 = image.meta }
    }

    /// Answers a read from the engine as applied now, after the caller confirmed a read index. Range
    /// reads are clipped to the region; the descriptor returned says which range the answer covers.
    func read(_ read: KVRead, now: Int64) throws(KVError) -> (KVReadResult, RegionDescriptor) {
        let descriptor = self.descriptor
        var clipped = read
        switch read {
        case .scan(let start, let end, let limit, let reverse):
            guard let range = Self.clip(start: start, end: end, to: descriptor) else { return (.pairs([]), descriptor) }
            clipped = .scan(start: range.start, end: range.end, limit: limit, reverse: reverse)
        case .count(let start, let end):
            guard let range = Self.clip(start: start, end: end, to: descriptor) else { return (.count(0), descriptor) }
            clipped = .count(start: range.start, end: range.end)
        case .multiGet(let keys), .exists(let keys):
            guard keys.allSatisfy(descriptor.contains) else { throw .definite(.regionMoved(region: region)) }
        default:
            guard descriptor.contains(read.routingKey) else { throw .definite(.regionMoved(region: region)) }
        }
        do {
            return (try KVReader(engine: engine, now: now).read(clipped), descriptor)
        } catch {
            throw .definite(.failed("\(error)"))
        }
    }

    /// `[start, end)` intersected with the region's range, or nil when they do not meet.
    static func clip(start: Bytes, end: Bytes?, to descriptor: RegionDescriptor) -> KeyRange? {
        let lower = start.lexicographicallyPrecedes(descriptor.start) ? descriptor.start : start
        let upper: Bytes?
        switch (end, descriptor.end) {
        case (nil, let other), (let other, nil): upper = other
        case (let a?, let b?): upper = a.lexicographicallyPrecedes(b) ? a : b
        }
        if let upper, !lower.lexicographicallyPrecedes(upper) { return nil }
        return KeyRange(start: lower, end: upper)
    }

    /// Expired strings of the region from `cursor` on (the region's start when nil), looking at no more
    /// than `budget` records, and where the next sweep continues.
    func expiredKeys(now: Int64, from cursor: Bytes?, budget: Int) throws -> (keys: [Bytes], next: Bytes?) {
        let descriptor = self.descriptor
        let start = cursor.map { descriptor.contains($0) ? $0 : descriptor.start } ?? descriptor.start
        return try KVReader(engine: engine, now: now).expiredKeys(start: start, end: descriptor.end, budget: budget)
    }

    /// A key near the middle of the region's strings, where a split leaves two halves of similar size.
    func middleKey() throws -> Bytes? {
        let state = current
        let half = max(state.keys / 2, 1)
        var seen: Int64 = 0
        var middle: Bytes?
        try KVReader(engine: engine, now: Int64.min).forEachLive(start: state.descriptor.start, end: state.descriptor.end, reverse: false) { key, _ in
            seen += 1
            if seen >= half, key != state.descriptor.start {
                middle = key
                return false
            }
            return true
        }
        return middle
    }
}

/// A region's data as of one applied index, serialized in the background.
struct RegionSnapshotView: StateMachineView {
    let snapshot: any EngineSnapshot
    let meta: RegionMeta

    func serialized() -> [UInt8] {
        var writer = ByteWriter(capacity: 1 << 16)
        writer.write(RegionSnapshotImage.version)
        meta.encode(to: &writer)
        for range in EngineLayout.userRanges(start: meta.descriptor.start, end: meta.descriptor.end) {
            var cursor = range
            while true {
                // A failing engine read ends the image early; its pair count then cannot match and
                // the receiver refuses it, so a partial image is never installed.
                guard let page = try? snapshot.scan(cursor, limit: 1024, reverse: false) else { return [] }
                for pair in page {
                    writer.write(UInt8(1))
                    writer.writeLengthPrefixed(pair.key)
                    writer.writeLengthPrefixed(pair.value)
                }
                guard page.count == 1024, let last = page.last else { break }
                cursor.start = last.key + [0]
            }
        }
        writer.write(UInt8(0))
        return writer.bytes
    }
}

/// A decoded region snapshot: its metadata and every engine pair of its range.
struct RegionSnapshotImage: BinaryDecodable {
    static let version: UInt8 = 1
    var meta: RegionMeta
    var pairs: [KeyValuePair]

    init(from reader: inout ByteReader) throws(CodecError) {
        guard try reader.readUInt8("a snapshot version") == Self.version else {
            throw CodecError(offset: reader.offset, expected: "region snapshot version \(Self.version)")
        }
        meta = try RegionMeta(from: &reader)
        pairs = []
        while try reader.readUInt8("a pair marker") == 1 {
            pairs.append(KeyValuePair(key: try reader.readLengthPrefixed("a key"), value: try reader.readLengthPrefixed("a value")))
        }
        let ranges = EngineLayout.userRanges(start: meta.descriptor.start, end: meta.descriptor.end)
        for pair in pairs where !ranges.contains(where: { $0.contains(pair.key) }) {
            throw CodecError(offset: reader.offset, expected: "keys inside the region's range")
        }
    }
}
