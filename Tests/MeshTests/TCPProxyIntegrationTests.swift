import Foundation
import Mesh
import Testing

func tcpConfig(upstream: Int, extra: String = "") -> String {
    """
    listeners:
      - name: raw
        address: 127.0.0.1:0
        protocol: tcp
        cluster: backend
    \(extra)
    clusters:
      - name: backend
        endpoints: [127.0.0.1:\(upstream)]
    """
}

/// The L4 tunnel with a real TCP upstream and a real client, checksummed end to end.
@Suite(.serialized) struct TCPProxyIntegrationTests {
    @Test func longStreamIsByteExactWithClientHalfClose() async throws {
        let upstream = try await ChildProcess(script: "tcp_upstream.py", arguments: ["echo"])
        defer { upstream.stop() }
        let proxy = try await RunningProxy(yaml: tcpConfig(upstream: upstream.port))
        let result = try await runClient(["tcp_echo", "\(proxy.port("raw"))", "\(64 << 20)"]) as? [String: Any]
        await proxy.stop()
        #expect(result?["received_bytes"] as? Int == 64 << 20)
        #expect(result?["sent"] as? String == result?["received"] as? String)
    }

    @Test func upstreamHalfCloseStillCarriesTheClientsBytes() async throws {
        let results = FileManager.default.temporaryDirectory.appendingPathComponent("mesh-tcp-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: results, withIntermediateDirectories: true)
        let first = try await ChildProcess(script: "tcp_upstream.py", arguments: ["first", results.path])
        defer { first.stop() }
        let proxy = try await RunningProxy(yaml: tcpConfig(upstream: first.port))
        let result = try await runClient(["tcp_first", "\(proxy.port("raw"))"]) as? [String: Any]
        let shaFile = results.appendingPathComponent("1.sha")
        try await waitUntil("the upstream to record what it received") { FileManager.default.fileExists(atPath: shaFile.path) }
        await proxy.stop()
        #expect(result?["received"] as? String == result?["expected"] as? String)
        #expect(try String(contentsOf: shaFile, encoding: .utf8) == result?["sent"] as? String)
    }

    @Test func idleTunnelsAreClosed() async throws {
        let upstream = try await ChildProcess(script: "tcp_upstream.py", arguments: ["echo"])
        defer { upstream.stop() }
        let proxy = try await RunningProxy(yaml: tcpConfig(upstream: upstream.port, extra: "    idle_timeout: 500ms"))
        let result = try await runClient(["idle", "\(proxy.port("raw"))"]) as? [String: Any]
        await proxy.stop()
        let closedAfter = try #require(result?["closed_after"] as? Double)
        #expect(closedAfter >= 0.4 && closedAfter < 5, "closed after \(closedAfter) s")
    }
}
