import DivanTestSupport
import Foundation
import Mesh
import NIOCore
import NIOPosix
import Testing

@Suite(.serialized) struct AdminAndCLITests {
    @Test func adminEndpointServesMetricsReadinessConfigAndConnections() async throws {
        let upstream = try await ChildProcess(script: "upstream.py")
        defer { upstream.stop() }
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port]))
        let admin = "http://127.0.0.1:\(proxy.adminPort)"
        _ = try await curl([proxy.url("web", "/")])
        #expect(try await curl([admin + "/ready"]).stdout == "ready\n")
        let metrics = try await curl([admin + "/metrics"]).stdout
        #expect(metrics.contains("mesh_http_responses_total{listener=\"web\",code_class=\"2xx\"} 1"))
        #expect(metrics.contains("mesh_http_request_duration_seconds_count{listener=\"web\"} 1"))
        #expect(metrics.contains("mesh_upstream_endpoint_healthy{cluster=\"backend\",endpoint=\"127.0.0.1:\(upstream.port)\"} 1"))
        let config = try await curl([admin + "/config"]).stdout
        #expect(try MeshConfig.parse(yaml: config) == proxy.proxy.config)

        async let slow = curl([proxy.url("web", "/slow/5000")])
        try await waitUntil("a request in flight") { await proxy.proxy.connectionCounts()["web"]?["proxying"] == 1 }
        let connections = try await curl([admin + "/connections"]).stdout
        #expect(connections.contains("\"web\": {\"total\": 1, \"by_state\": {\"proxying\": 1}}"), "\(connections)")
        _ = try await slow
        await proxy.stop()
    }

    @Test func adoptedConnectionContinuesWithItsPreReadBytes() async throws {
        let upstream = try await ChildProcess(script: "upstream.py", arguments: ["adopted"])
        defer { upstream.stop() }
        let proxy = try await RunningProxy(yaml: httpConfig(upstreams: [upstream.port]))
        // A plain listening socket stands in for the old process: accept a client, read part of its request, hand over.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = bind(listener, $0, length) } }
        listen(listener, 1)
        withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(listener, $0, &length) } }
        let port = Int(UInt16(bigEndian: address.sin_port))
        let response = try BackgroundCommand([
            "python3", "-c",
            "import socket,sys; s=socket.create_connection(('127.0.0.1',\(port))); "
                + "s.sendall(b'GET /echo HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n'); "
                + "sys.stdout.write(s.makefile('rb').read().decode())",
        ])
        let accepted = accept(listener, nil, nil)
        close(listener)
        var firstBytes = [UInt8](repeating: 0, count: 10)
        let count = recv(accepted, &firstBytes, 10, Int32(MSG_WAITALL))
        #expect(count == 10)
        try await proxy.proxy.adoptHTTPConnection(listener: "web", descriptor: accepted, preRead: ByteBuffer(bytes: firstBytes))
        let output = try await response.finish().stdout
        await proxy.stop()
        #expect(output.hasPrefix("HTTP/1.1 200 OK"))
        #expect(output.contains("x-upstream: adopted"))
    }

    @Test func checkCommandNamesLineAndField() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mesh-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let bad = directory.appendingPathComponent("bad.yaml")
        try "listeners:\n  - name: web\n    address: 127.0.0.1:99999\n    routes: [{cluster: nope}]\n".write(to: bad, atomically: true, encoding: .utf8)
        let result = try await run([divanExecutable.path, "mesh", "check", "--config", bad.path])
        #expect(result.status != 0)
        #expect(result.stderr.contains("bad.yaml:3: listeners[0].address"), "\(result.stderr)")
        #expect(result.stderr.contains("bad.yaml:4: listeners[0].routes[0].cluster"), "\(result.stderr)")

        let good = directory.appendingPathComponent("good.yaml")
        try httpConfig(upstreams: [1]).write(to: good, atomically: true, encoding: .utf8)
        let ok = try await run([divanExecutable.path, "mesh", "check", "--config", good.path])
        #expect(ok.status == 0, "\(ok.stderr)")
    }

    @Test func runCommandServesAndDrainsOnSIGTERM() async throws {
        let upstream = try await ChildProcess(script: "upstream.py", arguments: ["cli"])
        defer { upstream.stop() }
        let directory = upstream.directory
        // Ports picked by the OS for the child: bind, read, release. The child binds them right after.
        let config = directory.appendingPathComponent("mesh.yaml")
        let (proxyPort, adminPort) = (try freePort(), try freePort())
        try httpConfig(upstreams: [upstream.port])
            .replacingOccurrences(of: "address: 127.0.0.1:0\n    protocol", with: "address: 127.0.0.1:\(proxyPort)\n    protocol")
            .replacingOccurrences(of: "  address: 127.0.0.1:0\nlisteners", with: "  address: 127.0.0.1:\(adminPort)\nlisteners")
            .write(to: config, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = divanExecutable
        process.arguments = ["mesh", "run", "--config", config.path, "--threads", "1"]
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        try await waitUntil("the child proxy to be ready") {
            try await curl(["http://127.0.0.1:\(adminPort)/ready"]).stdout == "ready\n"
        }
        // 6 s upstream: long enough for the admin polls (a curl process each) to see it on a loaded
        // machine, short enough to finish within the 10 s drain.
        async let inFlight = curl(["http://127.0.0.1:\(proxyPort)/slow/6000"])
        try await waitUntil("a request in flight", timeout: .seconds(30)) {
            try await curl(["http://127.0.0.1:\(adminPort)/connections"]).stdout.contains("proxying")
        }
        process.terminate()
        #expect(try await inFlight.stdout == "slow\n", "the in-flight request finishes during the drain")
        try await waitUntil("the child to exit") { !process.isRunning }
        #expect(process.terminationStatus == 0)
    }
}

/// A port that was free a moment ago.
func freePort() throws -> Int {
    let group = MultiThreadedEventLoopGroup.singleton
    let channel = try ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).wait()
    let port = channel.localAddress?.port ?? 0
    try channel.close().wait()
    return port
}
