import DivanServer
import DivanTestSupport
import Foundation
import KVClient
import KVWire
import Testing

/// The Swift `KVClient` against three real `divan server` processes: it routes by region after the
/// regions split, follows leadership across a SIGKILL of a leader, and reports every failure as
/// definite or indefinite.
@Suite(.serialized) struct KVClientProcessTests {
    final class Cluster {
        let directory = NSTemporaryDirectory() + "divan-client-\(UUID().uuidString)"
        var raftPorts: [Int] = []
        var httpPorts: [Int] = []
        var respPorts: [Int] = []
        var processes: [Int: Process] = [:]

        init() throws {
            for _ in 0..<3 {
                raftPorts.append(try freeLoopbackPort())
                httpPorts.append(try freeLoopbackPort())
                respPorts.append(try freeLoopbackPort())
            }
        }

        deinit {
            for process in processes.values where process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
            try? FileManager.default.removeItem(atPath: directory)
        }

        func start(_ id: Int) throws {
            let process = Process()
            process.executableURL = divanExecutable
            let peers = (1...3).map { "\($0)=127.0.0.1:\(raftPorts[$0 - 1])" }.joined(separator: ",")
            process.arguments = [
                "server", "--id", "\(id)", "--listen", "127.0.0.1:\(raftPorts[id - 1])",
                "--http", "127.0.0.1:\(httpPorts[id - 1])", "--resp", "127.0.0.1:\(respPorts[id - 1])", "--peers", peers,
                "--data-dir", "\(directory)/node-\(id)", "--election-timeout-ms", "500", "--split-keys", "60",
                "--log-level", "warning",
            ]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            processes[id] = process
        }

        func kill9(_ id: Int) {
            guard let process = processes[id] else { return }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }

        var client: KVClient {
            KVClient(
                nodes: Dictionary(uniqueKeysWithValues: (1...3).map { (UInt64($0), KVClient.Endpoint(host: "127.0.0.1", port: respPorts[$0 - 1])) }),
                owner: "test", retryWindow: .seconds(20))
        }

        func waitUntil(_ seconds: Double = 30, _ condition: () async -> Bool) async throws {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if await condition() { return }
                try await Task.sleep(for: .milliseconds(50))
            }
            Issue.record("condition not met within \(seconds) s")
            throw CancellationError()
        }
    }

    func bytes(_ text: String) -> Bytes { Array(text.utf8) }

    @Test func routesAcrossSplitsAndSurvivesALeaderKill() async throws {
        let cluster = try Cluster()
        for id in 1...3 { try cluster.start(id) }
        let client = cluster.client
        try await cluster.waitUntil { (try? await client.read(.get(key: [1]))) != nil }

        for n in 0..<200 {
            let result = try await client.write(.set(key: bytes(String(format: "key%03d", n)), value: bytes("\(n)"), condition: .always, expiry: .none, returnPrevious: false))
            #expect(result == .set(performed: true, previous: nil))
        }
        try await cluster.waitUntil { await client.status().regions.count >= 3 }
        #expect(try await client.read(.count(start: [], end: nil)) == .count(200))
        guard case .pairs(let last) = try await client.read(.scan(start: [], end: nil, limit: 3, reverse: true)) else {
            Issue.record("no scan result"); return
        }
        #expect(last.map(\.key) == [bytes("key199"), bytes("key198"), bytes("key197")])
        #expect(try await client.write(.set(key: bytes("key001"), value: bytes("x"), condition: .ifEqual(bytes("1")), expiry: .none, returnPrevious: false))
            == .set(performed: true, previous: nil))
        #expect(try await client.write(.incrementBy(key: bytes("key001"), delta: 1)) == .refused(.notAnInteger))
        guard case .sequence(let start, let end) = try await client.write(.nextSequence(key: bytes("seq"), count: 10)) else {
            Issue.record("no sequence"); return
        }
        #expect(end - start == 10)

        // Kill the leader of the first region: the client finds the new one; every write it was told
        // succeeded is there afterwards, and every failure says which kind it is.
        let status = await client.status()
        let leader = try #require(status.regions.first?.leader)
        cluster.kill9(Int(leader))
        var acknowledged: [String: String] = [:]
        for n in 0..<40 {
            let key = String(format: "key%03d", n)
            do throws(KVError) {
                _ = try await client.write(.set(key: bytes(key), value: bytes("after\(n)"), condition: .always, expiry: .none, returnPrevious: false))
                acknowledged[key] = "after\(n)"
            } catch {
                #expect(!error.isDefinite || "\(error)".contains("unreachable") || "\(error)".contains("leader"), "\(error)")
            }
        }
        #expect(acknowledged.count >= 30, "writes go on once a new leader is elected")
        try cluster.start(Int(leader))
        for (key, value) in acknowledged {
            #expect(try await client.read(.get(key: bytes(key))) == .value(bytes(value)))
        }
    }
}
