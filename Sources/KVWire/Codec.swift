import RaftCore

// Binary encodings of the KV wire types, in Divan's codec (RaftCore's ByteWriter and ByteReader).
// Region commands in the Raft log and the node-to-node RPC both use them, so each type is encoded
// in exactly one place. A tag byte selects an enum case.

extension ByteWriter {
    mutating func writeOptional(_ bytes: Bytes?) {
        write(bytes != nil)
        if let bytes { writeLengthPrefixed(bytes) }
    }

    mutating func writeKeys(_ keys: [Bytes]) {
        writeVarint(UInt64(keys.count))
        for key in keys { writeLengthPrefixed(key) }
    }

    mutating func write(_ value: Int64) { write(UInt64(bitPattern: value)) }
}

extension ByteReader {
    mutating func readOptional(_ what: String) throws(CodecError) -> Bytes? {
        try readBool(what) ? try readLengthPrefixed(what) : nil
    }

    mutating func readKeys(_ what: String) throws(CodecError) -> [Bytes] {
        let count = try readCount(what)
        var keys: [Bytes] = []
        keys.reserveCapacity(count)
        for _ in 0..<count { keys.append(try readLengthPrefixed(what)) }
        return keys
    }

    mutating func readInt64(_ what: String) throws(CodecError) -> Int64 { Int64(bitPattern: try readUInt64(what)) }

    func invalid(_ what: String) -> CodecError { CodecError(offset: offset, expected: what) }
}

extension SetCondition: BinaryCodable {
    public func encode(to writer: inout ByteWriter) {
        switch self {
        case .always: writer.write(UInt8(0))
        case .ifAbsent: writer.write(UInt8(1))
        case .ifPresent: writer.write(UInt8(2))
        case .ifEqual(let value): writer.write(UInt8(3)); writer.writeLengthPrefixed(value)
        case .ifNotEqual(let value): writer.write(UInt8(4)); writer.writeLengthPrefixed(value)
        }
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        switch try reader.readUInt8("a set condition") {
        case 0: self = .always
        case 1: self = .ifAbsent
        case 2: self = .ifPresent
        case 3: self = .ifEqual(try reader.readLengthPrefixed("a compared value"))
        case 4: self = .ifNotEqual(try reader.readLengthPrefixed("a compared value"))
        default: throw reader.invalid("a set condition tag")
        }
    }
}

extension Expiry: BinaryCodable {
    public func encode(to writer: inout ByteWriter) {
        switch self {
        case .none: writer.write(UInt8(0))
        case .keep: writer.write(UInt8(1))
        case .after(let milliseconds): writer.write(UInt8(2)); writer.write(milliseconds)
        case .at(let time): writer.write(UInt8(3)); writer.write(time)
        }
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        switch try reader.readUInt8("an expiry") {
        case 0: self = .none
        case 1: self = .keep
        case 2: self = .after(milliseconds: try reader.readInt64("milliseconds"))
        case 3: self = .at(unixMilliseconds: try reader.readInt64("a Unix time"))
        default: throw reader.invalid("an expiry tag")
        }
    }
}

extension KVWrite: BinaryCodable {
    public func encode(to writer: inout ByteWriter) {
        switch self {
        case .set(let key, let value, let condition, let expiry, let returnPrevious):
            writer.write(UInt8(0)); writer.writeLengthPrefixed(key); writer.writeLengthPrefixed(value)
            condition.encode(to: &writer); expiry.encode(to: &writer); writer.write(returnPrevious)
        case .delete(let keys):
            writer.write(UInt8(1)); writer.writeKeys(keys)
        case .deleteIfEqual(let key, let value):
            writer.write(UInt8(2)); writer.writeLengthPrefixed(key); writer.writeLengthPrefixed(value)
        case .deleteRange(let start, let end):
            writer.write(UInt8(3)); writer.writeLengthPrefixed(start); writer.writeOptional(end)
        case .getAndDelete(let key):
            writer.write(UInt8(4)); writer.writeLengthPrefixed(key)
        case .incrementBy(let key, let delta):
            writer.write(UInt8(5)); writer.writeLengthPrefixed(key); writer.write(delta)
        case .append(let key, let value):
            writer.write(UInt8(6)); writer.writeLengthPrefixed(key); writer.writeLengthPrefixed(value)
        case .expire(let key, let expiry):
            writer.write(UInt8(7)); writer.writeLengthPrefixed(key); expiry.encode(to: &writer)
        case .setMany(let pairs, let onlyIfNoneExists):
            writer.write(UInt8(8)); writer.writeVarint(UInt64(pairs.count))
            for pair in pairs { writer.writeLengthPrefixed(pair.key); writer.writeLengthPrefixed(pair.value) }
            writer.write(onlyIfNoneExists)
        case .nextSequence(let key, let count):
            writer.write(UInt8(9)); writer.writeLengthPrefixed(key); writer.write(count)
        case .lock(let name, let owner, let lease):
            writer.write(UInt8(10)); writer.writeLengthPrefixed(name); writer.writeLengthPrefixed(owner); writer.write(lease)
        case .keepAlive(let name, let owner, let token, let lease):
            writer.write(UInt8(11)); writer.writeLengthPrefixed(name); writer.writeLengthPrefixed(owner)
            writer.write(token); writer.write(lease)
        case .unlock(let name, let owner, let token):
            writer.write(UInt8(12)); writer.writeLengthPrefixed(name); writer.writeLengthPrefixed(owner); writer.write(token)
        case .removeExpired(let keys):
            writer.write(UInt8(13)); writer.writeKeys(keys)
        }
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        switch try reader.readUInt8("a write tag") {
        case 0:
            self = .set(
                key: try reader.readLengthPrefixed("a key"), value: try reader.readLengthPrefixed("a value"),
                condition: try SetCondition(from: &reader), expiry: try Expiry(from: &reader),
                returnPrevious: try reader.readBool("a GET flag"))
        case 1: self = .delete(keys: try reader.readKeys("keys"))
        case 2: self = .deleteIfEqual(key: try reader.readLengthPrefixed("a key"), value: try reader.readLengthPrefixed("a value"))
        case 3: self = .deleteRange(start: try reader.readLengthPrefixed("a start key"), end: try reader.readOptional("an end key"))
        case 4: self = .getAndDelete(key: try reader.readLengthPrefixed("a key"))
        case 5: self = .incrementBy(key: try reader.readLengthPrefixed("a key"), delta: try reader.readInt64("a delta"))
        case 6: self = .append(key: try reader.readLengthPrefixed("a key"), value: try reader.readLengthPrefixed("a value"))
        case 7: self = .expire(key: try reader.readLengthPrefixed("a key"), expiry: try Expiry(from: &reader))
        case 8:
            let count = try reader.readCount("pairs", minimumElementSize: 2)
            var pairs: [KVPair] = []
            for _ in 0..<count {
                pairs.append(KVPair(key: try reader.readLengthPrefixed("a key"), value: try reader.readLengthPrefixed("a value")))
            }
            self = .setMany(pairs: pairs, onlyIfNoneExists: try reader.readBool("an NX flag"))
        case 9: self = .nextSequence(key: try reader.readLengthPrefixed("a key"), count: try reader.readUInt64("a count"))
        case 10:
            self = .lock(
                name: try reader.readLengthPrefixed("a lock name"), owner: try reader.readLengthPrefixed("an owner"),
                leaseMilliseconds: try reader.readInt64("a lease"))
        case 11:
            self = .keepAlive(
                name: try reader.readLengthPrefixed("a lock name"), owner: try reader.readLengthPrefixed("an owner"),
                token: try reader.readUInt64("a token"), leaseMilliseconds: try reader.readInt64("a lease"))
        case 12:
            self = .unlock(
                name: try reader.readLengthPrefixed("a lock name"), owner: try reader.readLengthPrefixed("an owner"),
                token: try reader.readUInt64("a token"))
        case 13: self = .removeExpired(keys: try reader.readKeys("keys"))
        default: throw reader.invalid("a write tag")
        }
    }
}

extension LockOutcome: BinaryCodable {
    public func encode(to writer: inout ByteWriter) {
        switch self {
        case .held(let token, let expiresAt): writer.write(UInt8(0)); writer.write(token); writer.write(expiresAt)
        case .busy(let owner, let expiresAt): writer.write(UInt8(1)); writer.writeLengthPrefixed(owner); writer.write(expiresAt)
        case .notHeld: writer.write(UInt8(2))
        case .released: writer.write(UInt8(3))
        }
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        switch try reader.readUInt8("a lock outcome") {
        case 0: self = .held(token: try reader.readUInt64("a token"), expiresAt: try reader.readInt64("a lease end"))
        case 1: self = .busy(owner: try reader.readLengthPrefixed("an owner"), expiresAt: try reader.readInt64("a lease end"))
        case 2: self = .notHeld
        case 3: self = .released
        default: throw reader.invalid("a lock outcome tag")
        }
    }
}

extension KVWriteResult: BinaryCodable {
    public func encode(to writer: inout ByteWriter) {
        switch self {
        case .set(let performed, let previous): writer.write(UInt8(0)); writer.write(performed); writer.writeOptional(previous)
        case .count(let count): writer.write(UInt8(1)); writer.writeVarint(UInt64(count))
        case .value(let value): writer.write(UInt8(2)); writer.writeOptional(value)
        case .integer(let value): writer.write(UInt8(3)); writer.write(value)
        case .sequence(let start, let end): writer.write(UInt8(4)); writer.write(start); writer.write(end)
        case .lock(let outcome): writer.write(UInt8(5)); outcome.encode(to: &writer)
        case .refused(let refusal):
            writer.write(UInt8(6))
            switch refusal {
            case .notAnInteger: writer.write(UInt8(0))
            case .overflow: writer.write(UInt8(1))
            case .crossRegion: writer.write(UInt8(2))
            }
        }
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        switch try reader.readUInt8("a write result") {
        case 0: self = .set(performed: try reader.readBool("a flag"), previous: try reader.readOptional("a previous value"))
        case 1: self = .count(Int(try reader.readVarint("a count")))
        case 2: self = .value(try reader.readOptional("a value"))
        case 3: self = .integer(try reader.readInt64("an integer"))
        case 4: self = .sequence(start: try reader.readUInt64("a start"), end: try reader.readUInt64("an end"))
        case 5: self = .lock(try LockOutcome(from: &reader))
        case 6:
            switch try reader.readUInt8("a refusal") {
            case 0: self = .refused(.notAnInteger)
            case 1: self = .refused(.overflow)
            case 2: self = .refused(.crossRegion)
            default: throw reader.invalid("a refusal tag")
            }
        default: throw reader.invalid("a write result tag")
        }
    }
}

extension KVRead: BinaryCodable {
    public func encode(to writer: inout ByteWriter) {
        switch self {
        case .get(let key): writer.write(UInt8(0)); writer.writeLengthPrefixed(key)
        case .getRecord(let key): writer.write(UInt8(1)); writer.writeLengthPrefixed(key)
        case .multiGet(let keys): writer.write(UInt8(2)); writer.writeKeys(keys)
        case .exists(let keys): writer.write(UInt8(3)); writer.writeKeys(keys)
        case .scan(let start, let end, let limit, let reverse):
            writer.write(UInt8(4)); writer.writeLengthPrefixed(start); writer.writeOptional(end)
            writer.writeVarint(UInt64(max(limit, 0))); writer.write(reverse)
        case .count(let start, let end): writer.write(UInt8(5)); writer.writeLengthPrefixed(start); writer.writeOptional(end)
        case .lockState(let name): writer.write(UInt8(6)); writer.writeLengthPrefixed(name)
        }
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        switch try reader.readUInt8("a read tag") {
        case 0: self = .get(key: try reader.readLengthPrefixed("a key"))
        case 1: self = .getRecord(key: try reader.readLengthPrefixed("a key"))
        case 2: self = .multiGet(keys: try reader.readKeys("keys"))
        case 3: self = .exists(keys: try reader.readKeys("keys"))
        case 4:
            self = .scan(
                start: try reader.readLengthPrefixed("a start key"), end: try reader.readOptional("an end key"),
                limit: Int(min(try reader.readVarint("a limit"), UInt64(Int32.max))), reverse: try reader.readBool("a direction"))
        case 5: self = .count(start: try reader.readLengthPrefixed("a start key"), end: try reader.readOptional("an end key"))
        case 6: self = .lockState(name: try reader.readLengthPrefixed("a lock name"))
        default: throw reader.invalid("a read tag")
        }
    }
}

extension KVReadResult: BinaryCodable {
    public func encode(to writer: inout ByteWriter) {
        switch self {
        case .value(let value): writer.write(UInt8(0)); writer.writeOptional(value)
        case .record(let record):
            writer.write(UInt8(1)); writer.write(record != nil)
            if let record {
                writer.writeLengthPrefixed(record.value)
                writer.write(record.expiresAt != nil)
                if let expiresAt = record.expiresAt { writer.write(expiresAt) }
            }
        case .values(let values):
            writer.write(UInt8(2)); writer.writeVarint(UInt64(values.count))
            for value in values { writer.writeOptional(value) }
        case .count(let count): writer.write(UInt8(3)); writer.writeVarint(UInt64(count))
        case .pairs(let pairs):
            writer.write(UInt8(4)); writer.writeVarint(UInt64(pairs.count))
            for pair in pairs { writer.writeLengthPrefixed(pair.key); writer.writeLengthPrefixed(pair.value) }
        case .lock(let outcome): writer.write(UInt8(5)); outcome.encode(to: &writer)
        }
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        switch try reader.readUInt8("a read result") {
        case 0: self = .value(try reader.readOptional("a value"))
        case 1:
            guard try reader.readBool("a presence flag") else { self = .record(nil); return }
            let value = try reader.readLengthPrefixed("a value")
            let expiresAt = try reader.readBool("an expiry flag") ? try reader.readInt64("an expiry") : nil
            self = .record(KVRecord(value: value, expiresAt: expiresAt))
        case 2:
            let count = try reader.readCount("values")
            var values: [Bytes?] = []
            for _ in 0..<count { values.append(try reader.readOptional("a value")) }
            self = .values(values)
        case 3: self = .count(Int(try reader.readVarint("a count")))
        case 4:
            let count = try reader.readCount("pairs", minimumElementSize: 2)
            var pairs: [KVPair] = []
            for _ in 0..<count {
                pairs.append(KVPair(key: try reader.readLengthPrefixed("a key"), value: try reader.readLengthPrefixed("a value")))
            }
            self = .pairs(pairs)
        case 5: self = .lock(try LockOutcome(from: &reader))
        default: throw reader.invalid("a read result tag")
        }
    }
}

extension RegionDescriptor: BinaryCodable {
    public func encode(to writer: inout ByteWriter) {
        writer.write(id)
        writer.writeLengthPrefixed(start)
        writer.writeOptional(end)
        writer.write(rangeVersion)
        writer.write(membershipVersion)
        writer.writeVarint(UInt64(voters.count))
        for voter in voters { writer.write(voter) }
        writer.writeVarint(UInt64(learners.count))
        for learner in learners { writer.write(learner) }
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        let id = try reader.readUInt64("a region id")
        let start = try reader.readLengthPrefixed("a start key")
        let end = try reader.readOptional("an end key")
        let rangeVersion = try reader.readUInt64("a range version")
        let membershipVersion = try reader.readUInt64("a membership version")
        var voters: [UInt64] = []
        for _ in 0..<(try reader.readCount("voters", minimumElementSize: 8)) { voters.append(try reader.readUInt64("a voter")) }
        var learners: [UInt64] = []
        for _ in 0..<(try reader.readCount("learners", minimumElementSize: 8)) { learners.append(try reader.readUInt64("a learner")) }
        self.init(
            id: id, start: start, end: end, rangeVersion: rangeVersion, membershipVersion: membershipVersion,
            voters: voters, learners: learners)
    }
}

extension KVError: BinaryCodable {
    public func encode(to writer: inout ByteWriter) {
        switch self {
        case .definite(let reason):
            switch reason {
            case .notLeader(let region, let leader): writer.write(UInt8(0)); writer.write(region); writer.write(leader ?? 0)
            case .noLeader(let region): writer.write(UInt8(1)); writer.write(region)
            case .regionMoved(let region): writer.write(UInt8(2)); writer.write(region)
            case .noRegion: writer.write(UInt8(3))
            case .tooLarge(let what): writer.write(UInt8(4)); writer.writeLengthPrefixed(Array(what.utf8))
            case .invalid(let what): writer.write(UInt8(5)); writer.writeLengthPrefixed(Array(what.utf8))
            case .shuttingDown: writer.write(UInt8(6))
            case .failed(let why): writer.write(UInt8(7)); writer.writeLengthPrefixed(Array(why.utf8))
            case .unreachable(let why): writer.write(UInt8(11)); writer.writeLengthPrefixed(Array(why.utf8))
            }
        case .indefinite(let reason):
            switch reason {
            case .timedOut: writer.write(UInt8(8))
            case .connectionLost: writer.write(UInt8(9))
            case .leadershipLost: writer.write(UInt8(10))
            case .resultUnknown: writer.write(UInt8(12))
            }
        }
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        func text() throws(CodecError) -> String { String(decoding: try reader.readLengthPrefixed("a message"), as: UTF8.self) }
        switch try reader.readUInt8("an error tag") {
        case 0:
            let region = try reader.readUInt64("a region")
            let leader = try reader.readUInt64("a leader")
            self = .definite(.notLeader(region: region, leader: leader == 0 ? nil : leader))
        case 1: self = .definite(.noLeader(region: try reader.readUInt64("a region")))
        case 2: self = .definite(.regionMoved(region: try reader.readUInt64("a region")))
        case 3: self = .definite(.noRegion)
        case 4: self = .definite(.tooLarge(try text()))
        case 5: self = .definite(.invalid(try text()))
        case 6: self = .definite(.shuttingDown)
        case 7: self = .definite(.failed(try text()))
        case 8: self = .indefinite(.timedOut)
        case 9: self = .indefinite(.connectionLost)
        case 10: self = .indefinite(.leadershipLost)
        case 11: self = .definite(.unreachable(try text()))
        case 12: self = .indefinite(.resultUnknown)
        default: throw reader.invalid("an error tag")
        }
    }
}
