import Foundation
import Testing

/// Real Redis clients (Debian's redis-cli and redis-py, driven by `Scripts/`) against real
/// 3-node `divan server` clusters: any node takes any command, learners serve linearizable reads,
/// a lock holder paused past its lease loses the lock to a higher fencing token, and a leader
/// killed under a redis-py loop costs no acknowledged write and hangs no command.
@Suite(.serialized) struct RedisClientProcessTests {
    @Test func redisCLIAndRedisPyTalkToEveryNodeAndALearner() async throws {
        let servers = try Servers(count: 4, learners: [4])
        defer { servers.stopAll() }
        for id in 1...4 { try servers.start(id, joining: false) }
        try await servers.waitUntilReady(1...4)
        let ports = servers.respPorts

        let python = try await ClientProgram.run(
            script: "kv_clients.py", ["clients", "\(ports[0])", "\(ports[1])", "\(ports[3])"], directory: servers.directory)
        #expect(python.status == 0 && python.output == "ok\n", "\(python.output)")
        let reads = try await ClientProgram.run(
            script: "kv_clients.py", ["linearizable", "\(ports[0]),\(ports[1]),\(ports[2])", "\(ports[3])", "100"],
            directory: servers.directory)
        #expect(reads.status == 0 && reads.output == "ok\n", "\(reads.output)")

        func cli(_ port: Int, _ arguments: [String], input: String = "") async throws -> String {
            try await ClientProgram.redisCLI(["-p", "\(port)"] + arguments, input: input, directory: servers.directory)
        }
        #expect(try await cli(ports[2], ["SET", "cli:greeting", "merhaba"]) == "OK")
        #expect(try await cli(ports[0], ["GET", "cli:greeting"]) == "merhaba")
        #expect(try await cli(ports[3], ["GET", "cli:greeting"]) == "merhaba", "redis-cli on the learner")
        // A burst through --pipe on one node, seen on the learner.
        let commands = (0..<2_000).map { "SET cli:p:\($0) \($0)\r\n" }.joined()
        let piped = try await cli(ports[1], ["--pipe"], input: commands)
        #expect(piped.contains("errors: 0, replies: 2000"), "\(piped)")
        #expect(try await cli(ports[3], ["GET", "cli:p:1999"]) == "1999")
        // RESP3: HELLO 3's map, and redis-cli -3 reading on the learner.
        let hello = try await cli(ports[3], ["-3", "--no-raw", "HELLO", "3"])
        #expect(hello.contains("# \"proto\" => (integer) 3"), "a RESP3 map: \(hello)")
        #expect(try await cli(ports[3], ["-3", "GET", "cli:greeting"]) == "merhaba")
        #expect(try await cli(ports[3], ["-3", "--no-raw", "GET", "cli:absent"]) == "(nil)")
    }

    @Test func aLockHolderPausedPastItsLeaseLosesTheLockToAHigherFencingToken() async throws {
        let servers = try Servers(count: 3)
        defer { servers.stopAll() }
        for id in 1...3 { try servers.start(id, joining: false) }
        try await servers.waitUntilReady(1...3)

        let lease = "4000"
        let holder = try ClientProgram(script: "kv_lock.py", ["holder", "\(servers.respPorts[0])", "door", lease], directory: servers.directory)
        try await servers.waitUntil(30, "the holder to renew its lease (\(holder.output) \(holder.errors))") {
            holder.outputLines.contains("kept")
        }
        let holderToken = try #require(holder.outputLines.first.flatMap { Int($0.split(separator: " ")[1]) })
        kill(holder.process.processIdentifier, SIGSTOP)
        let stopFile = servers.directory + "/contender.stop"
        let contender = try ClientProgram(
            script: "kv_lock.py", ["contender", "\(servers.respPorts[1])", "door", lease, stopFile], directory: servers.directory)
        try await servers.waitUntil(30, "the contender to get the lock (\(contender.output) \(contender.errors))") {
            contender.outputLines.contains { $0.hasPrefix("locked ") }
        }
        #expect(contender.outputLines.first == "first None", "the lock was busy while the holder's lease ran")
        let contenderLine = try #require(contender.outputLines.first { $0.hasPrefix("locked ") })
        let contenderToken = try #require(Int(contenderLine.split(separator: " ")[1]))
        #expect(contenderToken > holderToken, "a higher fencing token")

        kill(holder.process.processIdentifier, SIGCONT)
        #expect(try await holder.wait(30) == 0, "\(holder.errors)")
        #expect(holder.outputLines.suffix(2) == ["lost None", "unlock 0"], "the old token renews and releases nothing")
        _ = FileManager.default.createFile(atPath: stopFile, contents: nil)
        #expect(try await contender.wait(30) == 0, "\(contender.errors)")
        #expect(contender.outputLines.last == "unlock 1")
    }

    @Test func aLeaderKilledUnderARedisPyLoopLosesNoAcknowledgedWrite() async throws {
        let servers = try Servers(count: 3, arguments: ["--engine", "rocksdb"])
        defer { servers.stopAll() }
        for id in 1...3 { try servers.start(id, joining: false) }
        try await servers.waitUntilReady(1...3)

        let load = try KVClusterProcessTests.Load(ports: servers.respPorts, pipeline: 1, reads: true, directory: servers.directory)
        try await servers.waitUntil(30, "writes before the kill") { load.lines("ack").count >= 150 }
        let leader = try #require(await servers.regions(on: 1)?.first?.leader)
        servers.kill9(leader)
        let acknowledgedAtKill = load.lines("ack").count
        try await servers.waitUntil(30, "writes after the kill") { load.lines("ack").count >= acknowledgedAtKill + 150 }
        try servers.start(leader, joining: false)
        try await servers.waitUntilReady(1...3)
        let acknowledgedAtRestart = load.lines("ack").count
        try await servers.waitUntil(30, "writes after the restart") { load.lines("ack").count >= acknowledgedAtRestart + 100 }
        try await load.stop()

        // Every command got a reply or an error in time, reads saw acknowledged values, and only
        // the outcomes the protocol allows occurred.
        #expect(load.lines("unexpected").isEmpty, "\(load.lines("unexpected").prefix(5))")
        #expect(load.lines("read-wrong").isEmpty, "\(load.lines("read-wrong").prefix(5))")
        let timeouts = (load.lines("maybe") + load.lines("read-error")).filter { $0.contains("TimeoutError") }
        #expect(timeouts.isEmpty, "commands that hung past the server's command timeout: \(timeouts.prefix(5))")
        #expect(load.lines("read-ok").count >= 300)
        let verified = try await ClientProgram.run(
            script: "kv_load.py", ["verify", servers.respPorts.map(String.init).joined(separator: ","), load.journal],
            directory: servers.directory)
        #expect(verified.status == 0, "\(verified.output)\n\(servers.logTail(leader))")
    }
}
