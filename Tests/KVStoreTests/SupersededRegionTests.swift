import KVWire
import Raft
import RaftCore
import Synchronization
import Testing

@testable import KVStore

/// A replica can take the snapshot of a region split off from another before it applies that split
/// in the parent (a node restarted during splits: the KV cluster test lost acknowledged writes this
/// way). The new region's keys are then its own: the parent's older log entries and older snapshot
/// images must not touch them.
@Suite struct SupersededRegionTests {
    func bytes(_ text: String) -> Bytes { Array(text.utf8) }

    func set(_ key: String, _ value: String) -> KVWrite {
        .set(key: bytes(key), value: bytes(value), condition: .always, expiry: .none, returnPrevious: false)
    }

    func entry(_ index: UInt64, _ command: RegionCommand) -> CommittedEntry {
        var writer = ByteWriter()
        command.encode(to: &writer)
        return CommittedEntry(index: index, term: 1, data: writer.bytes)
    }

    func writes(_ writes: KVWrite...) -> RegionCommand {
        .writes(now: 1, origin: ProposalOrigin(node: 9, request: 1), writes)
    }

    func value(_ engine: MemoryEngine, _ key: String) throws -> String? {
        guard case .value(let value) = try KVReader(engine: engine, now: 1).read(.get(key: bytes(key))) else { return nil }
        return value.map { String(decoding: $0, as: UTF8.self) }
    }

    /// The regions of one store, as `Store` lists them for its state machines.
    final class Regions: Sendable {
        let machines = Mutex<[RegionStateMachine]>([])
        func descriptors() -> [RegionDescriptor] { machines.withLock { $0.map(\.descriptor) } }
    }

    func machine(_ region: UInt64, _ engine: MemoryEngine, _ regions: Regions, initial: RegionDescriptor?) throws -> RegionStateMachine {
        let machine = try RegionStateMachine(
            engine: engine, region: region, node: 1, initial: initial, waiters: ProposalWaiters(),
            storeRegions: { regions.descriptors() }
        ) { _, _ in }
        regions.machines.withLock { $0.append(machine) }
        return machine
    }

    @Test func aParentBehindItsSplitLeavesTheNewRegionsKeysAlone() throws {
        let whole = RegionDescriptor(id: 2, start: bytes("a"), end: nil, voters: [1, 2, 3])
        // The leader's store: region 2 takes writes, splits at "m" into 2 and 5, and 5 takes more.
        let leaderEngine = MemoryEngine()
        let leaderRegions = Regions()
        let leaderParent = try machine(2, leaderEngine, leaderRegions, initial: whole)
        _ = try leaderParent.apply([entry(1, writes(set("b", "b1"), set("n", "n1")))])
        let parentImageBeforeSplit = leaderParent.snapshotView().serialized()
        _ = try leaderParent.apply([entry(2, writes(set("n", "n2"), set("c", "c2")))])
        _ = try leaderParent.apply([entry(3, .split(key: bytes("m"), newRegion: 5, rangeVersion: 1, members: nil))])
        let leaderChild = try machine(5, leaderEngine, leaderRegions, initial: nil)
        leaderChild.adoptSplit(leaderChild.descriptor)
        _ = try leaderChild.apply([entry(1, writes(set("n", "n3"), set("p", "p3")))])
        let childImage = leaderChild.snapshotView().serialized()

        // A follower that has region 2 only up to entry 1 gets region 5's snapshot first.
        let engine = MemoryEngine()
        let regions = Regions()
        let parent = try machine(2, engine, regions, initial: whole)
        try parent.restore(from: parentImageBeforeSplit)
        let child = try machine(5, engine, regions, initial: nil)
        try child.restore(from: childImage)
        #expect(try value(engine, "n") == "n3")

        // An old image of the parent leaves the new region's keys alone.
        try parent.restore(from: parentImageBeforeSplit)
        #expect(try value(engine, "n") == "n3")
        #expect(try value(engine, "p") == "p3")
        #expect(try value(engine, "b") == "b1")

        // So do the parent's writes before the split; the ones in its own range apply. Their result
        // is unknown here, and the split does not reset the new region's metadata.
        let results = try parent.apply([entry(2, writes(set("n", "n2"), set("c", "c2")))])
        #expect(try CommandResult.decode(results[0]) == [.failure(.indefinite(.resultUnknown)), .success(.set(performed: true, previous: nil))])
        _ = try parent.apply([entry(3, .split(key: bytes("m"), newRegion: 5, rangeVersion: 1, members: nil))])
        #expect(try value(engine, "n") == "n3")
        #expect(try value(engine, "c") == "c2")
        #expect(parent.descriptor.end == bytes("m"))
        #expect(child.descriptor.start == bytes("m"))
        #expect(try RegionMeta.load(region: 5, from: engine)?.applied == child.durableAppliedIndex)
    }

    @Test func aWriteLosesOnlyItsSupersededKeys() {
        let superseded = [KeyRange(start: Array("m".utf8), end: Array("q".utf8))]
        let keys: [Bytes] = ["b", "n", "z"].map { Array($0.utf8) }
        #expect(RegionStateMachine.write(.delete(keys: keys), excluding: superseded) == [.delete(keys: [keys[0], keys[2]])])
        #expect(RegionStateMachine.write(.delete(keys: [keys[0]]), excluding: superseded) == nil)
        #expect(RegionStateMachine.write(.deleteRange(start: Array("a".utf8), end: nil), excluding: superseded) == [
            .deleteRange(start: Array("a".utf8), end: Array("m".utf8)), .deleteRange(start: Array("q".utf8), end: nil),
        ])
        #expect(RegionStateMachine.write(.append(key: keys[1], value: []), excluding: superseded) == [])
    }
}
