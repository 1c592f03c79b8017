import Foundation
import KVWire
import Testing

@testable import RESP

/// redis-py (Debian's python3-redis) against a RESPServer in this process.
@Suite("redis-py against an in-process RESPServer")
struct RedisPyTests {
    @Test("every command through redis-py, errors, a 10,000-command pipeline, malformed streams")
    func redisPy() async throws {
        let result = try await withServer { server in
            try await runProgram([debianPython, clientScripts.appendingPathComponent("redis_py_check.py").path, "\(server.port)"])
        }
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "ok\n")
    }
}

/// A KV service that fails every call in a chosen way: the cluster states the front end must turn
/// into errors rather than hangs.
private struct FailingService: KVService {
    enum Mode: Sendable { case fail(KVError), hang }

    let mode: Mode

    func write(_ write: KVWrite) async throws(KVError) -> KVWriteResult {
        try await fail()
    }

    func read(_ read: KVRead) async throws(KVError) -> KVReadResult {
        try await fail()
    }

    func status() async -> ClusterStatus {
        ClusterStatus(node: 1, regions: [])
    }

    private func fail() async throws(KVError) -> Never {
        switch mode {
        case .fail(let error):
            throw error
        case .hang:
            // Longer than any test: the server's command timeout must answer first (and cancels this).
            try? await Task.sleep(for: .seconds(3600))
            throw .indefinite(.timedOut)
        }
    }
}

@Suite("Cluster states that cannot serve, through redis-cli")
struct UnavailableClusterTests {
    private func replies(_ mode: FailingService.Mode, timeout: Int64 = 10_000, _ script: String) async throws -> String {
        try await withServer(service: FailingService(mode: mode), options: RESPServerOptions(commandTimeout: timeout)) { server in
            withoutLatencyLines(try await runProgram([redisCLI, "--no-raw", "-p", "\(server.port)"], input: script).stdout)
        }
    }

    @Test("no leader yet: TRYAGAIN for reads and writes; PING still answers")
    func noLeader() async throws {
        let output = try await replies(.fail(.definite(.noLeader(region: 1))), "SET k v\nGET k\nPING\n")
        #expect(output == """
            (error) TRYAGAIN region 1 has no leader yet; nothing was changed, retry shortly
            (error) TRYAGAIN region 1 has no leader yet; nothing was changed, retry shortly
            PONG

            """)
    }

    @Test("an indefinite write failure says the write may or may not have been applied")
    func indefinite() async throws {
        let output = try await replies(.fail(.indefinite(.leadershipLost)), "INCR n\n")
        #expect(output == "(error) UNCERTAIN leadership lost; the write may or may not have been applied\n")
    }

    @Test("a service that never answers: the command timeout answers, in order, and the connection lives on")
    func hang() async throws {
        let output = try await replies(.hang, timeout: 200, "SET k v\nGET k\nPING\n")
        #expect(output == """
            (error) UNCERTAIN timed out after 200 ms; the write may or may not have been applied
            (error) TRYAGAIN timed out after 200 ms; nothing was changed, retry
            PONG

            """)
    }
}
