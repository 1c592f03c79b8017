import Foundation
import Mesh
import Testing

/// The counts on h2load's `status codes:` line (2xx, 3xx, 4xx, 5xx).
func h2loadStatusCodes(_ output: String) -> [Int] {
    guard let line = output.split(whereSeparator: \.isNewline).first(where: { $0.hasPrefix("status codes:") }) else { return [] }
    return line.split(separator: ",").compactMap { Int($0.split(separator: " ").reversed().dropFirst().first ?? "") }
}

/// Clusters with `protocol: http2`: the proxy speaks h2c to an HTTP/2 upstream (an NIO server in the test process),
/// to HTTP/1.1 and HTTP/2 clients alike.
@Suite(.serialized) struct HTTP2UpstreamTests {
    static let http2 = "    protocol: http2"

    @Test func manyConcurrentRequestsAreMultiplexedOverFewConnections() async throws {
        let upstream = try await HTTP2TestUpstream()
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port], clusterExtra: Self.http2))
        // 80 streams at once at most, fewer than the 100 the upstream allows per connection, over two event loops.
        let result = try await run(["h2load", "-n", "800", "-c", "4", "-m", "20", proxy.url("web", "/slow/5")])
        let h1 = try await run(["wrk", "-t1", "-c16", "-d1s", proxy.url("web", "/bytes/512")])
        await proxy.stop()
        await upstream.stop()
        #expect(result.stdout.contains("requests: 800 total, 800 started, 800 done, 800 succeeded, 0 failed"), "\(result.stdout)")
        #expect(!h1.stdout.contains("Non-2xx") && !h1.stdout.contains("Socket errors"), "\(h1.stdout)")
        let stats = upstream.stats.withLockedValue { $0 }
        #expect(stats.connections <= 2, "one connection per endpoint and event loop, got \(stats.connections)")
        #expect(stats.maxConcurrentStreams > 1, "streams were not multiplexed")
    }

    @Test func theUpstreamsStreamLimitAndTheClustersLimitsAnswer503() async throws {
        let upstream = try await HTTP2TestUpstream(maxConcurrentStreams: 4)
        let proxy = try await RunningProxy(
            yaml: httpConfig(upstreams: [upstream.port], clusterExtra: Self.http2 + "\n    max_connections: 1"))
        let result = try await run(["h2load", "-n", "200", "-c", "1", "-m", "20", proxy.url("web", "/slow/20")])
        await proxy.stop()
        await upstream.stop()
        let codes = h2loadStatusCodes(result.stdout)
        #expect(codes.count == 4, "\(result.stdout)")
        if codes.count == 4 {
            #expect(codes[0] > 0 && codes[3] > 0, "expected both 2xx and 503s: \(result.stdout)")
            #expect(codes[0] + codes[3] == 200, "\(result.stdout)")
        }
        let stats = upstream.stats.withLockedValue { $0 }
        #expect(stats.connections == 1)
        #expect(stats.maxConcurrentStreams <= 4, "the upstream allowed 4 streams, saw \(stats.maxConcurrentStreams)")
    }

    @Test func largeBodiesStreamByteExactBothWays() async throws {
        let upstream = try await HTTP2TestUpstream()
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port], clusterExtra: Self.http2))
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mesh-h2-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let count = 20_000_000
        let upload = directory.appendingPathComponent("upload")
        let uploaded = Data((0..<8_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 8) })
        try uploaded.write(to: upload)
        for client in [["--http1.1"], ["--http2-prior-knowledge"]] {
            let download = directory.appendingPathComponent("download")
            let fetched = try await curl(client + ["-o", download.path, "-w", "%{http_code}", proxy.url("web", "/bytes/\(count)")])
            #expect(fetched.stdout == "200", "\(client)")
            #expect(try Data(contentsOf: download) == Data(upstreamPattern(count)), "\(client): download differs")
            let echoed = directory.appendingPathComponent("echoed")
            let sent = try await curl(client + ["-o", echoed.path, "-w", "%{http_code}", "--data-binary", "@\(upload.path)", proxy.url("web", "/echo")])
            #expect(sent.stdout == "200", "\(client)")
            #expect(try Data(contentsOf: echoed) == uploaded, "\(client): echoed upload differs")
        }
        await proxy.stop()
        await upstream.stop()
    }

    @Test func anUpstreamConnectionDyingFailsOnlyItsStreamsAndIsReplaced() async throws {
        let upstream = try await HTTP2TestUpstream()
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port], clusterExtra: Self.http2))
        // One HTTP/2 client connection, one request at a time, alternating: each stream whose upstream died
        // mid-response is reset, and the next one on the same client connection is served over a new upstream
        // connection. (h2load, not curl: curl 7.88 cannot reuse a connection after a stream was reset.)
        let cut = try await run(["h2load", "-n", "6", "-c", "1", "-m", "1", proxy.url("web", "/die"), proxy.url("web", "/")])
        #expect(cut.stdout.contains("requests: 6 total, 6 started, 6 done, 3 succeeded, 3 failed, 3 errored"), "\(cut.stdout)")
        // Dying before the response head is a 502, over HTTP/1.1 and HTTP/2.
        for client in ["--http1.1", "--http2-prior-knowledge"] {
            let early = try await curl([client, "-o", "/dev/null", "-w", "%{http_code}", proxy.url("web", "/die-early")])
            #expect(early.stdout == "502", "\(client)")
        }
        #expect(try await curl([proxy.url("web", "/")]).stdout == "h2\n")
        await proxy.stop()
        await upstream.stop()
        // Each death needed a new connection: /die three times, /die-early twice, plus the one serving now.
        #expect(upstream.stats.withLockedValue { $0.connections } == 6)
    }

    @Test func goAwayFromTheUpstreamDrainsTheConnection() async throws {
        let upstream = try await HTTP2TestUpstream()
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port], clusterExtra: Self.http2))
        // One client connection, so both requests share one upstream connection: the slow one is in flight when
        // the GOAWAY comes, and finishes.
        let both = try await run(["nghttp", "-v", "-n", proxy.url("web", "/slow/500"), proxy.url("web", "/goaway")])
        #expect(both.status == 0, "\(both.stdout)\(both.stderr)")
        #expect(both.stdout.components(separatedBy: ":status: 200").count == 3, "\(both.stdout)")
        // The proxy closes the drained connection once its streams are done, and opens another when needed.
        try await waitUntil("the drained connection to be closed") { upstream.stats.withLockedValue { $0.closedConnections } == 1 }
        #expect(try await curl([proxy.url("web", "/")]).stdout == "h2\n")
        #expect(upstream.stats.withLockedValue { $0.connections } == 2)
        await proxy.stop()
        await upstream.stop()
    }

    @Test func anEndpointThatDoesNotSpeakHTTP2FailsLikeARefusedConnect() async throws {
        let h1 = try await ChildProcess(script: "upstream.py", arguments: ["h1"])
        defer { h1.stop() }
        let h2 = try await HTTP2TestUpstream()
        let proxy = try await RunningProxy(
            yaml: httpConfig(upstreams: [h1.port, h2.port], clusterExtra: Self.http2 + "\n    connect_timeout: 500ms\n    retries: 1"))
        // Round robin tries the HTTP/1.1-only endpoint for every other request; each is retried on the other one.
        for _ in 0..<4 {
            #expect(try await curl([proxy.url("web", "/")]).stdout == "h2\n")
        }
        // A POST is not retried: when round robin sends it to the HTTP/1.1-only endpoint it fails with 503.
        var statuses: Set<String> = []
        for _ in 0..<4 {
            statuses.insert(try await curl(["-o", "/dev/null", "-w", "%{http_code}", "-d", "x", proxy.url("web", "/")]).stdout)
        }
        #expect(statuses == ["200", "503"])
        await proxy.stop()
        await h2.stop()
    }

    @Test func healthChecksAndLoadBalancingWorkOverHTTP2() async throws {
        let stable = try await HTTP2TestUpstream(name: "stable")
        var flaky = try await HTTP2TestUpstream(name: "flaky")
        let flakyPort = flaky.port
        let check = "\n    health_check: { type: http, path: /health, interval: 100ms, timeout: 500ms, unhealthy_threshold: 2, healthy_threshold: 1 }"
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [stable.port, flakyPort], clusterExtra: Self.http2 + check))
        let cluster = try #require(proxy.proxy.cluster(named: "backend"))
        var names: Set<String> = []
        for _ in 0..<4 { names.insert(try await curl([proxy.url("web", "/")]).stdout) }
        #expect(names == ["stable\n", "flaky\n"])

        await flaky.stop()
        try await waitUntil("the stopped endpoint to be marked unhealthy") { !cluster.balancerState.endpoints[1].isHealthy }
        for _ in 0..<6 {
            #expect(try await curl([proxy.url("web", "/")]).stdout == "stable\n")
        }
        flaky = try await HTTP2TestUpstream(name: "flaky", port: flakyPort)
        try await waitUntil("the endpoint to be healthy again") { cluster.balancerState.endpoints[1].isHealthy }
        names = []
        for _ in 0..<4 { names.insert(try await curl([proxy.url("web", "/")]).stdout) }
        #expect(names == ["stable\n", "flaky\n"])
        await proxy.stop()
        await stable.stop()
        await flaky.stop()
    }
}

/// `Upgrade: h2c` from HTTP/1.1 (RFC 7540 §3.2) with real clients: curl `--http2` and `nghttp -u`.
@Suite(.serialized) struct H2CUpgradeIntegrationTests {
    @Test func curlUpgradesAndGoesOnOverHTTP2() async throws {
        let upstream = try await ChildProcess(script: "upstream.py", arguments: ["h1"])
        defer { upstream.stop() }
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port]))
        let result = try await curl(["-v", "--http2", "-o", "/dev/null", "-o", "/dev/null", proxy.url("web", "/bytes/100000"), proxy.url("web", "/echo")])
        await proxy.stop()
        #expect(result.stderr.contains("< HTTP/1.1 101 Switching Protocols"), "\(result.stderr)")
        #expect(result.stderr.components(separatedBy: "< HTTP/2 200").count == 3, "\(result.stderr)")
        #expect(result.stderr.contains("Re-using existing connection"))
        #expect(result.stderr.contains("< x-echo-x-forwarded-for: 127.0.0.1"))
    }

    @Test func nghttpUpgradesToAnHTTP2Upstream() async throws {
        let upstream = try await HTTP2TestUpstream()
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port], clusterExtra: HTTP2UpstreamTests.http2))
        let result = try await run(["nghttp", "-u", "-v", "-n", proxy.url("web", "/echo"), proxy.url("web", "/bytes/70000")])
        await proxy.stop()
        await upstream.stop()
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("HTTP/1.1 101 Switching Protocols"), "\(result.stdout)")
        #expect(result.stdout.contains("recv (stream_id=1) :status: 200"), "\(result.stdout)")
        #expect(result.stdout.contains("recv (stream_id=1) x-echo-user-agent: nghttp2/"), "\(result.stdout)")
        #expect(result.stdout.components(separatedBy: ":status: 200").count == 3, "\(result.stdout)")
        #expect(!result.stdout.contains("recv GOAWAY"), "\(result.stdout)")
    }

    /// On a hot upgrade an upgraded connection is HTTP/2: it moves only without open streams, so one whose stream stays
    /// open past the quiet-point timeout is never captured; it gets GOAWAY and finishes the stream it has open.
    @Test func anUpgradedConnectionWithAStreamOpenTooLongDrainsWithGoAwayOnAHotUpgrade() async throws {
        let upstream = try await ChildProcess(script: "upstream.py")
        defer { upstream.stop() }
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port]))
        // The stream must outlast the 2 s wait for a quiet point by far: under load the first
        // capture attempt (which starts that wait) can come a few seconds after the request.
        let client = try BackgroundCommand(["nghttp", "-u", "-v", "-n", proxy.url("web", "/slow/7000")])
        try await waitUntil("the connection to be upgraded") { await proxy.proxy.connectionCounts()["web"]?["http2"] == 1 }
        await proxy.proxy.stopAccepting()
        // Capture attempts as the old process makes them, until the connection is gone.
        var captured = 0
        try await waitUntil("the connection to drain and close") {
            captured += await proxy.proxy.captureConnections(markingUpTo: 10).count
            return await proxy.proxy.connectionCounts()["web"] == nil
        }
        #expect(captured == 0, "an HTTP/2 connection with an open stream must not move")
        let result = try await client.finish()
        await proxy.stop()
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("HTTP/1.1 101 Switching Protocols"), "\(result.stdout)")
        #expect(result.stdout.contains("recv GOAWAY frame"), "\(result.stdout)")
        #expect(result.stdout.contains("recv (stream_id=1) :status: 200"), "\(result.stdout)")
    }

    @Test func aRequestWithABodyIsServedOverHTTP1AndTheConnectionCloses() async throws {
        let upstream = try await ChildProcess(script: "upstream.py")
        defer { upstream.stop() }
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port]))
        let result = try await curl(["-v", "--http2", "-d", "hello", "-o", "/dev/null", proxy.url("web", "/echo"), proxy.url("web", "/echo")])
        await proxy.stop()
        #expect(!result.stderr.contains("101 Switching Protocols"), "\(result.stderr)")
        #expect(result.stderr.components(separatedBy: "< HTTP/1.1 200 OK").count == 3, "\(result.stderr)")
        #expect(result.stderr.contains("< connection: close"))
        // sha256("hello"): the body arrived whole.
        #expect(result.stderr.contains("< x-body-sha256: 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"))
    }
}
