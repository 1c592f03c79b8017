import KVWire

/// How the client's operations map onto Divan's Redis commands, and their replies back onto results.
extension KVClient {
    static func bytes(_ text: String) -> Bytes { Array(text.utf8) }

    static func command(for write: KVWrite, owner: Bytes) throws(KVError) -> [Bytes] {
        switch write {
        case .set(let key, let value, let condition, let expiry, let returnPrevious):
            var command = [bytes("SET"), key, value]
            switch condition {
            case .always: break
            case .ifAbsent: command.append(bytes("NX"))
            case .ifPresent: command.append(bytes("XX"))
            case .ifEqual(let expected): command += [bytes("IFEQ"), expected]
            case .ifNotEqual(let unexpected): command += [bytes("IFNE"), unexpected]
            }
            if returnPrevious { command.append(bytes("GET")) }
            switch expiry {
            case .none: break
            case .keep: command.append(bytes("KEEPTTL"))
            case .after(let milliseconds): command += [bytes("PX"), bytes(String(milliseconds))]
            case .at(let time): command += [bytes("PXAT"), bytes(String(time))]
            }
            return command
        case .delete(let keys): return [bytes("DEL")] + keys
        case .deleteIfEqual(let key, let value): return [bytes("DELEX"), key, bytes("IFEQ"), value]
        case .deleteRange(let start, let end): return [bytes("DIVAN.DELRANGE"), start, end ?? bytes("+")]
        case .getAndDelete(let key): return [bytes("GETDEL"), key]
        case .incrementBy(let key, let delta): return [bytes("INCRBY"), key, bytes(String(delta))]
        case .append(let key, let value): return [bytes("APPEND"), key, value]
        case .expire(let key, let expiry):
            switch expiry {
            case .none: return [bytes("PERSIST"), key]
            case .after(let milliseconds): return [bytes("PEXPIRE"), key, bytes(String(milliseconds))]
            case .at(let time): return [bytes("PEXPIREAT"), key, bytes(String(time))]
            case .keep: throw .definite(.invalid("an expiry of KEEPTTL changes nothing"))
            }
        case .setMany(let pairs, let onlyIfNoneExists):
            return [bytes(onlyIfNoneExists ? "MSETNX" : "MSET")] + pairs.flatMap { [$0.key, $0.value] }
        case .nextSequence(let key, let count): return [bytes("DIVAN.SEQUENCE"), key, bytes(String(count))]
        case .lock(let name, let lockOwner, let lease):
            return [bytes("DIVAN.LOCK"), name, bytes(String(lease)), bytes("OWNER"), lockOwner.isEmpty ? owner : lockOwner]
        case .keepAlive(let name, let lockOwner, let token, let lease):
            return [bytes("DIVAN.KEEPALIVE"), name, bytes(String(token)), bytes(String(lease)), bytes("OWNER"), lockOwner.isEmpty ? owner : lockOwner]
        case .unlock(let name, let lockOwner, let token):
            return [bytes("DIVAN.UNLOCK"), name, bytes(String(token)), bytes("OWNER"), lockOwner.isEmpty ? owner : lockOwner]
        case .removeExpired:
            throw .definite(.invalid("expired keys are removed by the cluster itself"))
        }
    }

    static func writeResult(_ write: KVWrite, _ reply: RESPReply) throws(KVError) -> KVWriteResult {
        if case .error(let message) = reply {
            if message.hasPrefix("ERR value is not an integer") { return .refused(.notAnInteger) }
            if message.hasPrefix("ERR increment or decrement would overflow") { return .refused(.overflow) }
            if message.hasPrefix("CROSSSLOT") { return .refused(.crossRegion) }
            throw unexpected(reply)
        }
        switch (write, reply) {
        case (.set(_, _, let condition, _, true), _):
            let previous: Bytes? = if case .bulk(let value) = reply { value } else { nil }
            let performed: Bool
            switch condition {
            case .always: performed = true
            case .ifAbsent: performed = previous == nil
            case .ifPresent: performed = previous != nil
            case .ifEqual(let expected): performed = previous == expected
            case .ifNotEqual(let unexpected): performed = previous != unexpected
            }
            return .set(performed: performed, previous: previous)
        case (.set, .simple): return .set(performed: true, previous: nil)
        case (.set, .null): return .set(performed: false, previous: nil)
        case (.getAndDelete, .bulk(let value)): return .value(value)
        case (.getAndDelete, .null): return .value(nil)
        case (.incrementBy, .integer(let value)), (.append, .integer(let value)): return .integer(value)
        case (.setMany, .simple): return .count(1)
        case (.delete, .integer(let count)), (.deleteIfEqual, .integer(let count)), (.deleteRange, .integer(let count)),
             (.expire, .integer(let count)), (.setMany, .integer(let count)):
            return .count(Int(count))
        case (.nextSequence, .array(let bounds)):
            guard bounds.count == 2, let start = number(bounds[0]), let end = number(bounds[1]) else { throw unexpected(reply) }
            return .sequence(start: start, end: end)
        case (.lock, .integer(let token)), (.keepAlive, .integer(let token)):
            return .lock(.held(token: UInt64(token), expiresAt: now() + lease(of: write)))
        case (.lock, .null):
            return .lock(.busy(owner: [], expiresAt: 0))
        case (.keepAlive, .null):
            return .lock(.notHeld)
        case (.unlock, .integer(let released)):
            return .lock(released == 1 ? .released : .notHeld)
        default:
            throw unexpected(reply)
        }
    }

    static func lease(of write: KVWrite) -> Int64 {
        switch write {
        case .lock(_, _, let lease), .keepAlive(_, _, _, let lease): return lease
        default: return 0
        }
    }

    static func number(_ reply: RESPReply) -> UInt64? {
        switch reply {
        case .integer(let value): return UInt64(exactly: value)
        case .bulk(let text): return UInt64(String(decoding: text, as: UTF8.self))
        default: return nil
        }
    }

    static func command(for read: KVRead) throws(KVError) -> [Bytes] {
        switch read {
        case .get(let key): return [bytes("GET"), key]
        case .multiGet(let keys): return [bytes("MGET")] + keys
        case .exists(let keys): return [bytes("EXISTS")] + keys
        case .scan(let start, let end, let limit, let reverse):
            return [bytes("DIVAN.SCAN"), start, end ?? bytes("+"), bytes(String(limit))] + (reverse ? [bytes("REV")] : [])
        case .count(let start, let end): return [bytes("DIVAN.COUNT"), start, end ?? bytes("+")]
        case .getRecord: throw .definite(.invalid("getRecord is answered by GET and PTTL"))
        case .lockState: throw .definite(.invalid("lock state is not served over RESP"))
        }
    }

    static func readResult(_ read: KVRead, _ reply: RESPReply) throws(KVError) -> KVReadResult {
        switch (read, reply) {
        case (.get, .bulk(let value)): return .value(value)
        case (.get, .null): return .value(nil)
        case (.multiGet, .array(let values)):
            return .values(values.map { if case .bulk(let value) = $0 { value } else { nil } })
        case (.exists, .integer(let count)), (.count, .integer(let count)): return .count(Int(count))
        case (.scan, .array(let flat)):
            var pairs: [KVPair] = []
            var index = 0
            while index + 1 < flat.count {
                guard case .bulk(let key) = flat[index], case .bulk(let value) = flat[index + 1] else { throw unexpected(reply) }
                pairs.append(KVPair(key: key, value: value))
                index += 2
            }
            return .pairs(pairs)
        default:
            throw unexpected(reply)
        }
    }

    /// The cluster status from a RESP2 `DIVAN.STATUS` reply (maps arrive as flat arrays).
    static func status(from reply: RESPReply) -> ClusterStatus? {
        guard case .array(let top) = reply else { return nil }
        let fields = map(top)
        guard case .integer(let node)? = fields["node"], case .array(let regions)? = fields["regions"] else { return nil }
        let statuses = regions.compactMap { region -> RegionStatus? in
            guard case .array(let flat) = region else { return nil }
            let fields = map(flat)
            func integer(_ name: String) -> UInt64 {
                if case .integer(let value)? = fields[name] { return UInt64(clamping: value) }
                return 0
            }
            func nodes(_ name: String) -> [UInt64] {
                guard case .array(let items)? = fields[name] else { return [] }
                return items.compactMap { if case .integer(let id) = $0 { UInt64(clamping: id) } else { nil } }
            }
            guard case .bulk(let start)? = fields["start"] else { return nil }
            let end: Bytes? = if case .bulk(let end)? = fields["end"] { end } else { nil }
            let leader: UInt64? = if case .integer(let id)? = fields["leader"] { UInt64(clamping: id) } else { nil }
            let role: String = if case .bulk(let text)? = fields["role"] { String(decoding: text, as: UTF8.self) } else { "" }
            let descriptor = RegionDescriptor(id: integer("id"), start: start, end: end, voters: nodes("voters"), learners: nodes("learners"))
            return RegionStatus(
                region: descriptor, role: role, leader: leader, term: integer("term"), commitIndex: integer("commit_index"),
                appliedIndex: integer("applied_index"), keys: integer("keys"), bytes: integer("bytes"))
        }
        return ClusterStatus(node: UInt64(clamping: node), regions: statuses)
    }

    static func map(_ flat: [RESPReply]) -> [String: RESPReply] {
        var fields: [String: RESPReply] = [:]
        var index = 0
        while index + 1 < flat.count {
            switch flat[index] {
            case .bulk(let name): fields[String(decoding: name, as: UTF8.self)] = flat[index + 1]
            case .simple(let name): fields[name] = flat[index + 1]
            default: break
            }
            index += 2
        }
        return fields
    }
}
