import DivanServer
import Foundation
import Testing

/// Divan KV over real `divan server` processes with RocksDB, loaded through RESP by redis-py
/// (`Scripts/kv_load.py`): regions split again and again while a node is killed with SIGKILL in the
/// middle of splits and snapshots, and a new node joins the loaded cluster and catches up from
/// snapshots. Afterwards every acknowledged key reads back with its value on every node.
@Suite(.serialized) struct KVClusterProcessTests {
    /// The journal of a background `kv_load.py write`, and the file that stops it.
    struct Load {
        let program: ClientProgram
        let journal: String
        let stopFile: String

        init(ports: [Int], pipeline: Int, reads: Bool = false, directory: String) throws {
            journal = "\(directory)/journal-\(UUID().uuidString)"
            stopFile = journal + ".stop"
            program = try ClientProgram(
                script: "kv_load.py",
                ["write", ports.map(String.init).joined(separator: ","), journal, stopFile, "--pipeline", "\(pipeline)"]
                    + (reads ? ["--reads"] : []),
                directory: directory)
        }

        /// Journal lines of one kind (`ack`, `maybe`, `fail`, `read-ok`, ...).
        func lines(_ kind: String) -> [Substring] {
            let text = (try? String(contentsOfFile: journal, encoding: .utf8)) ?? ""
            return text.split(separator: "\n").filter { $0.hasPrefix(kind + " ") }
        }

        /// Asks the writer to stop and waits until it exits; its status must be 0.
        func stop() async throws {
            _ = FileManager.default.createFile(atPath: stopFile, contents: nil)
            let status = try await program.wait(60)
            #expect(status == 0, "\(program.errors)")
        }
    }

    func regionIDs(_ servers: Servers, on id: Int) async -> [UInt64] {
        (await servers.regions(on: id) ?? []).map(\.id).sorted()
    }

    @Test func everyAcknowledgedKeySurvivesAKillDuringSplitsAndSnapshots() async throws {
        let servers = try Servers(count: 3, arguments: ["--engine", "rocksdb", "--split-keys", "250"])
        defer { servers.stopAll() }
        for id in 1...3 { try servers.start(id, joining: false) }
        try await servers.waitUntilReady(1...3)

        let load = try Load(ports: servers.respPorts, pipeline: 50, directory: servers.directory)
        try await servers.waitUntil(60, "a first split") { await regionIDs(servers, on: 1).count >= 2 }
        for id in 1...2 { #expect(await servers.request(id, "POST", "/snapshot")?.0 == 200) }
        // Node 3 dies while it snapshots every group and applies the splits the load keeps causing.
        let port = servers.httpPorts[2]
        let snapshot = Task { await NodeHTTPClient.request(port: port, "POST", "/snapshot") }
        try await Task.sleep(for: .milliseconds(20))
        servers.kill9(3)
        _ = await snapshot.value
        let regionsAtKill = await regionIDs(servers, on: 1).count
        try await servers.waitUntil(60, "two more splits while node 3 is down") {
            await regionIDs(servers, on: 1).count >= regionsAtKill + 2
        }
        // Compacted logs: node 3 must learn some of what it missed from snapshots.
        for id in 1...2 { #expect(await servers.request(id, "POST", "/snapshot")?.0 == 200) }
        try servers.start(3, joining: false)
        let acknowledgedAtRestart = load.lines("ack").count
        try await servers.waitUntil(60, "writes and splits after the restart") {
            guard load.lines("ack").count >= acknowledgedAtRestart + 500 else { return false }
            return await regionIDs(servers, on: 1).count >= 5
        }
        try await load.stop()
        try await servers.waitUntil(60, "node 3 holds every region and is ready (\(servers.logTail(3)))") {
            let expected = await regionIDs(servers, on: 1)
            guard await regionIDs(servers, on: 3) == expected else { return false }
            return await servers.isReady(3)
        }

        #expect(load.lines("unexpected").isEmpty, "\(load.lines("unexpected").prefix(5))")
        let verified = try await ClientProgram.run(
            script: "kv_load.py", ["verify", servers.respPorts.map(String.init).joined(separator: ","), load.journal],
            directory: servers.directory)
        #expect(verified.status == 0, "\(verified.output)\n\(servers.logTail(3))")
        // The last acknowledged key through redis-cli and through HTTP, on every node.
        let last = try #require(load.lines("ack").last?.split(separator: " "))
        for id in 1...3 {
            let cli = try await ClientProgram.redisCLI(["-p", "\(servers.respPorts[id - 1])", "GET", String(last[1])], directory: servers.directory)
            #expect(cli == String(last[2]), "redis-cli GET on node \(id)")
            #expect(await servers.request(id, "GET", "/kv/\(last[1])")?.1 == String(last[2]), "HTTP GET on node \(id)")
        }
    }

    @Test func aJoiningNodeCatchesUpFromSnapshotsAndReadsLinearizably() async throws {
        let servers = try Servers(count: 4, arguments: ["--engine", "rocksdb", "--split-keys", "300"])
        defer { servers.stopAll() }
        for id in 1...3 { try servers.start(id, joining: false) }
        try servers.start(4, joining: true)
        try await servers.waitUntilReady(1...3)

        let load = try Load(ports: Array(servers.respPorts.prefix(3)), pipeline: 50, directory: servers.directory)
        try await servers.waitUntil(60, "two splits") { await regionIDs(servers, on: 1).count >= 3 }
        try await load.stop()
        for id in 1...3 { #expect(await servers.request(id, "POST", "/snapshot")?.0 == 200) }
        let compactedTo = try #require(await servers.number("first_index", on: 1))
        #expect(compactedTo > 1, "node 1's placement log was compacted")

        #expect(await servers.request(2, "POST", "/membership", body: "add-voter 4\n")?.0 == 200)
        try await servers.waitUntil(60, "node 4 holds every region and is ready (\(servers.logTail(4)))") {
            let expected = await regionIDs(servers, on: 1)
            guard await regionIDs(servers, on: 4) == expected else { return false }
            return await servers.isReady(4)
        }
        #expect((await servers.number("first_index", on: 4) ?? 0) > 1, "node 4 started from a snapshot")
        #expect(await servers.voters(on: 1) == "[1, 2, 3, 4]")
        let verified = try await ClientProgram.run(
            script: "kv_load.py", ["verify", "\(servers.respPorts[3])", load.journal], directory: servers.directory)
        #expect(verified.status == 0, "\(verified.output)\n\(servers.logTail(4))")
        // Write on the founders, read on the new node: always the value just written.
        let founders = servers.respPorts.prefix(3).map(String.init).joined(separator: ",")
        let reads = try await ClientProgram.run(
            script: "kv_clients.py", ["linearizable", founders, "\(servers.respPorts[3])", "100"], directory: servers.directory)
        #expect(reads.status == 0 && reads.output == "ok\n", "\(reads.output)")
    }
}
