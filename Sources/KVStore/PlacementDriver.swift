import KVWire
import Raft
import RaftCore
import Synchronization

/// A decision of the placement driver, taken through its own Raft log so that every store sees the
/// same decisions in the same order and the store concerned acts on it.
enum PlacementCommand: Hashable, BinaryCodable {
    /// Split `region` (at its middle key) if its range version is still `rangeVersion`. The new
    /// region's id is allocated when the command is applied, so ids are unique cluster-wide.
    case split(region: UInt64, rangeVersion: UInt64)
    /// Move the leadership of `region` from node `from` to node `to`.
    case transferLeader(region: UInt64, from: UInt64, to: UInt64)

    func encode(to writer: inout ByteWriter) {
        switch self {
        case .split(let region, let rangeVersion):
            writer.write(UInt8(0)); writer.write(region); writer.write(rangeVersion)
        case .transferLeader(let region, let from, let to):
            writer.write(UInt8(1)); writer.write(region); writer.write(from); writer.write(to)
        }
    }

    init(from reader: inout ByteReader) throws(CodecError) {
        switch try reader.readUInt8("a placement command") {
        case 0: self = .split(region: try reader.readUInt64("a region"), rangeVersion: try reader.readUInt64("a range version"))
        case 1:
            self = .transferLeader(
                region: try reader.readUInt64("a region"), from: try reader.readUInt64("a node"), to: try reader.readUInt64("a node"))
        default: throw CodecError(offset: reader.offset, expected: "a placement command tag")
        }
    }
}

/// What a store does when a placement command is applied.
enum PlacementAction: Sendable, Hashable {
    case split(region: UInt64, rangeVersion: UInt64, newRegion: UInt64)
    case transferLeader(region: UInt64, from: UInt64, to: UInt64)
}

/// The placement driver's replicated state: the next region id. Commands applied while the group
/// replays its log at start-up change the state but trigger nothing: those decisions are old.
final class PlacementStateMachine: StateMachine {
    /// Region 1 is the cluster's first region; splits allocate from 2 on.
    private let nextRegion = Mutex<UInt64>(2)
    /// Entries from this index on are new decisions to act on.
    let liveFrom = Mutex<UInt64>(UInt64.max)
    let act: @Sendable (PlacementAction) -> Void

    init(act: @escaping @Sendable (PlacementAction) -> Void) {
        self.act = act
    }

    func apply(_ entries: [CommittedEntry]) throws -> [[UInt8]] {
        let live = liveFrom.withLock { $0 }
        var actions: [PlacementAction] = []
        for entry in entries {
            let command: PlacementCommand
            do {
                command = try PlacementCommand(decoding: entry.data)
            } catch {
                throw KVStoreError.corrupt("placement entry \(entry.index): \(error)")
            }
            switch command {
            case .split(let region, let rangeVersion):
                let id = nextRegion.withLock { next in
                    defer { next += 1 }
                    return next
                }
                if entry.index >= live { actions.append(.split(region: region, rangeVersion: rangeVersion, newRegion: id)) }
            case .transferLeader(let region, let from, let to):
                if entry.index >= live { actions.append(.transferLeader(region: region, from: from, to: to)) }
            }
        }
        for action in actions { act(action) }
        return entries.map { _ in [] }
    }

    func snapshotView() -> any StateMachineView {
        PlacementView(nextRegion: nextRegion.withLock { $0 })
    }

    func restore(from data: [UInt8]) throws {
        guard data.count == 8 else { throw KVStoreError.corrupt("placement snapshot of \(data.count) bytes") }
        nextRegion.withLock { $0 = EngineLayout.uint64(bigEndian: data) }
    }

    struct PlacementView: StateMachineView {
        let nextRegion: UInt64
        func serialized() -> [UInt8] { EngineLayout.bigEndian(nextRegion) }
    }
}

/// When the placement driver splits regions and moves leaders.
public struct PlacementOptions: Sendable {
    /// A region with at least this many keys is split (RheaKV's default threshold style: 1,000,000).
    public var splitKeys: Int64 = 1_000_000
    /// A region with at least this many bytes is split (64 MiB).
    public var splitBytes: Int64 = 64 << 20
    /// How often the placement driver's leader looks at the regions.
    public var interval: Duration = .seconds(1)
    /// Leadership is moved when one store leads at least this many more regions than another.
    public var leaderImbalance = 2

    public init() {}

    func validate() throws {
        guard splitKeys > 1, splitBytes > 1 else { throw KVStoreError.invalidOption("split thresholds must be above 1") }
        guard leaderImbalance >= 2 else { throw KVStoreError.invalidOption("leaderImbalance must be at least 2") }
    }
}
