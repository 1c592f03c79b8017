import Foundation
import Mesh
import Testing

/// A proxy with one HTTP listener in front of the given upstream ports.
func httpConfig(
    upstreams: [Int], listenerExtra: String = "", clusterExtra: String = ""
) -> String {
    """
    admin:
      address: 127.0.0.1:0
    listeners:
      - name: web
        address: 127.0.0.1:0
        protocol: http
    \(listenerExtra)
        routes:
          - cluster: backend
    clusters:
      - name: backend
        endpoints: [\(upstreams.map { "127.0.0.1:\($0)" }.joined(separator: ", "))]
    \(clusterExtra)
    """
}

/// HTTP/1.1 proxying with real clients (curl, Python sockets) and a real upstream (Python's http.server).
@Suite(.serialized) struct HTTPProxyIntegrationTests {
    @Test func keepAliveIsReusedOnBothSides() async throws {
        let upstream = try await ChildProcess(script: "upstream.py", arguments: ["u1"])
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port]))
        defer { upstream.stop() }
        let result = try await curl(["-v", proxy.url("web", "/echo"), proxy.url("web", "/echo"), proxy.url("web", "/echo")])
        await proxy.stop()
        #expect(result.stderr.components(separatedBy: "Re-using existing connection").count == 3)
        // The upstream saw one connection: every response reports the same peer port.
        let ports = result.stderr.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("< x-peer-port") }
        #expect(ports.count == 3)
        #expect(Set(ports).count == 1)
        #expect(result.stderr.contains("< x-echo-x-forwarded-for: 127.0.0.1"))
    }

    @Test func wrkLoadThroughThePoolHasNoErrors() async throws {
        let upstream = try await ChildProcess(script: "upstream.py")
        defer { upstream.stop() }
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port], clusterExtra: "    max_idle_connections_per_endpoint: 4"))
        let result = try await run(["wrk", "-t1", "-c8", "-d2s", proxy.url("web", "/bytes/512")])
        await proxy.stop()
        let requests = result.stdout.split(whereSeparator: \.isNewline).first { $0.contains("requests in") }
        let count = Int(requests?.split(separator: " ").first ?? "") ?? 0
        #expect(count > 50, "\(result.stdout)")
        #expect(!result.stdout.contains("Non-2xx"), "\(result.stdout)")
        #expect(!result.stdout.contains("Socket errors"), "\(result.stdout)")
    }

    @Test func largeBodiesStreamByteExactBothWays() async throws {
        let upstream = try await ChildProcess(script: "upstream.py")
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port]))
        defer { upstream.stop() }
        let directory = upstream.directory
        let count = 20_000_000
        let expected = Data(upstreamPattern(count))
        for path in ["/bytes/\(count)", "/chunked/\(count)"] {
            let file = directory.appendingPathComponent("download")
            let result = try await curl(["-o", file.path, "-w", "%{http_code}", proxy.url("web", path)])
            #expect(result.stdout == "200")
            #expect(try Data(contentsOf: file) == expected, "\(path) differs")
        }
        // Upload: chunked (curl adds Expect: 100-continue) and with a length, checked by the upstream's sha256.
        let upload = directory.appendingPathComponent("upload")
        var bytes = [UInt8](repeating: 0, count: 8_000_000)
        for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: index &* 31 &+ index >> 8) }
        try Data(bytes).write(to: upload)
        let sha = try await run(["sha256sum", upload.path]).stdout.prefix(64)
        for extra in [["-H", "Transfer-Encoding: chunked"], ["-H", "Expect: 100-continue"], []] {
            let result = try await curl(["-D", "-", "-o", "/dev/null", "--data-binary", "@\(upload.path)"] + extra + [proxy.url("web", "/echo")])
            #expect(result.stdout.lowercased().contains("x-body-sha256: \(sha)"), "\(extra): \(result.stdout)")
            if extra.contains("Expect: 100-continue") || extra.contains("Transfer-Encoding: chunked") {
                #expect(result.stdout.contains("HTTP/1.1 100 Continue"))
            }
        }
        await proxy.stop()
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        let upstream = try await ChildProcess(script: "upstream.py")
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port]))
        defer { upstream.stop() }
        let responses = try await runClient(["pipeline", "\(proxy.port("web"))"]) as? [[String: Any]]
        await proxy.stop()
        #expect(responses?.map { $0["status"] as? Int } == [200, 200, 200])
        #expect(responses?.map { $0["body"] as? String } == ["slow\n", "\u{0}\u{1}\u{2}\u{3}\u{4}", "ping"])
    }

    @Test func upstreamKilledMidResponseIsACleanErrorAndTheProxyGoesOn() async throws {
        let upstream = try await ChildProcess(script: "upstream.py")
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port]))
        defer { upstream.stop() }
        let cut = try await curl(["-o", "/dev/null", proxy.url("web", "/die")])
        #expect(cut.status == 18, "curl must see a truncated body (exit 18), got \(cut.status)")
        let next = try await curl([proxy.url("web", "/")])
        #expect(next.stdout == "upstream\n")
        await proxy.stop()
    }

    @Test func malformedRequestGets400AndOthersAreUnaffected() async throws {
        let upstream = try await ChildProcess(script: "upstream.py")
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port]))
        defer { upstream.stop() }
        async let bad = runClient(["malformed", "\(proxy.port("web"))"])
        async let good = curl(["-w", "%{http_code}", "-o", "/dev/null", proxy.url("web", "/slow/200")])
        let badResult = try await bad as? [String: Any]
        let goodResult = try await good
        await proxy.stop()
        #expect(badResult?["status_line"] as? String == "HTTP/1.1 400 Bad Request")
        #expect(goodResult.stdout == "200")
    }

    @Test func limitsAnswerTheRight4xx() async throws {
        let upstream = try await ChildProcess(script: "upstream.py")
        let limits = "    limits: { max_header_bytes: 2048, max_header_count: 20, max_body_bytes: 1000, max_uri_bytes: 512 }"
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port], listenerExtra: limits))
        defer { upstream.stop() }
        func status(_ arguments: [String]) async throws -> String {
            try await curl(["-o", "/dev/null", "-w", "%{http_code}"] + arguments).stdout
        }
        #expect(try await status([proxy.url("web", "/" + String(repeating: "u", count: 600))]) == "414")
        #expect(try await status(["-H", "X-Big: " + String(repeating: "b", count: 3000), proxy.url("web", "/")]) == "431")
        #expect(try await status((0..<25).flatMap { ["-H", "X-H\($0): v"] } + [proxy.url("web", "/")]) == "431")
        #expect(try await status(["--data-binary", String(repeating: "d", count: 2000), proxy.url("web", "/echo")]) == "413")
        #expect(try await status(["-H", "Transfer-Encoding: chunked", "--data-binary", String(repeating: "d", count: 2000), proxy.url("web", "/echo")]) == "413")
        #expect(try await status([proxy.url("web", "/")]) == "200")
        await proxy.stop()
    }

    @Test func slowClientsAreCutByTheIdleTimeout() async throws {
        let upstream = try await ChildProcess(script: "upstream.py")
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port], listenerExtra: "    idle_timeout: 1s"))
        defer { upstream.stop() }
        let result = try await runClient(["slowloris", "\(proxy.port("web"))"]) as? [String: Any]
        await proxy.stop()
        let closedAfter = try #require(result?["closed_after"] as? Double)
        #expect(closedAfter >= 0.9 && closedAfter < 5, "closed after \(closedAfter) s")
    }

    @Test func upstreamErrorsMapTo503And504() async throws {
        let upstream = try await ChildProcess(script: "upstream.py")
        defer { upstream.stop() }
        // A port nothing listens on: bind one, note it, close it.
        let dead = try await ChildProcess(script: "upstream.py")
        let deadPort = dead.port
        dead.stop()
        let refused = try await RunningProxy(yaml: httpConfig(upstreams: [deadPort]))
        let unavailable = try await curl(["-o", "/dev/null", "-w", "%{http_code}", refused.url("web", "/")])
        #expect(unavailable.stdout == "503")
        await refused.stop()

        let slow = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port], listenerExtra: "    request_timeout: 300ms"))
        let timedOut = try await curl(["-o", "/dev/null", "-w", "%{http_code}", slow.url("web", "/slow/3000")])
        #expect(timedOut.stdout == "504")
        await slow.stop()
    }

    @Test func retriesIdempotentRequestsOnAnotherEndpoint() async throws {
        let upstream = try await ChildProcess(script: "upstream.py", arguments: ["alive"])
        defer { upstream.stop() }
        let dead = try await ChildProcess(script: "upstream.py")
        let deadPort = dead.port
        dead.stop()
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [deadPort, upstream.port], clusterExtra: "    retries: 1"))
        for _ in 0..<4 {
            let result = try await curl([proxy.url("web", "/")])
            #expect(result.stdout == "alive\n")
        }
        // A POST is not retried: when round robin sends it to the dead endpoint it fails with 503.
        var statuses: Set<String> = []
        for _ in 0..<4 {
            statuses.insert(try await curl(["-o", "/dev/null", "-w", "%{http_code}", "-d", "x", proxy.url("web", "/echo")]).stdout)
        }
        #expect(statuses == ["200", "503"])
        await proxy.stop()
    }

    @Test func pendingRequestLimitAnswers503() async throws {
        let upstream = try await ChildProcess(script: "upstream.py")
        defer { upstream.stop() }
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port], clusterExtra: "    max_pending_requests: 1"))
        async let first = curl(["-o", "/dev/null", "-w", "%{http_code}", proxy.url("web", "/slow/5000")])
        try await waitUntil("the first request to be in flight") {
            await proxy.proxy.connectionCounts()["web"]?["proxying"] == 1
        }
        let second = try await curl(["-o", "/dev/null", "-w", "%{http_code}", proxy.url("web", "/")])
        #expect(second.stdout == "503")
        #expect(try await first.stdout == "200")
        await proxy.stop()
    }

    @Test func healthChecksEjectADeadEndpointAndTakeItBack() async throws {
        let stable = try await ChildProcess(script: "upstream.py", arguments: ["stable"])
        defer { stable.stop() }
        var flaky = try await ChildProcess(script: "upstream.py", arguments: ["flaky"])
        let flakyPort = flaky.port
        let check = "    health_check: { type: http, path: /health, interval: 100ms, timeout: 500ms, unhealthy_threshold: 2, healthy_threshold: 1 }"
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [stable.port, flakyPort], clusterExtra: check))
        let cluster = try #require(proxy.proxy.cluster(named: "backend"))
        var names: Set<String> = []
        for _ in 0..<4 { names.insert(try await curl([proxy.url("web", "/")]).stdout) }
        #expect(names == ["stable\n", "flaky\n"])

        flaky.stop()
        try await waitUntil("the dead endpoint to be marked unhealthy") { !cluster.balancerState.endpoints[1].isHealthy }
        for _ in 0..<6 {
            #expect(try await curl([proxy.url("web", "/")]).stdout == "stable\n")
        }
        let metrics = try await curl(["http://127.0.0.1:\(proxy.adminPort)/metrics"]).stdout
        #expect(metrics.contains("mesh_upstream_endpoint_healthy{cluster=\"backend\",endpoint=\"127.0.0.1:\(flakyPort)\"} 0"))

        flaky = try await ChildProcess(script: "upstream.py", arguments: ["flaky", "\(flakyPort)"])
        defer { flaky.stop() }
        try await waitUntil("the endpoint to be healthy again") { cluster.balancerState.endpoints[1].isHealthy }
        names = []
        for _ in 0..<4 { names.insert(try await curl([proxy.url("web", "/")]).stdout) }
        #expect(names == ["stable\n", "flaky\n"])
        await proxy.stop()
    }
}

/// HTTP/2 with prior knowledge (h2c) toward clients, proxied to the HTTP/1.1 upstream, on the same listener.
@Suite(.serialized) struct HTTP2IntegrationTests {
    @Test func curlStreamsBodiesByteExactOverHTTP2() async throws {
        let upstream = try await ChildProcess(script: "upstream.py")
        defer { upstream.stop() }
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port]))
        let file = upstream.directory.appendingPathComponent("h2-download")
        let download = try await curl(["--http2-prior-knowledge", "-o", file.path, "-w", "%{http_version} %{http_code}", proxy.url("web", "/chunked/5000000")])
        #expect(download.stdout == "2 200")
        #expect(try Data(contentsOf: file) == Data(upstreamPattern(5_000_000)))
        let upload = upstream.directory.appendingPathComponent("h2-upload")
        try Data((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }).write(to: upload)
        let sha = try await run(["sha256sum", upload.path]).stdout.prefix(64)
        let echoed = try await curl(["--http2-prior-knowledge", "-D", "-", "-o", "/dev/null", "--data-binary", "@\(upload.path)", proxy.url("web", "/echo")])
        #expect(echoed.stdout.contains("HTTP/2 200"))
        #expect(echoed.stdout.contains("x-body-sha256: \(sha)"))
        await proxy.stop()
    }

    @Test func h2loadManyConcurrentStreamsAllSucceed() async throws {
        let upstream = try await ChildProcess(script: "upstream.py")
        defer { upstream.stop() }
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port]))
        let result = try await run(["h2load", "-n", "200", "-c", "2", "-m", "20", proxy.url("web", "/bytes/1024")])
        await proxy.stop()
        #expect(result.stdout.contains("requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed"), "\(result.stdout)")
        #expect(result.stdout.contains("status codes: 200 2xx"), "\(result.stdout)")
    }

    @Test func http1StillWorksNextToHTTP2() async throws {
        let upstream = try await ChildProcess(script: "upstream.py", arguments: ["both"])
        defer { upstream.stop() }
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port]))
        async let h1 = curl(["--http1.1", "-w", " %{http_version}", proxy.url("web", "/")])
        async let h2 = curl(["--http2-prior-knowledge", "-w", " %{http_version}", proxy.url("web", "/")])
        #expect(try await h1.stdout == "both\n 1.1")
        #expect(try await h2.stdout == "both\n 2")
        await proxy.stop()
    }
}
