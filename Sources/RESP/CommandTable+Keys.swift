import KVWire

extension CommandTable {
    static let keyCommands: [CommandSpec] = [
        CommandSpec("get", arity: 2, flags: ["readonly", "fast"], keys: (1, 1, 1), group: "string",
                    summary: "Returns the string value of a key.") { arguments, _, _ in
            KVCall.read(.get(key: arguments[1]), access: .read([arguments[1]])) { result in
                guard case .value(let value) = result else { return Replies.unexpectedResult }
                return value.map(RESPValue.bulk) ?? .null
            }
        },
        CommandSpec("set", arity: -3, flags: ["write", "denyoom"], keys: (1, 1, 1), group: "string",
                    summary: "Sets the string value of a key; NX, XX, IFEQ, IFNE, GET and expiry options.",
                    handler: KeyCommands.set),
        CommandSpec("setnx", arity: 3, flags: ["write", "denyoom", "fast"], keys: (1, 1, 1), group: "string",
                    summary: "Sets the string value of a key only when the key doesn't exist.") { arguments, _, _ in
            KVCall.write(.set(key: arguments[1], value: arguments[2], condition: .ifAbsent, expiry: .none, returnPrevious: false)) { result in
                guard case .set(let performed, _) = result else { return Replies.unexpectedResult }
                return .integer(performed ? 1 : 0)
            }
        },
        CommandSpec("getset", arity: 3, flags: ["write", "denyoom", "fast"], keys: (1, 1, 1), group: "string",
                    summary: "Sets the string value of a key and returns its previous value.") { arguments, _, _ in
            KVCall.write(.set(key: arguments[1], value: arguments[2], condition: .always, expiry: .none, returnPrevious: true)) { result in
                guard case .set(_, let previous) = result else { return Replies.unexpectedResult }
                return previous.map(RESPValue.bulk) ?? .null
            }
        },
        CommandSpec("getdel", arity: 2, flags: ["write", "fast"], keys: (1, 1, 1), group: "string",
                    summary: "Returns the string value of a key after deleting the key.") { arguments, _, _ in
            KVCall.write(.getAndDelete(key: arguments[1])) { result in
                guard case .value(let value) = result else { return Replies.unexpectedResult }
                return value.map(RESPValue.bulk) ?? .null
            }
        },
        CommandSpec("delex", arity: -2, flags: ["write", "fast"], keys: (1, 1, 1), group: "string",
                    summary: "Deletes a key, or only when it holds a value (IFEQ).", handler: KeyCommands.delex),
        CommandSpec("mget", arity: -2, flags: ["readonly", "fast"], keys: (1, -1, 1), group: "string",
                    summary: "Atomically returns the string values of one or more keys.") { arguments, _, _ in
            let keys = Array(arguments.all.dropFirst())
            return KVCall.read(.multiGet(keys: keys), access: .read(Set(keys))) { result in
                guard case .values(let values) = result else { return Replies.unexpectedResult }
                return .array(values.map { $0.map(RESPValue.bulk) ?? .null })
            }
        },
        CommandSpec("mset", arity: -3, flags: ["write", "denyoom"], keys: (1, -1, 2), group: "string",
                    summary: "Atomically sets the values of keys of one region.") { arguments, _, _ in
            KeyCommands.setMany(arguments, name: "mset", onlyIfNoneExists: false)
        },
        CommandSpec("msetnx", arity: -3, flags: ["write", "denyoom"], keys: (1, -1, 2), group: "string",
                    summary: "Atomically sets the values of keys of one region only when none exists.") { arguments, _, _ in
            KeyCommands.setMany(arguments, name: "msetnx", onlyIfNoneExists: true)
        },
        CommandSpec("del", arity: -2, flags: ["write"], keys: (1, -1, 1), group: "keyspace",
                    summary: "Deletes one or more keys.", handler: KeyCommands.delete),
        CommandSpec("unlink", arity: -2, flags: ["write", "fast"], keys: (1, -1, 1), group: "keyspace",
                    summary: "Deletes one or more keys (as DEL: Divan frees space in the background anyway).",
                    handler: KeyCommands.delete),
        CommandSpec("exists", arity: -2, flags: ["readonly", "fast"], keys: (1, -1, 1), group: "keyspace",
                    summary: "Counts how many of the keys exist.") { arguments, _, _ in
            let keys = Array(arguments.all.dropFirst())
            return KVCall.read(.exists(keys: keys), access: .read(Set(keys))) { result in
                guard case .count(let count) = result else { return Replies.unexpectedResult }
                return .integer(Int64(count))
            }
        },
        CommandSpec("incr", arity: 2, flags: ["write", "denyoom", "fast"], keys: (1, 1, 1), group: "string",
                    summary: "Increments the integer value of a key by one.") { arguments, _, _ in
            KeyCommands.increment(arguments[1], by: 1)
        },
        CommandSpec("decr", arity: 2, flags: ["write", "denyoom", "fast"], keys: (1, 1, 1), group: "string",
                    summary: "Decrements the integer value of a key by one.") { arguments, _, _ in
            KeyCommands.increment(arguments[1], by: -1)
        },
        CommandSpec("incrby", arity: 3, flags: ["write", "denyoom", "fast"], keys: (1, 1, 1), group: "string",
                    summary: "Increments the integer value of a key by a number.") { arguments, _, _ in
            guard let delta = arguments.integer(2) else { return .reply(Replies.notAnInteger) }
            return KeyCommands.increment(arguments[1], by: delta)
        },
        CommandSpec("decrby", arity: 3, flags: ["write", "denyoom", "fast"], keys: (1, 1, 1), group: "string",
                    summary: "Decrements the integer value of a key by a number.") { arguments, _, _ in
            guard let delta = arguments.integer(2) else { return .reply(Replies.notAnInteger) }
            // -Int64.min does not exist; Redis reports it before touching the key.
            guard delta != .min else { return .reply(.error("ERR decrement would overflow")) }
            return KeyCommands.increment(arguments[1], by: -delta)
        },
        CommandSpec("append", arity: 3, flags: ["write", "denyoom", "fast"], keys: (1, 1, 1), group: "string",
                    summary: "Appends a string to the value of a key; creates the key if needed.") { arguments, _, _ in
            KVCall.write(.append(key: arguments[1], value: arguments[2])) { result in
                guard case .integer(let length) = result else { return Replies.unexpectedResult }
                return .integer(length)
            }
        },
        CommandSpec("strlen", arity: 2, flags: ["readonly", "fast"], keys: (1, 1, 1), group: "string",
                    summary: "Returns the length of a string value.") { arguments, _, _ in
            KVCall.read(.get(key: arguments[1]), access: .read([arguments[1]])) { result in
                guard case .value(let value) = result else { return Replies.unexpectedResult }
                return .integer(Int64(value?.count ?? 0))
            }
        },
        CommandSpec("getrange", arity: 4, flags: ["readonly"], keys: (1, 1, 1), group: "string",
                    summary: "Returns a substring of the string stored at a key.", handler: KeyCommands.getRange),
        CommandSpec("type", arity: 2, flags: ["readonly", "fast"], keys: (1, 1, 1), group: "keyspace",
                    summary: "Determines the type of value stored at a key.") { arguments, _, _ in
            KVCall.read(.getRecord(key: arguments[1]), access: .read([arguments[1]])) { result in
                guard case .record(let record) = result else { return Replies.unexpectedResult }
                return .simple(record == nil ? "none" : "string")
            }
        },
        CommandSpec("expire", arity: -3, flags: ["write", "fast"], keys: (1, 1, 1), group: "keyspace",
                    summary: "Sets the expiration time of a key in seconds.") { arguments, _, _ in
            KeyCommands.expire(arguments, name: "expire", unitMilliseconds: 1000)
        },
        CommandSpec("pexpire", arity: -3, flags: ["write", "fast"], keys: (1, 1, 1), group: "keyspace",
                    summary: "Sets the expiration time of a key in milliseconds.") { arguments, _, _ in
            KeyCommands.expire(arguments, name: "pexpire", unitMilliseconds: 1)
        },
        CommandSpec("persist", arity: 2, flags: ["write", "fast"], keys: (1, 1, 1), group: "keyspace",
                    summary: "Removes the expiration time of a key.") { arguments, _, _ in
            KVCall.write(.expire(key: arguments[1], expiry: .none)) { result in
                guard case .count(let count) = result else { return Replies.unexpectedResult }
                return .integer(Int64(count))
            }
        },
        CommandSpec("ttl", arity: 2, flags: ["readonly", "fast"], keys: (1, 1, 1), group: "keyspace",
                    summary: "Returns the expiration time in seconds of a key.") { arguments, _, server in
            KeyCommands.timeToLive(arguments[1], inMilliseconds: false, server: server)
        },
        CommandSpec("pttl", arity: 2, flags: ["readonly", "fast"], keys: (1, 1, 1), group: "keyspace",
                    summary: "Returns the expiration time in milliseconds of a key.") { arguments, _, server in
            KeyCommands.timeToLive(arguments[1], inMilliseconds: true, server: server)
        },
        CommandSpec("scan", arity: -2, flags: ["readonly"], group: "keyspace",
                    summary: "Iterates over the key names in the database.", handler: KeyCommands.scan),
        CommandSpec("keys", arity: 2, flags: ["readonly"], group: "keyspace",
                    summary: "Returns all key names that match a pattern (bounded; use SCAN).", handler: KeyCommands.keys),
        CommandSpec("dbsize", arity: 1, flags: ["readonly", "fast"], group: "server",
                    summary: "Returns the number of keys in the database.") { _, _, _ in
            KVCall.read(.count(start: [], end: nil), access: .barrier) { result in
                guard case .count(let count) = result else { return Replies.unexpectedResult }
                return .integer(Int64(count))
            }
        },
        CommandSpec("flushdb", arity: -1, flags: ["write"], group: "server",
                    summary: "Removes all keys, locks and sequences.") { arguments, _, _ in
            // ASYNC and SYNC are accepted; Divan's delete is one Raft entry either way.
            guard arguments.count == 1 || (arguments.count == 2 && ["ASYNC", "SYNC"].contains(arguments.option(1))) else {
                return .reply(Replies.syntaxError)
            }
            return KVCall.write(.deleteRange(start: [], end: nil), access: .barrier) { result in
                guard case .count = result else { return Replies.unexpectedResult }
                return .ok
            }
        },
    ]
}

/// The string and key commands whose option parsing needs more than a few lines.
enum KeyCommands {
    /// SET key value [NX | XX | IFEQ v | IFNE v] [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL],
    /// with Redis's rules for which options exclude which (t_string.c).
    @Sendable static func set(_ arguments: Arguments, _ session: inout Session, _ server: ServerContext) -> CommandOutcome {
        var condition: SetCondition?
        var expiry: Expiry?
        var returnPrevious = false
        var index = 3
        while index < arguments.count {
            let option = arguments.option(index)
            let hasValue = index + 1 < arguments.count
            switch option {
            case "NX", "XX":
                guard condition == nil else { return .reply(Replies.syntaxError) }
                condition = option == "NX" ? .ifAbsent : .ifPresent
            case "IFEQ", "IFNE":
                guard condition == nil, hasValue else { return .reply(Replies.syntaxError) }
                index += 1
                condition = option == "IFEQ" ? .ifEqual(arguments[index]) : .ifNotEqual(arguments[index])
            case "IFDEQ", "IFDNE":
                return .reply(.error("ERR \(option) is not supported by Divan; use IFEQ or IFNE with the value"))
            case "GET":
                returnPrevious = true
            case "KEEPTTL":
                guard expiry == nil else { return .reply(Replies.syntaxError) }
                expiry = .keep
            case "EX", "PX", "EXAT", "PXAT":
                guard expiry == nil, hasValue else { return .reply(Replies.syntaxError) }
                index += 1
                guard let amount = arguments.integer(index) else { return .reply(Replies.notAnInteger) }
                guard let parsed = Self.expiry(option, amount) else { return .reply(Replies.invalidExpireTime("set")) }
                expiry = parsed
            default:
                return .reply(Replies.syntaxError)
            }
            index += 1
        }
        let write = KVWrite.set(
            key: arguments[1], value: arguments[2], condition: condition ?? .always, expiry: expiry ?? .none,
            returnPrevious: returnPrevious
        )
        return KVCall.write(write) { [returnPrevious] result in
            guard case .set(let performed, let previous) = result else { return Replies.unexpectedResult }
            if returnPrevious { return previous.map(RESPValue.bulk) ?? .null }
            return performed ? .ok : .null
        }
    }

    /// SET's expiry in Divan's terms; nil for a time Redis calls invalid (not positive, or overflowing).
    private static func expiry(_ option: String, _ amount: Int64) -> Expiry? {
        guard amount > 0 else { return nil }
        switch option {
        case "EX", "EXAT":
            let (milliseconds, overflow) = amount.multipliedReportingOverflow(by: 1000)
            guard !overflow else { return nil }
            return option == "EX" ? .after(milliseconds: milliseconds) : .at(unixMilliseconds: milliseconds)
        case "PX":
            return .after(milliseconds: amount)
        default:
            return .at(unixMilliseconds: amount)
        }
    }

    /// DELEX key [IFEQ v]: without a condition it is DEL of one key.
    @Sendable static func delex(_ arguments: Arguments, _ session: inout Session, _ server: ServerContext) -> CommandOutcome {
        let key = arguments[1]
        if arguments.count == 2 {
            return KVCall.write(.delete(keys: [key]), reply: countReply)
        }
        guard arguments.count == 4 else { return .reply(Replies.syntaxError) }
        switch arguments.option(2) {
        case "IFEQ":
            return KVCall.write(.deleteIfEqual(key: key, value: arguments[3]), reply: countReply)
        case "IFNE", "IFDEQ", "IFDNE":
            return .reply(.error("ERR DELEX \(arguments.option(2)) is not supported by Divan; use IFEQ"))
        default:
            return .reply(Replies.syntaxError)
        }
    }

    @Sendable static func delete(_ arguments: Arguments, _ session: inout Session, _ server: ServerContext) -> CommandOutcome {
        KVCall.write(.delete(keys: Array(arguments.all.dropFirst())), reply: countReply)
    }

    @Sendable static func countReply(_ result: KVWriteResult) -> RESPValue {
        switch result {
        case .count(let count): return .integer(Int64(count))
        case .refused(let refusal): return Replies.refusal(refusal)
        default: return Replies.unexpectedResult
        }
    }

    static func setMany(_ arguments: Arguments, name: String, onlyIfNoneExists: Bool) -> CommandOutcome {
        guard arguments.count % 2 == 1 else { return .reply(Replies.wrongArity(name)) }
        let pairs = stride(from: 1, to: arguments.count, by: 2).map { KVPair(key: arguments[$0], value: arguments[$0 + 1]) }
        return KVCall.write(.setMany(pairs: pairs, onlyIfNoneExists: onlyIfNoneExists)) { result in
            switch result {
            case .count(let count): return onlyIfNoneExists ? .integer(Int64(count)) : .ok
            case .refused(let refusal): return Replies.refusal(refusal)
            default: return Replies.unexpectedResult
            }
        }
    }

    static func increment(_ key: Bytes, by delta: Int64) -> CommandOutcome {
        KVCall.write(.incrementBy(key: key, delta: delta)) { result in
            switch result {
            case .integer(let value): return .integer(value)
            case .refused(let refusal): return Replies.refusal(refusal)
            default: return Replies.unexpectedResult
            }
        }
    }

    /// GETRANGE with Redis's index rules: negative indexes count from the end, and the range is
    /// clamped to the string.
    @Sendable static func getRange(_ arguments: Arguments, _ session: inout Session, _ server: ServerContext) -> CommandOutcome {
        guard let start = arguments.integer(2), let end = arguments.integer(3) else { return .reply(Replies.notAnInteger) }
        return KVCall.read(.get(key: arguments[1]), access: .read([arguments[1]])) { result in
            guard case .value(let value) = result else { return Replies.unexpectedResult }
            return .bulk(substring(value ?? [], start: start, end: end))
        }
    }

    static func substring(_ value: Bytes, start: Int64, end: Int64) -> Bytes {
        let length = Int64(value.count)
        if start < 0, end < 0, start > end { return [] }
        var first = start < 0 ? length + start : start
        var last = end < 0 ? length + end : end
        first = max(first, 0)
        last = max(last, 0)
        last = min(last, length - 1)
        guard length > 0, first <= last else { return [] }
        return Array(value[Int(first)...Int(last)])
    }

    /// EXPIRE and PEXPIRE. A time in the past deletes the key, as in Redis; the NX, XX, GT and LT
    /// options would need the current expiry inside the write, which Divan's writes do not carry.
    static func expire(_ arguments: Arguments, name: String, unitMilliseconds: Int64) -> CommandOutcome {
        guard let amount = arguments.integer(2) else { return .reply(Replies.notAnInteger) }
        if arguments.count > 3 {
            return .reply(.error("ERR Unsupported option \(arguments.string(3))"))
        }
        let (milliseconds, overflow) = amount.multipliedReportingOverflow(by: unitMilliseconds)
        guard !overflow else { return .reply(Replies.invalidExpireTime(name)) }
        return KVCall.write(.expire(key: arguments[1], expiry: .after(milliseconds: milliseconds)), reply: countReply)
    }

    /// TTL and PTTL from the record's expiry and this node's clock: -2 for a missing key, -1 for no
    /// expiry; seconds are rounded as Redis rounds them.
    static func timeToLive(_ key: Bytes, inMilliseconds: Bool, server: ServerContext) -> CommandOutcome {
        let now = server.now
        return KVCall.read(.getRecord(key: key), access: .read([key])) { result in
            guard case .record(let record) = result else { return Replies.unexpectedResult }
            guard let record else { return .integer(-2) }
            guard let expiresAt = record.expiresAt else { return .integer(-1) }
            let remaining = max(0, expiresAt - now())
            return .integer(inMilliseconds ? remaining : (remaining + 500) / 1000)
        }
    }

    /// SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]. COUNT is how many keys one call examines;
    /// MATCH filters them afterwards, so a call may return fewer keys, even none, as in Redis.
    @Sendable static func scan(_ arguments: Arguments, _ session: inout Session, _ server: ServerContext) -> CommandOutcome {
        guard let cursor = UInt64(arguments.string(1)) else { return .reply(.error("ERR invalid cursor")) }
        var pattern: GlobPattern?
        var count: Int64 = 10
        var onlyStrings = true
        var index = 2
        while index < arguments.count {
            guard index + 1 < arguments.count else { return .reply(Replies.syntaxError) }
            switch arguments.option(index) {
            case "MATCH":
                pattern = GlobPattern(arguments[index + 1])
            case "COUNT":
                guard let value = arguments.integer(index + 1) else { return .reply(Replies.notAnInteger) }
                guard value >= 1 else { return .reply(Replies.syntaxError) }
                count = value
            case "TYPE":
                onlyStrings = arguments.string(index + 1).lowercased() == "string"
            default:
                return .reply(Replies.syntaxError)
            }
            index += 2
        }
        let prefix = pattern?.literalPrefix ?? []
        let start: Bytes
        if cursor == 0 {
            start = prefix
        } else {
            guard let resumeAt = server.cursors.key(for: cursor) else { return .reply(.error("ERR invalid cursor")) }
            start = resumeAt
        }
        let limit = Int(min(count, Int64(server.options.limits.maximumKeysScannedByKEYS)))
        let cursors = server.cursors
        let filter = pattern
        let isTypeMatched = onlyStrings
        return KVCall.read(.scan(start: start, end: successor(of: prefix), limit: limit, reverse: false), access: .barrier) { result in
            guard case .pairs(let pairs) = result else { return Replies.unexpectedResult }
            var next: UInt64 = 0
            if pairs.count >= limit, let last = pairs.last {
                next = cursors.remember(last.key + [0])
            }
            let keys = isTypeMatched ? pairs.map(\.key).filter { filter?.matches($0) ?? true } : []
            return .array([.bulk(String(next)), .array(keys.map(RESPValue.bulk))])
        }
    }

    /// KEYS pattern, bounded: more keys than the limit under the pattern's literal prefix is an error
    /// that points to SCAN rather than a reply that stalls the node.
    @Sendable static func keys(_ arguments: Arguments, _ session: inout Session, _ server: ServerContext) -> CommandOutcome {
        let pattern = GlobPattern(arguments[1])
        let prefix = pattern.literalPrefix
        let limit = server.options.limits.maximumKeysScannedByKEYS
        return KVCall.read(.scan(start: prefix, end: successor(of: prefix), limit: limit + 1, reverse: false), access: .barrier) { result in
            guard case .pairs(let pairs) = result else { return Replies.unexpectedResult }
            guard pairs.count <= limit else {
                return .error("ERR KEYS would examine more than \(limit) keys; use SCAN")
            }
            return .array(pairs.map(\.key).filter(pattern.matches).map(RESPValue.bulk))
        }
    }

    /// The first key after every key that starts with `prefix`; nil when there is none (an empty
    /// prefix or one of only 0xFF bytes).
    static func successor(of prefix: Bytes) -> Bytes? {
        var bytes = prefix
        while let last = bytes.last {
            if last < 0xFF {
                bytes[bytes.count - 1] = last + 1
                return bytes
            }
            bytes.removeLast()
        }
        return nil
    }
}
