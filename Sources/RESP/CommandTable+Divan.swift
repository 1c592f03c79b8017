import KVWire

extension CommandTable {
    static let divanCommands: [CommandSpec] = [
        CommandSpec("divan.lock", arity: -3, flags: ["write"], keys: (1, 1, 1), group: "divan",
                    summary: "DIVAN.LOCK name lease-ms [OWNER owner]: the fencing token, or nil while another holds it.") { arguments, session, server in
            guard let lease = arguments.integer(2) else { return .reply(Replies.notAnInteger) }
            guard lease > 0 else { return .reply(DivanCommands.invalidLease) }
            guard let owner = DivanCommands.owner(arguments, from: 3, session: session, server: server) else { return .reply(Replies.syntaxError) }
            return KVCall.write(.lock(name: arguments[1], owner: owner, leaseMilliseconds: lease), reply: DivanCommands.tokenReply)
        },
        CommandSpec("divan.keepalive", arity: -4, flags: ["write"], keys: (1, 1, 1), group: "divan",
                    summary: "DIVAN.KEEPALIVE name token lease-ms [OWNER owner]: the token while still held, else nil.") { arguments, session, server in
            guard let token = arguments.integer(2), token >= 0, let lease = arguments.integer(3) else {
                return .reply(Replies.notAnInteger)
            }
            guard lease > 0 else { return .reply(DivanCommands.invalidLease) }
            guard let owner = DivanCommands.owner(arguments, from: 4, session: session, server: server) else { return .reply(Replies.syntaxError) }
            let write = KVWrite.keepAlive(name: arguments[1], owner: owner, token: UInt64(token), leaseMilliseconds: lease)
            return KVCall.write(write, reply: DivanCommands.tokenReply)
        },
        CommandSpec("divan.unlock", arity: -3, flags: ["write"], keys: (1, 1, 1), group: "divan",
                    summary: "DIVAN.UNLOCK name token [OWNER owner]: 1 when released, 0 when not held.") { arguments, session, server in
            guard let token = arguments.integer(2), token >= 0 else { return .reply(Replies.notAnInteger) }
            guard let owner = DivanCommands.owner(arguments, from: 3, session: session, server: server) else { return .reply(Replies.syntaxError) }
            return KVCall.write(.unlock(name: arguments[1], owner: owner, token: UInt64(token))) { result in
                guard case .lock(let outcome) = result else { return Replies.unexpectedResult }
                return .integer(outcome == .released ? 1 : 0)
            }
        },
        CommandSpec("divan.sequence", arity: 3, flags: ["write"], keys: (1, 1, 1), group: "divan",
                    summary: "DIVAN.SEQUENCE key n: reserves n numbers; the reply is [start, end).") { arguments, _, _ in
            guard let count = arguments.integer(2), count >= 0 else { return .reply(Replies.notAnInteger) }
            return KVCall.write(.nextSequence(key: arguments[1], count: UInt64(count))) { result in
                switch result {
                case .sequence(let start, let end):
                    // Past Int64.max a RESP integer cannot carry the number; bulk strings can.
                    guard start <= UInt64(Int64.max), end <= UInt64(Int64.max) else {
                        return .array([.bulk(String(start)), .bulk(String(end))])
                    }
                    return .array([.integer(Int64(start)), .integer(Int64(end))])
                case .refused(let refusal):
                    return Replies.refusal(refusal)
                default:
                    return Replies.unexpectedResult
                }
            }
        },
        CommandSpec("divan.scan", arity: -4, flags: ["readonly"], group: "divan",
                    summary: "DIVAN.SCAN start end limit [REV]: up to limit keys and values in [start, end) (end '+' for no end), in order or reversed.") { arguments, _, _ in
            guard let limit = arguments.integer(3), limit >= 0 else { return .reply(Replies.notAnInteger) }
            let reverse: Bool
            switch arguments.count {
            case 4: reverse = false
            case 5 where arguments.option(4) == "REV": reverse = true
            default: return .reply(Replies.syntaxError)
            }
            let read = KVRead.scan(start: arguments[1], end: DivanCommands.rangeEnd(arguments[2]), limit: Int(limit), reverse: reverse)
            return KVCall.read(read, access: .barrier) { result in
                guard case .pairs(let pairs) = result else { return Replies.unexpectedResult }
                return .array(pairs.flatMap { [RESPValue.bulk($0.key), .bulk($0.value)] })
            }
        },
        CommandSpec("divan.delrange", arity: 3, flags: ["write"], group: "divan",
                    summary: "DIVAN.DELRANGE start end: deletes every key, lock and sequence in [start, end) (end '+' for no end); the number of keys removed.") { arguments, _, _ in
            KVCall.write(.deleteRange(start: arguments[1], end: DivanCommands.rangeEnd(arguments[2])), access: .barrier) { result in
                guard case .count(let count) = result else { return Replies.unexpectedResult }
                return .integer(Int64(count))
            }
        },
        CommandSpec("divan.count", arity: 3, flags: ["readonly"], group: "divan",
                    summary: "DIVAN.COUNT start end: how many live keys lie in [start, end) (end '+' for no end).") { arguments, _, _ in
            KVCall.read(.count(start: arguments[1], end: DivanCommands.rangeEnd(arguments[2])), access: .barrier) { result in
                guard case .count(let count) = result else { return Replies.unexpectedResult }
                return .integer(Int64(count))
            }
        },
        CommandSpec("divan.status", arity: 1, flags: [], group: "divan",
                    summary: "The cluster as this node sees it: regions, their leaders, terms and apply lag.") { _, _, _ in
            KVCall.status(reply: DivanCommands.statusReply)
        },
    ]
}

/// Divan's own commands: locks with fencing tokens, sequences and status.
enum DivanCommands {
    static let invalidLease = RESPValue.error("ERR invalid lease time, it must be a positive number of milliseconds")

    /// A range's end as DIVAN.SCAN and DIVAN.COUNT take it: `+` means no end.
    static func rangeEnd(_ argument: Bytes) -> Bytes? {
        argument == [UInt8(ascii: "+")] ? nil : argument
    }

    /// The lock owner: `OWNER o` when given, else one name per connection of this server process,
    /// so that a lock taken on one connection cannot be released by another by accident.
    static func owner(_ arguments: Arguments, from index: Int, session: Session, server: ServerContext) -> Bytes? {
        switch arguments.count - index {
        case 0: return Array("resp-\(server.instance)-\(session.id)".utf8)
        case 2 where arguments.option(index) == "OWNER": return arguments[index + 1]
        default: return nil
        }
    }

    @Sendable static func tokenReply(_ result: KVWriteResult) -> RESPValue {
        guard case .lock(let outcome) = result else { return Replies.unexpectedResult }
        switch outcome {
        case .held(let token, _): return token <= UInt64(Int64.max) ? .integer(Int64(token)) : .bulk(String(token))
        case .busy, .notHeld, .released: return .null
        }
    }

    @Sendable static func statusReply(_ status: ClusterStatus) -> RESPValue {
        .map([("node", .integer(Int64(clamping: status.node))), ("regions", .array(status.regions.map(regionReply)))])
    }

    private static func regionReply(_ region: RegionStatus) -> RESPValue {
        let lag = region.commitIndex >= region.appliedIndex ? region.commitIndex - region.appliedIndex : 0
        let voters: [RESPValue] = region.region.voters.map { .integer(Int64(clamping: $0)) }
        let learners: [RESPValue] = region.region.learners.map { .integer(Int64(clamping: $0)) }
        let leader: RESPValue = region.leader.map { .integer(Int64(clamping: $0)) } ?? .null
        let end: RESPValue = region.region.end.map(RESPValue.bulk) ?? .null
        var fields: [(String, RESPValue)] = [
            ("id", .integer(Int64(clamping: region.region.id))), ("start", .bulk(region.region.start)), ("end", end),
            ("voters", .array(voters)), ("learners", .array(learners)), ("role", .bulk(region.role)), ("leader", leader),
        ]
        fields += [
            ("term", .integer(Int64(clamping: region.term))),
            ("commit_index", .integer(Int64(clamping: region.commitIndex))),
            ("applied_index", .integer(Int64(clamping: region.appliedIndex))),
            ("apply_lag", .integer(Int64(clamping: lag))),
            ("keys", .integer(Int64(clamping: region.keys))),
            ("bytes", .integer(Int64(clamping: region.bytes))),
        ]
        return .map(fields)
    }
}
