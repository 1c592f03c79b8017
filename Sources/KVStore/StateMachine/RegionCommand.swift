import KVWire
import RaftCore

/// What a region's Raft log entries carry.
enum RegionCommand: Hashable, BinaryCodable {
    /// Writes proposed together at the proposer's time `now` (Unix milliseconds), applied in order.
    /// `origin` names the node that waits for their outcomes and its request id there.
    case writes(now: Int64, origin: ProposalOrigin, [KVWrite])
    /// Splits the region at `key`: it keeps `[start, key)` and region `newRegion` gets `[key, end)`.
    /// Refused when the region's range version is no longer `rangeVersion` (a split raced another).
    /// `members` found the new region's Raft group: the proposing leader's membership, carried in the
    /// entry so that every replica founds it alike (a replica's own descriptor may lack them: a node
    /// that joined rebuilds region 1 from its log with no voters). nil in entries written before
    /// members were carried: the parent's descriptor's then.
    case split(key: Bytes, newRegion: UInt64, rangeVersion: UInt64, members: SplitMembers?)

    /// Replaces the time of an encoded `writes` command, in place: the tag byte is followed by the
    /// time as eight little-endian bytes (see `encode`). Other commands are left alone.
    static func restamp(_ data: inout [UInt8], now: Int64) {
        guard data.count >= 9, data[0] == 0 else { return }
        let bits = UInt64(bitPattern: now)
        for byte in 0..<8 { data[1 + byte] = UInt8(truncatingIfNeeded: bits >> (8 * UInt64(byte))) }
    }

    func encode(to writer: inout ByteWriter) {
        switch self {
        case .writes(let now, let origin, let writes):
            writer.write(UInt8(0))
            writer.write(UInt64(bitPattern: now))
            writer.write(origin.node)
            writer.write(origin.request)
            writer.writeVarint(UInt64(writes.count))
            for write in writes { write.encode(to: &writer) }
        case .split(let key, let newRegion, let rangeVersion, let members):
            writer.write(UInt8(members == nil ? 1 : 2))
            writer.writeLengthPrefixed(key)
            writer.write(newRegion)
            writer.write(rangeVersion)
            guard let members else { return }
            for nodes in [members.voters, members.learners] {
                writer.writeVarint(UInt64(nodes.count))
                for node in nodes { writer.write(node) }
            }
        }
    }

    init(from reader: inout ByteReader) throws(CodecError) {
        switch try reader.readUInt8("a region command") {
        case 0:
            let now = Int64(bitPattern: try reader.readUInt64("a proposal time"))
            let origin = ProposalOrigin(node: try reader.readUInt64("an origin node"), request: try reader.readUInt64("a request id"))
            let count = try reader.readCount("writes")
            var writes: [KVWrite] = []
            writes.reserveCapacity(count)
            for _ in 0..<count { writes.append(try KVWrite(from: &reader)) }
            self = .writes(now: now, origin: origin, writes)
        case let tag where tag == 1 || tag == 2:
            let key = try reader.readLengthPrefixed("a split key")
            let newRegion = try reader.readUInt64("a region id")
            let rangeVersion = try reader.readUInt64("a range version")
            var members: SplitMembers?
            if tag == 2 {
                var lists: [[UInt64]] = []
                for what in ["voters", "learners"] {
                    var nodes: [UInt64] = []
                    for _ in 0..<(try reader.readCount(what, minimumElementSize: 8)) { nodes.append(try reader.readUInt64("a node id")) }
                    lists.append(nodes)
                }
                members = SplitMembers(voters: lists[0], learners: lists[1])
            }
            self = .split(key: key, newRegion: newRegion, rangeVersion: rangeVersion, members: members)
        default:
            throw CodecError(offset: reader.offset, expected: "a region command tag")
        }
    }
}

/// The membership a split founds its new region with.
struct SplitMembers: Hashable {
    var voters: [UInt64]
    var learners: [UInt64]
}

/// Who proposed a command: the node waiting for its outcome, and that node's id for the request.
struct ProposalOrigin: Hashable {
    var node: UInt64
    var request: UInt64
}

/// The outcome of one write inside a region command.
typealias WriteOutcome = Result<KVWriteResult, KVError>

/// Encodes the outcomes of a command's writes as the Raft entry's result.
enum CommandResult {
    static func encode(_ outcomes: [WriteOutcome]) -> Bytes {
        var writer = ByteWriter()
        writer.writeVarint(UInt64(outcomes.count))
        for outcome in outcomes {
            switch outcome {
            case .success(let result): writer.write(UInt8(0)); result.encode(to: &writer)
            case .failure(let error): writer.write(UInt8(1)); error.encode(to: &writer)
            }
        }
        return writer.bytes
    }

    static func decode(_ bytes: Bytes) throws(CodecError) -> [WriteOutcome] {
        let result: Result<[WriteOutcome], CodecError> = bytes.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            do throws(CodecError) {
                let count = try reader.readCount("outcomes")
                var outcomes: [WriteOutcome] = []
                for _ in 0..<count {
                    switch try reader.readUInt8("an outcome tag") {
                    case 0: outcomes.append(.success(try KVWriteResult(from: &reader)))
                    case 1: outcomes.append(.failure(try KVError(from: &reader)))
                    default: throw CodecError(offset: reader.offset, expected: "an outcome tag")
                    }
                }
                return .success(outcomes)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }
}
