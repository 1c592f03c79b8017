import Testing

@testable import RESP

/// A story in the style of etcd-io/raft's testdata: `> COMMAND` lines, each followed by its reply
/// as redis-cli would show it; `~ advance N` moves the clock N milliseconds.
struct Scenario: CustomTestStringConvertible, Sendable {
    let name: String
    let script: String
    var password: String?

    var testDescription: String { name }

    init(_ name: String, password: String? = nil, _ script: String) {
        self.name = name
        self.script = script
        self.password = password
    }

    func run() async {
        var harness = Harness(options: RESPServerOptions(password: password))
        var expected: [String] = []
        var actual: [String] = []
        // Trailing spaces are not compared: editors strip them from the scripts.
        for line in script.split(separator: "\n").map(Self.trimmed) {
            if line.hasPrefix("> ") {
                let command = String(line.dropFirst(2))
                actual.append("> \(command)")
                actual += await harness.send(command).map(Self.trimmed)
                expected.append("> \(command)")
            } else if line.hasPrefix("~ advance ") {
                harness.clock.advance(by: Int64(line.dropFirst(10))!)
            } else if !line.isEmpty {
                expected.append(line)
            }
        }
        #expect(actual == expected, "\(name)")
    }

    private static func trimmed<S: StringProtocol>(_ line: S) -> String {
        var text = Substring(line)
        while text.first?.isWhitespace == true { text = text.dropFirst() }
        while text.last?.isWhitespace == true { text = text.dropLast() }
        return String(text)
    }
}

@Suite("Redis commands over LocalKVService")
struct CommandScenarioTests {
    static let scenarios: [Scenario] = [
        Scenario("SET and GET, NX and XX", """
            > GET k
            (nil)
            > SET k v1
            OK
            > SET k v2 NX
            (nil)
            > SET other v XX
            (nil)
            > SET k v3 XX
            OK
            > GET k
            "v3"
            > SETNX k v4
            (integer) 0
            > SETNX fresh v
            (integer) 1
            """),
        Scenario("SET GET, GETSET, GETDEL", """
            > SET k a GET
            (nil)
            > SET k b GET
            "a"
            > SET k c NX GET
            "b"
            > GET k
            "b"
            > GETSET k d
            "b"
            > GETDEL k
            "d"
            > GETDEL k
            (nil)
            > EXISTS k
            (integer) 0
            """),
        Scenario("SET IFEQ and IFNE (Redis 8.4) and DELEX", """
            > SET k v1 IFEQ v0
            (nil)
            > EXISTS k
            (integer) 0
            > SET k v1 IFNE v0
            OK
            > SET k v2 IFEQ wrong
            (nil)
            > SET k v2 IFEQ v1
            OK
            > SET k v3 IFNE v2
            (nil)
            > SET k v3 IFEQ v2 GET
            "v2"
            > DELEX k IFEQ nope
            (integer) 0
            > DELEX k IFEQ v3
            (integer) 1
            > SET k v
            OK
            > DELEX k
            (integer) 1
            > DELEX k IFEQ
            (error) ERR syntax error
            > DELEX k IFDEQ 123
            (error) ERR DELEX IFDEQ is not supported by Divan; use IFEQ
            """),
        Scenario("SET option errors", """
            > SET k v NX XX
            (error) ERR syntax error
            > SET k v NX IFEQ a
            (error) ERR syntax error
            > SET k v EX 10 PX 100
            (error) ERR syntax error
            > SET k v KEEPTTL EX 1
            (error) ERR syntax error
            > SET k v EX
            (error) ERR syntax error
            > SET k v EX ten
            (error) ERR value is not an integer or out of range
            > SET k v EX 0
            (error) ERR invalid expire time in 'set' command
            > SET k v PX -5
            (error) ERR invalid expire time in 'set' command
            > SET k v EX 9223372036854775807
            (error) ERR invalid expire time in 'set' command
            > SET k v BOGUS
            (error) ERR syntax error
            > SET k
            (error) ERR wrong number of arguments for 'set' command
            """),
        Scenario("expiry: EX, PX, EXAT, PXAT, KEEPTTL, TTL, PTTL, PERSIST, EXPIRE, PEXPIRE", """
            > SET k v EX 10
            OK
            > TTL k
            (integer) 10
            > PTTL k
            (integer) 10000
            ~ advance 2400
            > TTL k
            (integer) 8
            > SET k w KEEPTTL
            OK
            > PTTL k
            (integer) 7600
            > SET k x
            OK
            > TTL k
            (integer) -1
            > TTL missing
            (integer) -2
            > PEXPIRE k 1500
            (integer) 1
            > PTTL k
            (integer) 1500
            > PERSIST k
            (integer) 1
            > PERSIST k
            (integer) 0
            > EXPIRE k 1
            (integer) 1
            ~ advance 1000
            > GET k
            (nil)
            > EXPIRE k 5
            (integer) 0
            > SET k v PXAT 1700000010000
            OK
            > PTTL k
            (integer) 6600
            > SET k v EXAT 1700000020
            OK
            > TTL k
            (integer) 17
            > EXPIRE k -1
            (integer) 1
            > EXISTS k
            (integer) 0
            > EXPIRE k 10 NX
            (error) ERR Unsupported option NX
            > EXPIRE k soon
            (error) ERR value is not an integer or out of range
            > EXPIRE k 9223372036854775807
            (error) ERR invalid expire time in 'expire' command
            """),
        Scenario("INCR, INCRBY, DECR, DECRBY and their errors", """
            > INCR n
            (integer) 1
            > INCRBY n 10
            (integer) 11
            > DECR n
            (integer) 10
            > DECRBY n 20
            (integer) -10
            > INCRBY n x
            (error) ERR value is not an integer or out of range
            > SET s abc
            OK
            > INCR s
            (error) ERR value is not an integer or out of range
            > SET big 9223372036854775807
            OK
            > INCR big
            (error) ERR increment or decrement would overflow
            > DECRBY n -9223372036854775808
            (error) ERR decrement would overflow
            > GET n
            "-10"
            """),
        Scenario("APPEND, STRLEN, GETRANGE, TYPE", """
            > APPEND s Hello
            (integer) 5
            > APPEND s ", World"
            (integer) 12
            > STRLEN s
            (integer) 12
            > STRLEN missing
            (integer) 0
            > GETRANGE s 0 4
            "Hello"
            > GETRANGE s -5 -1
            "World"
            > GETRANGE s 5 2
            ""
            > GETRANGE s 0 100
            "Hello, World"
            > GETRANGE s -1 -5
            ""
            > GETRANGE missing 0 -1
            ""
            > GETRANGE s a 1
            (error) ERR value is not an integer or out of range
            > TYPE s
            string
            > TYPE missing
            none
            """),
        Scenario("MGET, MSET, MSETNX, DEL, UNLINK, EXISTS", """
            > MSET a 1 b 2 c 3
            OK
            > MGET a b missing c
            ["1", "2", (nil), "3"]
            > MSETNX c 9 d 4
            (integer) 0
            > GET d
            (nil)
            > MSETNX d 4 e 5
            (integer) 1
            > MSET a
            (error) ERR wrong number of arguments for 'mset' command
            > MSET a 1 b
            (error) ERR wrong number of arguments for 'mset' command
            > EXISTS a a missing
            (integer) 2
            > DEL a b missing
            (integer) 2
            > UNLINK c d
            (integer) 2
            > DBSIZE
            (integer) 1
            > FLUSHDB
            OK
            > DBSIZE
            (integer) 0
            > FLUSHDB NOW
            (error) ERR syntax error
            """),
        Scenario("SCAN with MATCH and COUNT, KEYS", """
            > MSET user:1 a user:2 b user:3 c order:1 d
            OK
            > KEYS user:*
            ["user:1", "user:2", "user:3"]
            > KEYS *:1
            ["order:1", "user:1"]
            > SCAN 0 MATCH user:* COUNT 2
            ["1", ["user:1", "user:2"]]
            > SCAN 1 MATCH user:* COUNT 2
            ["0", ["user:3"]]
            > SCAN 0 COUNT 10
            ["0", ["order:1", "user:1", "user:2", "user:3"]]
            > SCAN 0 TYPE hash
            ["0", []]
            > SCAN 99
            (error) ERR invalid cursor
            > SCAN x
            (error) ERR invalid cursor
            > SCAN 0 COUNT 0
            (error) ERR syntax error
            > SCAN 0 MATCH
            (error) ERR syntax error
            """),
        Scenario("Divan's locks, fencing tokens and sequences", """
            > DIVAN.LOCK job 10000 OWNER alice
            (integer) 1
            > DIVAN.LOCK job 10000 OWNER bob
            (nil)
            > DIVAN.KEEPALIVE job 1 10000 OWNER alice
            (integer) 1
            > DIVAN.KEEPALIVE job 1 10000 OWNER bob
            (nil)
            > DIVAN.UNLOCK job 1 OWNER bob
            (integer) 0
            > DIVAN.UNLOCK job 1 OWNER alice
            (integer) 1
            > DIVAN.LOCK job 10000 OWNER bob
            (integer) 2
            ~ advance 10001
            > DIVAN.LOCK job 500
            (integer) 3
            > DIVAN.UNLOCK job 3
            (integer) 1
            > DIVAN.LOCK job 0
            (error) ERR invalid lease time, it must be a positive number of milliseconds
            > DIVAN.LOCK job 10 OWNER
            (error) ERR syntax error
            > DIVAN.SEQUENCE ids 10
            [(integer) 0, (integer) 10]
            > DIVAN.SEQUENCE ids 5
            [(integer) 10, (integer) 15]
            > DIVAN.SEQUENCE ids -1
            (error) ERR value is not an integer or out of range
            """),
        Scenario("connection commands", """
            > PING
            PONG
            > PING hello
            "hello"
            > PING a b
            (error) ERR wrong number of arguments for 'ping' command
            > ECHO "a b"
            "a b"
            > SELECT 0
            OK
            > SELECT 1
            (error) ERR DB index is out of range
            > CLIENT ID
            (integer) 7
            > CLIENT GETNAME
            (nil)
            > CLIENT SETNAME worker-1
            OK
            > CLIENT GETNAME
            "worker-1"
            > CLIENT SETNAME "a b"
            (error) ERR Client names cannot contain spaces, newlines or special characters.
            > CLIENT SETINFO LIB-NAME redis-py
            OK
            > CLIENT KILL x
            (error) ERR unknown subcommand 'KILL'. Try CLIENT HELP.
            > CLIENT SETNAME
            (error) ERR wrong number of arguments for 'client|setname' command
            > CONFIG GET databases
            ["databases", "1"]
            > CONFIG GET max*
            ["maxclients", "10000", "maxmemory", "0", "maxmemory-policy", "noeviction"]
            > CONFIG SET maxmemory 1
            (error) ERR unknown subcommand 'SET'. Try CONFIG HELP.
            > COMMAND INFO get nosuch
            [["get", (integer) 2, [readonly, fast], (integer) 1, (integer) 1, (integer) 1, [@string], [], [], []], (nil)]
            > COMMAND DOCS ping
            ["ping", ["summary", "Returns the server's liveliness response.", "since", "1.0.0", "group", "connection"]]
            > FROB a b
            (error) ERR unknown command 'FROB', with args beginning with: 'a' 'b'
            > AUTH secret
            (error) ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?
            > HELLO 4
            (error) NOPROTO unsupported protocol version
            > HELLO 3 SETNAME n
            {"server": "redis", "version": "7.2.0", "proto": (integer) 3, "id": (integer) 7, "mode": "standalone", "role": "master", "modules": []}
            > GET missing
            (nil)
            > CLIENT GETNAME
            "n"
            > HELLO 2
            ["server", "redis", "version", "7.2.0", "proto", (integer) 2, "id", (integer) 7, "mode", "standalone", "role", "master", "modules", []]
            > QUIT
            OK
            > PING
            """),
        Scenario("a password: NOAUTH until AUTH or HELLO AUTH", password: "secret", """
            > GET k
            (error) NOAUTH Authentication required.
            > PING
            (error) NOAUTH Authentication required.
            > NOSUCH
            (error) ERR unknown command 'NOSUCH', with args beginning with:
            > HELLO 3
            (error) NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time
            > AUTH wrong
            (error) WRONGPASS invalid username-password pair or user is disabled.
            > AUTH other secret
            (error) WRONGPASS invalid username-password pair or user is disabled.
            > HELLO 2 AUTH default secret
            ["server", "redis", "version", "7.2.0", "proto", (integer) 2, "id", (integer) 7, "mode", "standalone", "role", "master", "modules", []]
            > PING
            PONG
            """),
    ]

    @Test("scenario", arguments: scenarios)
    func scenario(_ scenario: Scenario) async {
        await scenario.run()
    }

    @Test("unknown commands: Redis's message to the byte, trailing space included")
    func unknownCommand() async {
        var harness = Harness()
        #expect(await harness.send("FROB a b", "FROB") == [
            "(error) ERR unknown command 'FROB', with args beginning with: 'a' 'b' ",
            "(error) ERR unknown command 'FROB', with args beginning with: ",
        ])
    }

    @Test("INFO reports every section, with role and leader from status()")
    func info() async {
        var harness = Harness()
        _ = await harness.send("SET a 1")
        let reply = await harness.run("INFO")
        for line in ["# Server", "redis_version:7.2.0", "# Clients", "# Replication", "role:master", "raft_role:leader",
                     "raft_leader:1", "# Keyspace", "db0:keys=1,expires=0,avg_ttl=0", "# Divan", "regions:1"] {
            #expect(reply.contains(line + "\r\n"), "\(line)")
        }
        let onlyReplication = await harness.run("INFO replication")
        #expect(onlyReplication.contains("role:master") && !onlyReplication.contains("# Server"))
        let status = await harness.run("DIVAN.STATUS")
        #expect(status.hasPrefix("[\"node\", (integer) 1, \"regions\", [[\"id\", (integer) 1"))
        #expect(await harness.run("TIME") == "[\"1700000000\", \"0\"]")
    }
}
