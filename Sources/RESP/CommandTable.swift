import KVWire

/// One command Divan serves: what COMMAND reports about it and the function that plans it.
struct CommandSpec: Sendable {
    typealias Handler = @Sendable (Arguments, inout Session, ServerContext) -> CommandOutcome

    let name: String
    /// Redis's arity: exactly `n` arguments (name included) when positive, at least `-n` when negative.
    let arity: Int
    let flags: [String]
    let firstKey: Int
    let lastKey: Int
    let keyStep: Int
    let group: String
    let summary: String
    /// Runs before authentication (AUTH, HELLO, QUIT), as Redis's `no-auth` flag.
    let allowsUnauthenticated: Bool
    let handler: Handler

    init(
        _ name: String, arity: Int, flags: [String], keys: (first: Int, last: Int, step: Int) = (0, 0, 0),
        group: String, summary: String, allowsUnauthenticated: Bool = false, handler: @escaping Handler
    ) {
        self.name = name
        self.arity = arity
        self.flags = flags
        self.firstKey = keys.first
        self.lastKey = keys.last
        self.keyStep = keys.step
        self.group = group
        self.summary = summary
        self.allowsUnauthenticated = allowsUnauthenticated
        self.handler = handler
    }

    func acceptsArgumentCount(_ count: Int) -> Bool {
        arity >= 0 ? count == arity : count >= -arity
    }

    /// COMMAND INFO's ten fields (Redis 7).
    var info: RESPValue {
        .array([
            .bulk(name), .integer(Int64(arity)), .array(flags.map { .simple($0) }),
            .integer(Int64(firstKey)), .integer(Int64(lastKey)), .integer(Int64(keyStep)),
            .array([.simple("@\(group)")]), .array([]), .array([]), .array([]),
        ])
    }

    /// COMMAND DOCS's entry.
    var docs: RESPValue {
        .map([("summary", .bulk(summary)), ("since", .bulk("1.0.0")), ("group", .bulk(group))])
    }
}

/// Every command, looked up by its lower-cased name.
enum CommandTable {
    static let all: [CommandSpec] = connectionCommands + keyCommands + divanCommands

    static let byName: [String: CommandSpec] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })

    /// Turns one client command into its outcome: Redis's checks first (unknown command, arity,
    /// authentication), then the command itself.
    static func plan(_ arguments: Arguments, session: inout Session, server: ServerContext) -> CommandOutcome {
        guard let spec = byName[arguments.string(0).lowercased()] else {
            return .reply(Replies.unknownCommand(arguments))
        }
        guard spec.acceptsArgumentCount(arguments.count) else {
            return .reply(Replies.wrongArity(spec.name))
        }
        if !session.isAuthenticated, !spec.allowsUnauthenticated {
            return .reply(Replies.noAuthentication)
        }
        return spec.handler(arguments, &session, server)
    }
}
