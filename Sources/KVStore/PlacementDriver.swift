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
    /// The membership every group of the cluster (regions and the placement driver) should have.
    /// Each group's leader moves its group there (joint consensus when needed).
    case setMembership(voters: [UInt64], learners: [UInt64])

    func encode(to writer: inout ByteWriter) {
        switch self {
        case .split(let region, let rangeVersion):
            writer.write(UInt8(0)); writer.write(region); writer.write(rangeVersion)
        case .transferLeader(let region, let from, let to):
            writer.write(UInt8(1)); writer.write(region); writer.write(from); writer.write(to)
        case .setMembership(let voters, let learners):
            writer.write(UInt8(2))
            writer.writeVarint(UInt64(voters.count))
            for voter in voters { writer.write(voter) }
            writer.writeVarint(UInt64(learners.count))
            for learner in learners { writer.write(learner) }
        }
    }

    init(from reader: inout ByteReader) throws(CodecError) {
        switch try reader.readUInt8("a placement command") {
        case 0: self = .split(region: try reader.readUInt64("a region"), rangeVersion: try reader.readUInt64("a range version"))
        case 1:
            self = .transferLeader(
                region: try reader.readUInt64("a region"), from: try reader.readUInt64("a node"), to: try reader.readUInt64("a node"))
        case 2:
            var voters: [UInt64] = []
            for _ in 0..<(try reader.readCount("voters", minimumElementSize: 8)) { voters.append(try reader.readUInt64("a voter")) }
            var learners: [UInt64] = []
            for _ in 0..<(try reader.readCount("learners", minimumElementSize: 8)) { learners.append(try reader.readUInt64("a learner")) }
            self = .setMembership(voters: voters, learners: learners)
        default: throw CodecError(offset: reader.offset, expected: "a placement command tag")
        }
    }
}

/// The membership every group should converge to.
struct TargetMembership: Sendable, Hashable {
    var voters: [UInt64]
    var learners: [UInt64]
}

/// What a store does when a placement command is applied.
enum PlacementAction: Sendable, Hashable {
    case split(region: UInt64, rangeVersion: UInt64, newRegion: UInt64)
    case transferLeader(region: UInt64, from: UInt64, to: UInt64)
}

/// The placement driver's replicated state: the next region id and the target membership. Commands applied while the group
/// replays its log at start-up change the state but trigger nothing: those decisions are old.
final class PlacementStateMachine: StateMachine {
    /// Region 1 is the cluster's first region; splits allocate from 2 on.
    private let nextRegion = Mutex<UInt64>(2)
    /// nil until an operator changes the membership: the groups keep the one they were founded with.
    let target = Mutex<TargetMembership?>(nil)
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
            case .setMembership(let voters, let learners):
                target.withLock { $0 = TargetMembership(voters: voters.sorted(), learners: learners.sorted()) }
            }
        }
        for action in actions { act(action) }
        return entries.map { _ in [] }
    }

    func snapshotView() -> any StateMachineView {
        PlacementView(nextRegion: nextRegion.withLock { $0 }, target: target.withLock { $0 })
    }

    func restore(from data: [UInt8]) throws {
        let view: PlacementView
        do {
            view = try PlacementView(decoding: data)
        } catch {
            throw KVStoreError.corrupt("placement snapshot: \(error)")
        }
        nextRegion.withLock { $0 = view.nextRegion }
        target.withLock { $0 = view.target }
    }

    struct PlacementView: StateMachineView, BinaryCodable {
        let nextRegion: UInt64
        let target: TargetMembership?

        init(nextRegion: UInt64, target: TargetMembership?) {
            self.nextRegion = nextRegion
            self.target = target
        }

        func serialized() -> [UInt8] { encodedBytes() }

        func encode(to writer: inout ByteWriter) {
            writer.write(nextRegion)
            writer.write(target != nil)
            if let target { PlacementCommand.setMembership(voters: target.voters, learners: target.learners).encode(to: &writer) }
        }

        init(from reader: inout ByteReader) throws(CodecError) {
            nextRegion = try reader.readUInt64("the next region id")
            if try reader.readBool("a target flag"), case .setMembership(let voters, let learners) = try PlacementCommand(from: &reader) {
                target = TargetMembership(voters: voters, learners: learners)
            } else {
                target = nil
            }
        }
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
