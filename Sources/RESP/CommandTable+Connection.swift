#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import KVWire

extension CommandTable {
    /// The Redis version Divan reports. Client libraries read it to decide which commands exist;
    /// the commands Divan serves are those of this version plus SET IFEQ/IFNE and DELEX of 8.4.
    static let compatibleRedisVersion = "7.2.0"

    static let connectionCommands: [CommandSpec] = [
        CommandSpec("ping", arity: -1, flags: ["fast"], group: "connection",
                    summary: "Returns the server's liveliness response.") { arguments, session, _ in
            switch arguments.count {
            case 1: return .reply(.simple("PONG"))
            case 2: return .reply(.bulk(arguments[1]))
            default: return .reply(Replies.wrongArity("ping"))
            }
        },
        CommandSpec("echo", arity: 2, flags: ["fast"], group: "connection",
                    summary: "Returns the given string.") { arguments, _, _ in
            .reply(.bulk(arguments[1]))
        },
        CommandSpec("hello", arity: -1, flags: ["noauth", "fast"], group: "connection",
                    summary: "Handshakes with the server: protocol version, AUTH and SETNAME.",
                    allowsUnauthenticated: true, handler: ConnectionCommands.hello),
        CommandSpec("auth", arity: -2, flags: ["noauth", "fast"], group: "connection",
                    summary: "Authenticates the connection.", allowsUnauthenticated: true) { arguments, session, server in
            guard arguments.count <= 3 else { return .reply(Replies.syntaxError) }
            let user = arguments.count == 3 ? arguments.string(1) : "default"
            return .reply(ConnectionCommands.authenticate(user: user, password: arguments[arguments.count - 1], session: &session, server: server))
        },
        CommandSpec("select", arity: 2, flags: ["fast"], group: "connection",
                    summary: "Changes the selected database; Divan has only database 0.") { arguments, _, _ in
            guard let index = arguments.integer(1) else { return .reply(Replies.notAnInteger) }
            return .reply(index == 0 ? .ok : .error("ERR DB index is out of range"))
        },
        CommandSpec("quit", arity: -1, flags: ["noauth", "fast"], group: "connection",
                    summary: "Closes the connection.", allowsUnauthenticated: true) { _, _, _ in
            .replyThenClose(.ok)
        },
        CommandSpec("client", arity: -2, flags: [], group: "connection",
                    summary: "CLIENT ID, SETNAME, GETNAME, INFO and SETINFO.", handler: ConnectionCommands.client),
        CommandSpec("command", arity: -1, flags: [], group: "server",
                    summary: "Returns details about commands: COUNT, DOCS, INFO, LIST.", handler: ConnectionCommands.command),
        CommandSpec("config", arity: -2, flags: [], group: "server",
                    summary: "CONFIG GET of the settings clients ask for.", handler: ConnectionCommands.config),
        CommandSpec("info", arity: -1, flags: [], group: "server",
                    summary: "Returns information about the server and the Divan cluster.", handler: ConnectionCommands.info),
        CommandSpec("time", arity: 1, flags: ["fast"], group: "server",
                    summary: "Returns the server time.") { _, _, server in
            let now = server.now()
            return .reply(.array([.bulk(String(now / 1000)), .bulk(String(now % 1000 * 1000))]))
        },
    ]
}

/// Connection and server commands whose parsing needs more than a few lines.
enum ConnectionCommands {
    static func authenticate(user: String, password: Bytes, session: inout Session, server: ServerContext) -> RESPValue {
        guard let expected = server.options.password else {
            return .error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
        }
        guard user == "default", password == Array(expected.utf8) else { return Replies.wrongPassword }
        session.isAuthenticated = true
        return .ok
    }

    /// HELLO [protover [AUTH username password] [SETNAME clientname]]: everything is checked before
    /// anything changes, as in Redis.
    @Sendable static func hello(_ arguments: Arguments, _ session: inout Session, _ server: ServerContext) -> CommandOutcome {
        var version = session.version
        if arguments.count > 1 {
            guard let requested = arguments.integer(1) else {
                return .reply(.error("ERR Protocol version is not an integer or out of range"))
            }
            guard let supported = ProtocolVersion(rawValue: Int(requested)) else {
                return .reply(.error("NOPROTO unsupported protocol version"))
            }
            version = supported
        }
        var credentials: (user: String, password: Bytes)?
        var name: Bytes?
        var index = 2
        while index < arguments.count {
            let option = arguments.option(index)
            if option == "AUTH", index + 2 < arguments.count {
                credentials = (arguments.string(index + 1), arguments[index + 2])
                index += 3
            } else if option == "SETNAME", index + 1 < arguments.count {
                name = arguments[index + 1]
                index += 2
            } else {
                return .reply(.error("ERR Syntax error in HELLO option '\(arguments.string(index))'"))
            }
        }
        if let credentials {
            let reply = authenticate(user: credentials.user, password: credentials.password, session: &session, server: server)
            guard reply == .ok else { return .reply(reply) }
        }
        guard session.isAuthenticated else {
            return .reply(.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"))
        }
        if let name {
            guard isValidClientName(name) else { return .reply(invalidClientName) }
            session.name = name.isEmpty ? nil : name
        }
        session.version = version
        return .reply(.map([
            ("server", .bulk("redis")), ("version", .bulk(CommandTable.compatibleRedisVersion)),
            ("proto", .integer(Int64(version.rawValue))), ("id", .integer(Int64(session.id))),
            ("mode", .bulk("standalone")), ("role", .bulk("master")), ("modules", .array([])),
        ]))
    }

    static let invalidClientName = RESPValue.error("ERR Client names cannot contain spaces, newlines or special characters.")

    static func isValidClientName(_ name: Bytes) -> Bool {
        name.allSatisfy { $0 >= UInt8(ascii: "!") && $0 <= UInt8(ascii: "~") }
    }

    @Sendable static func client(_ arguments: Arguments, _ session: inout Session, _ server: ServerContext) -> CommandOutcome {
        let subcommand = arguments.string(1).lowercased()
        func arity(_ expected: Int) -> Bool { arguments.count == expected }
        switch subcommand {
        case "id":
            guard arity(2) else { return .reply(Replies.wrongArity("client|id")) }
            return .reply(.integer(Int64(session.id)))
        case "getname":
            guard arity(2) else { return .reply(Replies.wrongArity("client|getname")) }
            return .reply(session.name.map(RESPValue.bulk) ?? .null)
        case "setname":
            guard arity(3) else { return .reply(Replies.wrongArity("client|setname")) }
            guard isValidClientName(arguments[2]) else { return .reply(invalidClientName) }
            session.name = arguments[2].isEmpty ? nil : arguments[2]
            return .reply(.ok)
        case "setinfo":
            // Client libraries announce their name and version; Divan has no use for it but says OK.
            guard arity(4) else { return .reply(Replies.wrongArity("client|setinfo")) }
            guard ["LIB-NAME", "LIB-VER"].contains(arguments.option(2)) else {
                return .reply(.error("ERR Unrecognized option '\(arguments.string(2))'"))
            }
            return .reply(.ok)
        case "info":
            guard arity(2) else { return .reply(Replies.wrongArity("client|info")) }
            return .reply(.verbatim(clientLine(session, server: server)))
        default:
            return .reply(Replies.unknownSubcommand(arguments.string(1), of: "client"))
        }
    }

    static func clientLine(_ session: Session, server: ServerContext) -> String {
        let age = max(0, server.now() - session.connectedAt) / 1000
        let name = session.name.map { String(decoding: $0, as: UTF8.self) } ?? ""
        return "id=\(session.id) addr=\(session.remoteAddress) laddr=\(session.localAddress) fd=-1 name=\(name) age=\(age) idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|info user=default redir=-1 resp=\(session.version.rawValue)\n"
    }

    @Sendable static func command(_ arguments: Arguments, _ session: inout Session, _ server: ServerContext) -> CommandOutcome {
        guard arguments.count > 1 else { return .reply(.array(CommandTable.all.map(\.info))) }
        let named = arguments.all.dropFirst(2).map { String(decoding: $0, as: UTF8.self).lowercased() }
        switch arguments.string(1).lowercased() {
        case "count":
            guard arguments.count == 2 else { return .reply(Replies.wrongArity("command|count")) }
            return .reply(.integer(Int64(CommandTable.all.count)))
        case "list":
            return .reply(.array(CommandTable.all.map { .bulk($0.name) }))
        case "info":
            let specs = named.isEmpty ? CommandTable.all.map(Optional.some) : named.map { CommandTable.byName[$0] }
            return .reply(.array(specs.map { $0?.info ?? .null }))
        case "docs":
            let specs = named.isEmpty ? CommandTable.all : named.compactMap { CommandTable.byName[$0] }
            return .reply(.map(specs.map { RESPValue.MapEntry(key: .bulk($0.name), value: $0.docs) }))
        default:
            return .reply(Replies.unknownSubcommand(arguments.string(1), of: "command"))
        }
    }

    /// The settings clients and tools read at startup, with the values that describe Divan.
    static func configuration(_ server: ServerContext) -> [(String, String)] {
        let limits = server.options.limits
        return [
            ("appendfsync", "always"), ("appendonly", "yes"), ("databases", "1"), ("maxclients", "10000"),
            ("maxmemory", "0"), ("maxmemory-policy", "noeviction"), ("save", ""), ("timeout", "0"),
            ("cluster-enabled", "no"),
            ("proto-max-bulk-len", String(limits.maximumBulkLength)),
            ("client-query-buffer-limit", String(limits.maximumQueryBuffer)),
        ]
    }

    @Sendable static func config(_ arguments: Arguments, _ session: inout Session, _ server: ServerContext) -> CommandOutcome {
        guard arguments.option(1) == "GET" else {
            return .reply(Replies.unknownSubcommand(arguments.string(1), of: "config"))
        }
        guard arguments.count >= 3 else { return .reply(Replies.wrongArity("config|get")) }
        let patterns = arguments.all.dropFirst(2).map { GlobPattern(Array(String(decoding: $0, as: UTF8.self).lowercased().utf8)) }
        let matching = configuration(server).filter { entry in patterns.contains { $0.matches(Array(entry.0.utf8)) } }
        return .reply(.map(matching.map { ($0.0, RESPValue.bulk($0.1)) }))
    }

    /// INFO [section ...]: server, clients, replication, keyspace and divan; `all`, `everything` and
    /// `default` name them all.
    @Sendable static func info(_ arguments: Arguments, _ session: inout Session, _ server: ServerContext) -> CommandOutcome {
        let every = ["server", "clients", "replication", "keyspace", "divan"]
        var wanted = Set(arguments.all.dropFirst().map { String(decoding: $0, as: UTF8.self).lowercased() })
        if wanted.isEmpty || !wanted.isDisjoint(with: ["all", "everything", "default"]) { wanted = Set(every) }
        let sections = every.filter(wanted.contains)
        let clients = server.clients.connectedCount
        let uptime = max(0, server.now() - server.startedAt) / 1000
        return KVCall.status { status in
            var text = ""
            for section in sections {
                if !text.isEmpty { text += "\r\n" }
                text += infoSection(section, status: status, clients: clients, uptime: uptime)
            }
            return .verbatim(text)
        }
    }

    private static func infoSection(_ section: String, status: ClusterStatus, clients: Int, uptime: Int64) -> String {
        var lines: [String]
        switch section {
        case "server":
            lines = [
                "# Server", "redis_version:\(CommandTable.compatibleRedisVersion)", "divan_node:\(status.node)",
                "redis_mode:standalone", "arch_bits:64", "process_id:\(getpid())",
                "uptime_in_seconds:\(uptime)", "uptime_in_days:\(uptime / 86_400)",
            ]
        case "clients":
            lines = ["# Clients", "connected_clients:\(clients)"]
        case "replication":
            // Every node takes writes (they are forwarded to the region leader), so to a Redis client
            // each one is a master; the Raft role and leader are reported beside it.
            let first = status.regions.first
            lines = [
                "# Replication", "role:master", "connected_slaves:0",
                "raft_role:\(first?.role ?? "none")", "raft_leader:\(first?.leader.map(String.init) ?? "none")",
            ]
        case "keyspace":
            let keys = status.regions.reduce(UInt64(0)) { $0 + $1.keys }
            lines = ["# Keyspace"]
            if keys > 0 { lines.append("db0:keys=\(keys),expires=0,avg_ttl=0") }
        default:
            lines = ["# Divan", "node:\(status.node)", "regions:\(status.regions.count)"]
            for region in status.regions {
                let lag = region.commitIndex >= region.appliedIndex ? region.commitIndex - region.appliedIndex : 0
                lines.append(
                    "region_\(region.region.id):role=\(region.role),leader=\(region.leader.map(String.init) ?? "none"),"
                        + "term=\(region.term),commit_index=\(region.commitIndex),applied_index=\(region.appliedIndex),"
                        + "apply_lag=\(lag),keys=\(region.keys),bytes=\(region.bytes)"
                )
            }
        }
        return lines.joined(separator: "\r\n") + "\r\n"
    }
}
