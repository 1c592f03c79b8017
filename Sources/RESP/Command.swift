import KVWire

/// A command's arguments, the name first.
struct Arguments: Sendable {
    let all: [Bytes]

    init(_ all: [Bytes]) {
        self.all = all
    }

    var count: Int { all.count }

    subscript(index: Int) -> Bytes { all[index] }

    func string(_ index: Int) -> String { String(decoding: all[index], as: UTF8.self) }

    /// An option word, upper-cased for comparison (Redis compares options case-insensitively).
    func option(_ index: Int) -> String { string(index).uppercased() }

    /// Redis's `getLongLongFromObject`: a strict decimal 64-bit integer.
    func integer(_ index: Int) -> Int64? {
        RESPParser.parseStrictInteger(all[index]).map(Int64.init)
    }
}

/// What a parsed command turns into: a reply at once, or a call to the KV service whose reply
/// comes later, in order.
enum CommandOutcome: Sendable {
    case reply(RESPValue)
    /// QUIT: reply, then close once every earlier reply has been written.
    case replyThenClose(RESPValue)
    case call(KVCall)
}

/// An asynchronous call to the KV service on behalf of one command.
struct KVCall: Sendable {
    /// What the call touches, which decides whether it may run while earlier commands of the same
    /// connection are still running: the store may reorder concurrent calls, so two calls that
    /// touch the same key (or a whole-keyspace call and anything) run one after the other.
    enum Access: Sendable, Hashable {
        case read(Set<Bytes>)
        case write(Set<Bytes>)
        /// FLUSHDB, DBSIZE, SCAN, KEYS: ordered after everything before and before everything after.
        case barrier
    }

    let access: Access
    let run: @Sendable (any KVService) async -> RESPValue

    var isWrite: Bool {
        switch access {
        case .write, .barrier: return true
        case .read: return false
        }
    }

    /// The reply when the service does not answer within the command timeout.
    func timeoutReply(milliseconds: Int64) -> RESPValue {
        isWrite
            ? .error("UNCERTAIN timed out after \(milliseconds) ms; the write may or may not have been applied")
            : .error("TRYAGAIN timed out after \(milliseconds) ms; nothing was changed, retry")
    }

    static func write(
        _ write: KVWrite, access: Access? = nil, reply: @escaping @Sendable (KVWriteResult) -> RESPValue
    ) -> CommandOutcome {
        .call(KVCall(access: access ?? .write(Set(write.keys))) { service in
            do throws(KVError) {
                return reply(try await service.write(write))
            } catch {
                return Replies.failure(error, isWrite: true)
            }
        })
    }

    static func read(
        _ read: KVRead, access: Access, reply: @escaping @Sendable (KVReadResult) -> RESPValue
    ) -> CommandOutcome {
        .call(KVCall(access: access) { service in
            do throws(KVError) {
                return reply(try await service.read(read))
            } catch {
                return Replies.failure(error, isWrite: false)
            }
        })
    }

    static func status(reply: @escaping @Sendable (ClusterStatus) -> RESPValue) -> CommandOutcome {
        .call(KVCall(access: .read([])) { service in reply(await service.status()) })
    }
}

/// Redis's error replies, word for word where Redis has one.
enum Replies {
    static let syntaxError = RESPValue.error("ERR syntax error")
    static let notAnInteger = RESPValue.error("ERR value is not an integer or out of range")
    static let overflow = RESPValue.error("ERR increment or decrement would overflow")
    static let noAuthentication = RESPValue.error("NOAUTH Authentication required.")
    static let wrongPassword = RESPValue.error("WRONGPASS invalid username-password pair or user is disabled.")
    static let crossRegion = RESPValue.error(
        "CROSSSLOT Keys in request don't lie in one Divan region; multi-key writes are atomic only within one region"
    )
    /// A result whose shape does not belong to the command: a broken store, never a client mistake.
    static let unexpectedResult = RESPValue.error("ERR unexpected result from the store")

    static func wrongArity(_ name: String) -> RESPValue {
        .error("ERR wrong number of arguments for '\(name)' command")
    }

    static func invalidExpireTime(_ command: String) -> RESPValue {
        .error("ERR invalid expire time in '\(command)' command")
    }

    static func unknownSubcommand(_ subcommand: String, of command: String) -> RESPValue {
        .error("ERR unknown subcommand '\(subcommand.prefix(128))'. Try \(command.uppercased()) HELP.")
    }

    /// Redis's message: the name and the first arguments, quoted, up to about 128 characters.
    static func unknownCommand(_ arguments: Arguments) -> RESPValue {
        var quoted = ""
        var index = 1
        while index < arguments.count, quoted.count < 128 {
            quoted += "'\(arguments.string(index).prefix(128 - quoted.count))' "
            index += 1
        }
        return .error("ERR unknown command '\(arguments.string(0).prefix(128))', with args beginning with: \(quoted)")
    }

    static func refusal(_ refusal: WriteRefusal) -> RESPValue {
        switch refusal {
        case .notAnInteger: return notAnInteger
        case .overflow: return overflow
        case .crossRegion: return crossRegion
        }
    }

    /// A failed call. No leader and the like become TRYAGAIN or CLUSTERDOWN, which client libraries
    /// treat as retryable; an indefinite write failure gets its own prefix so no one mistakes it for
    /// "nothing happened".
    static func failure(_ error: KVError, isWrite: Bool) -> RESPValue {
        switch error {
        case .definite(let reason):
            switch reason {
            case .notLeader, .noLeader, .regionMoved:
                return .error("TRYAGAIN \(error); nothing was changed, retry shortly")
            case .noRegion, .shuttingDown, .failed, .unreachable:
                return .error("CLUSTERDOWN \(error)")
            case .tooLarge, .invalid:
                return .error("ERR \(error)")
            }
        case .indefinite(let reason):
            if isWrite { return .error("UNCERTAIN \(error)") }
            let what: String
            switch reason {
            case .timedOut: what = "timed out"
            case .connectionLost: what = "lost its connection"
            case .leadershipLost: what = "lost its leader"
            case .resultUnknown: what = "found its region superseded"
            }
            return .error("TRYAGAIN the read \(what); nothing was changed, retry")
        }
    }
}
