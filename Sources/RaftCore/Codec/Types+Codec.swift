// Encodings of the core's value types. Tags of enum cases are part of the format: never renumber
// them; add new cases with new tags.

extension HardState: BinaryCodable {
    public func encode(to writer: inout ByteWriter) {
        writer.writeVarint(term)
        writer.writeVarint(vote)
        writer.writeVarint(commit)
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        let term = try reader.readVarint("hard state term")
        let vote = try reader.readVarint("hard state vote")
        let commit = try reader.readVarint("hard state commit")
        self.init(term: term, vote: vote, commit: commit)
    }
}

extension Entry: BinaryCodable {
    /// Term and index come first and fixed-width, so the WAL can index an entry without decoding its payload.
    public static let headerSize = 16

    public func encode(to writer: inout ByteWriter) {
        writer.write(term)
        writer.write(index)
        switch payload {
        case .empty:
            writer.write(UInt8(0))
        case .normal(let data):
            writer.write(UInt8(1))
            writer.writeLengthPrefixed(data)
        case .configuration(let change):
            writer.write(UInt8(2))
            change.encode(to: &writer)
        }
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        let term = try reader.readUInt64("entry term")
        let index = try reader.readUInt64("entry index")
        let tagOffset = reader.offset
        let payload: EntryPayload
        switch try reader.readUInt8("entry payload tag") {
        case 0: payload = .empty
        case 1: payload = .normal(try reader.readLengthPrefixed("entry data"))
        case 2: payload = .configuration(try ConfigurationChange(from: &reader))
        case let tag: throw CodecError(offset: tagOffset, expected: "entry payload tag 0, 1 or 2, found \(tag)")
        }
        self.init(term: term, index: index, payload: payload)
    }
}

extension ElectionPriority: BinaryCodable {
    public func encode(to writer: inout ByteWriter) { writer.writeSignedVarint(Int64(value)) }

    public init(from reader: inout ByteReader) throws(CodecError) {
        let start = reader.offset
        let raw = try reader.readSignedVarint("election priority")
        guard let value = Int(exactly: raw) else {
            throw CodecError(offset: start, expected: "an election priority that fits in Int")
        }
        self.init(value)
    }
}

extension ConfigurationStep: BinaryCodable {
    public func encode(to writer: inout ByteWriter) {
        switch self {
        case .addVoter(let id, let priority):
            writer.write(UInt8(0))
            writer.writeVarint(id)
            priority.encode(to: &writer)
        case .addLearner(let id, let priority):
            writer.write(UInt8(1))
            writer.writeVarint(id)
            priority.encode(to: &writer)
        case .remove(let id):
            writer.write(UInt8(2))
            writer.writeVarint(id)
        }
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        let tagOffset = reader.offset
        switch try reader.readUInt8("configuration step tag") {
        case 0: self = .addVoter(try reader.readVarint("voter id"), priority: try ElectionPriority(from: &reader))
        case 1: self = .addLearner(try reader.readVarint("learner id"), priority: try ElectionPriority(from: &reader))
        case 2: self = .remove(try reader.readVarint("removed node id"))
        case let tag: throw CodecError(offset: tagOffset, expected: "configuration step tag 0, 1 or 2, found \(tag)")
        }
    }
}

extension ConfigurationChange: BinaryCodable {
    public func encode(to writer: inout ByteWriter) {
        writer.writeVarint(UInt64(steps.count))
        for step in steps { step.encode(to: &writer) }
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        let count = try reader.readCount("configuration steps", minimumElementSize: 2)
        var steps: [ConfigurationStep] = []
        steps.reserveCapacity(count)
        for _ in 0..<count { steps.append(try ConfigurationStep(from: &reader)) }
        self.init(steps)
    }
}

extension Membership: BinaryCodable {
    public func encode(to writer: inout ByteWriter) {
        for list in [voters, outgoingVoters, learners, learnersNext] {
            writer.writeVarint(UInt64(list.count))
            for id in list { writer.writeVarint(id) }
        }
        // Sorted, so that equal memberships encode to equal bytes.
        let sorted = priorities.sorted { $0.key < $1.key }
        writer.writeVarint(UInt64(sorted.count))
        for (id, priority) in sorted {
            writer.writeVarint(id)
            priority.encode(to: &writer)
        }
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        var lists: [[NodeID]] = []
        for name in ["voters", "outgoing voters", "learners", "next learners"] {
            let count = try reader.readCount(name)
            var list: [NodeID] = []
            list.reserveCapacity(count)
            for _ in 0..<count { list.append(try reader.readVarint("a node id among \(name)")) }
            lists.append(list)
        }
        let count = try reader.readCount("priorities", minimumElementSize: 2)
        var priorities: [NodeID: ElectionPriority] = [:]
        for _ in 0..<count {
            let start = reader.offset
            let id = try reader.readVarint("a node id with a priority")
            guard priorities.updateValue(try ElectionPriority(from: &reader), forKey: id) == nil else {
                throw CodecError(offset: start, expected: "each node's priority once, found node \(id) twice")
            }
        }
        self.init(
            voters: lists[0], learners: lists[2], outgoingVoters: lists[1], learnersNext: lists[3],
            priorities: priorities)
    }
}

extension SnapshotMetadata: BinaryCodable {
    public func encode(to writer: inout ByteWriter) {
        writer.writeVarint(index)
        writer.writeVarint(term)
        membership.encode(to: &writer)
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        let index = try reader.readVarint("snapshot index")
        let term = try reader.readVarint("snapshot term")
        self.init(index: index, term: term, membership: try Membership(from: &reader))
    }
}

extension Snapshot: BinaryCodable {
    public func encode(to writer: inout ByteWriter) {
        metadata.encode(to: &writer)
        writer.writeLengthPrefixed(data)
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        let metadata = try SnapshotMetadata(from: &reader)
        self.init(metadata: metadata, data: try reader.readLengthPrefixed("snapshot data"))
    }
}
