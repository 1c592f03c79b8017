import DivanTestSupport
import Foundation
import HotUpgrade
import SystemPackage
import Testing

/// Hot upgrades of real `divan mesh run` processes under load from real clients.
@Suite(.serialized) struct UpgradeTests {
    static func config(httpUpstream: Int? = nil, tcpUpstream: Int? = nil) -> String {
        var listeners = ""
        var clusters = ""
        if let httpUpstream {
            listeners += "  - name: web\n    address: 127.0.0.1:0\n    routes:\n      - cluster: backend\n"
            clusters += "  - name: backend\n    endpoints: [127.0.0.1:\(httpUpstream)]\n    max_idle_connections_per_endpoint: 256\n"
        }
        if let tcpUpstream {
            listeners += "  - name: db\n    address: 127.0.0.1:0\n    protocol: tcp\n    cluster: stream\n"
            clusters += "  - name: stream\n    endpoints: [127.0.0.1:\(tcpUpstream)]\n"
        }
        return "admin:\n  address: 127.0.0.1:0\nlisteners:\n\(listeners)clusters:\n\(clusters)"
    }

    /// Starts `count` keep-alive clients on the web listener; they never reconnect.
    /// `churn` more clients open a new connection per request, to catch a moment when nothing accepts.
    static func startClients(_ count: Int, churn: Int = 0, port: Int, scratch: Scratch) throws -> (Child, stop: String, progress: String) {
        let stop = scratch.path("clients.stop")
        let progress = scratch.path("clients.progress")
        let child = try Child(
            ["python3", fixtures.appendingPathComponent("http_clients.py").path, "\(port)", "\(count)", stop, progress, "\(churn)"],
            in: scratch, name: "clients")
        return (child, stop, progress)
    }

    /// Stops the clients and returns their JSON summary.
    static func finishClients(_ clients: Child, stop: String) async throws -> [String: Any] {
        _ = FileManager.default.createFile(atPath: stop, contents: nil)
        _ = try await clients.finish()
        guard let data = clients.stdout.data(using: .utf8), let result = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw TestFailure("clients printed no result: \(clients.stderr)")
        }
        return result
    }

    /// Waits until every client completed at least one more request than now, with none failed so far.
    static func everyClientProgresses(_ progress: String, _ what: String) async throws {
        let floor = readNumbers(progress).dropFirst().first ?? 0
        try await waitUntil("every client to progress \(what)") {
            let numbers = readNumbers(progress)
            guard numbers.count == 3 else { return false }
            if numbers[2] > 0 { throw TestFailure("client errors \(what): \(numbers)") }
            return numbers[1] > floor
        }
    }

    @Test func twoHundredKeepAliveClientsSurviveTenUpgradesOnTheSameConnections() async throws {
        let setup = try await UpstreamAndChain.start { Self.config(httpUpstream: $0) }
        defer { setup.stop() }
        let (scratch, chain) = (setup.scratch, setup.chain)
        let (clients, stop, progress) = try Self.startClients(200, churn: 4, port: try #require(chain.port("web")), scratch: scratch)
        defer { clients.stop() }
        try await Self.everyClientProgresses(progress, "before the first upgrade")
        var serving = chain.first.pid
        for round in 1...10 {
            let next = try await chain.upgrade()
            try await waitUntil("the old process to exit (round \(round))") { !chain.isAlive(serving) }
            serving = next
            // Only the new process is left: a client that makes progress now was moved there.
            try await Self.everyClientProgresses(progress, "after upgrade \(round)")
        }
        let metrics = try await admin(try #require(chain.port("@admin")), "/metrics") ?? ""
        let result = try await Self.finishClients(clients, stop: stop)
        #expect(result["failures"] as? Int == 0, "\(result)")
        #expect(result["resets"] as? Int == 0, "\(result)")
        #expect(result["refused"] as? Int == 0, "\(result)")
        #expect(result["ports_unchanged"] as? Bool == true, "every client kept its connection: \(result)")
        #expect((result["min_per_client"] as? Int ?? 0) > 10)
        #expect((result["churn_requests"] as? Int ?? 0) > 10, "new connections were accepted throughout: \(result)")
        #expect(metrics.contains("mesh_handovers_total{role=\"new\",outcome=\"moved\"} 1"), "\(metrics)")
        #expect(metrics.contains("mesh_handover_connections_moved_total{role=\"new\"} 200"), "\(metrics)")
        #expect(chain.log.components(separatedBy: "handover: finished").count - 1 == 10)
    }

    @Test func aTCPStreamStaysByteExactBothWaysOnOneUpstreamConnectionAcrossTenSIGHUPUpgrades() async throws {
        let scratch = try Scratch()
        let resultFile = scratch.path("upstream.json")
        let (upstream, upstreamPort) = try await startFixtureServer(
            [fixtures.appendingPathComponent("tcp_stream.py").path, "upstream", "PORT_FILE", resultFile], in: scratch, name: "upstream")
        defer { upstream.stop() }
        let chain = try await MeshChain(config: Self.config(tcpUpstream: upstreamPort), scratch: scratch)
        defer { chain.stop() }
        let stop = scratch.path("stream.stop")
        let progress = scratch.path("stream.progress")
        let client = try Child(
            ["python3", fixtures.appendingPathComponent("tcp_stream.py").path, "client", "\(try #require(chain.port("db")))", stop, progress],
            in: scratch, name: "stream")
        defer { client.stop() }
        func flowsBothWays(_ what: String) async throws {
            let before = readNumbers(progress)
            try await waitUntil("bytes to flow both ways \(what)") {
                let now = readNumbers(progress)
                return now.count == 2 && now[0] > (before.first ?? 0) + 20_000 && now[1] > (before.last ?? 0) + 20_000
            }
        }
        try await flowsBothWays("before the first upgrade")
        var serving = chain.first.pid
        for round in 1...10 {
            kill(serving, SIGHUP)
            var next: Int32?
            try await waitUntil("the SIGHUP upgrade \(round)") {
                let handed = chain.log.components(separatedBy: "\n").filter { $0.contains("SIGHUP: handed over") }
                guard handed.count == round, let line = handed.last, let range = line.range(of: "new_pid=") else { return false }
                next = Int32(line[range.upperBound...].prefix { $0.isNumber })
                return next != nil
            }
            chain.adopt(next!)
            try await waitUntil("the old process to exit (round \(round))") { !chain.isAlive(serving) }
            serving = next!
            try await flowsBothWays("after upgrade \(round)")
        }
        _ = FileManager.default.createFile(atPath: stop, contents: nil)
        #expect(try await client.finish() == 0)
        try await waitUntil("the upstream's result") { FileManager.default.fileExists(atPath: resultFile) }
        let clientResult = try #require(JSONSerialization.jsonObject(with: Data(client.stdout.utf8)) as? [String: Any])
        let upstreamResult = try #require(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: resultFile))) as? [String: Any])
        #expect(upstreamResult["connections"] as? Int == 1, "the upstream saw one connection: \(upstreamResult)")
        #expect(clientResult["error"] is NSNull, "\(clientResult)")
        #expect(clientResult["mismatch"] as? Bool == false)
        #expect(upstreamResult["mismatch"] as? Bool == false)
        #expect(clientResult["sent"] as? Int == upstreamResult["received"] as? Int)
        #expect(clientResult["sha_sent"] as? String == upstreamResult["sha_received"] as? String)
        #expect(upstreamResult["sent"] as? Int == clientResult["received"] as? Int)
        #expect(upstreamResult["sha_sent"] as? String == clientResult["sha_received"] as? String)
        #expect((clientResult["sent"] as? Int ?? 0) > 200_000)
    }

    /// A new process that fails at each step of the protocol, played by the test itself over the upgrade socket
    /// (so each step is hit exactly), then a real one with a broken config: the old process serves throughout.
    @Test func theOldProcessKeepsServingWhenTheNewOneFailsAtEveryStep() async throws {
        let setup = try await UpstreamAndChain.start { Self.config(httpUpstream: $0) }
        defer { setup.stop() }
        let (scratch, chain) = (setup.scratch, setup.chain)
        let (clients, stop, progress) = try Self.startClients(50, port: try #require(chain.port("web")), scratch: scratch)
        defer { clients.stop() }
        try await Self.everyClientProgresses(progress, "at the start")
        let path = FilePath(chain.socketPath)
        let version = HandoverStateMachine.protocolVersion
        func connect() throws -> HandoverSocket { try HandoverSocket.connect(to: path, timeout: .seconds(10)) }
        /// Says hello and receives the welcome and the listeners; returns the socket and the listener copies.
        func greet() throws -> (HandoverSocket, [CInt]) {
            let socket = try connect()
            try socket.send(.hello(version: version, pid: getpid()))
            guard case .welcome = try socket.receive(), case .listeners(let names, let descriptors) = try socket.receive() else {
                throw TestFailure("expected welcome and listeners")
            }
            #expect(Set(names) == ["web", "@admin"])
            return (socket, descriptors)
        }
        func die(_ socket: HandoverSocket, _ descriptors: [CInt]) {
            for fd in descriptors { close(fd) }
            socket.close()
        }
        func outcomes(_ text: String) -> Int { chain.log.components(separatedBy: text).count - 1 }

        // Before the commit point.
        try connect().close()
        let garbage = try connect()
        #expect(write(garbage.descriptor, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27) == 27)
        #expect(throws: HandoverFailure.peerGone) { try garbage.receive() }
        garbage.close()
        let wrongVersion = try connect()
        try wrongVersion.send(.hello(version: version + 1, pid: getpid()))
        guard case .refuse(let reason) = try wrongVersion.receive() else { throw TestFailure("expected a refusal") }
        #expect(reason.contains("version"))
        wrongVersion.close()
        try await waitUntil("the refusal to end its session") { outcomes("rolled back before the commit point") == 1 }
        try await Self.everyClientProgresses(progress, "after garbage and a wrong version")

        var (socket, listeners) = try greet()
        die(socket, listeners)
        try await waitUntil("a rollback after the listeners were sent") { outcomes("rolled back before the commit point") == 2 }
        try await Self.everyClientProgresses(progress, "after a death with the listeners")

        (socket, listeners) = try greet()
        try socket.send(.abort(reason: "readiness check failed"))
        try await waitUntil("a rollback after an abort") { outcomes("rolled back before the commit point") == 3 }
        die(socket, listeners)
        try await Self.everyClientProgresses(progress, "after an abort")

        // After the commit point: the new process dies with a batch of connections it never acknowledged.
        (socket, listeners) = try greet()
        try socket.send(.ready)
        var taken: [CInt] = []
        guard case .stoppedAccepting = try socket.receive() else { throw TestFailure("expected stoppedAccepting") }
        while taken.isEmpty {
            guard case .connections(let batch) = try socket.receive() else { throw TestFailure("expected connections") }
            taken = batch.flatMap(\.descriptors)
            if taken.isEmpty { try socket.send(.adopted(count: 0)) }
        }
        die(socket, listeners + taken)
        try await waitUntil("the old process to resume") { outcomes("failed after the commit point; serving again") == 1 }
        try await Self.everyClientProgresses(progress, "after a death past the commit point")
        #expect(chain.log.contains("handover: took back unacknowledged connections"))
        #expect(try await admin(try #require(chain.port("@admin")), "/ready") == "ready\n", "the admin socket is served again")

        // A real new process whose config does not parse.
        let good = try String(contentsOfFile: chain.configPath, encoding: .utf8)
        try "listeners: [".write(toFile: chain.configPath, atomically: true, encoding: .utf8)
        let failed = try await run([divanExecutable.path, "mesh", "upgrade", "--socket", chain.socketPath], in: scratch)
        #expect(failed.status != 0)
        #expect(failed.stdout.contains("upgrade failed"), "\(failed)")
        try await Self.everyClientProgresses(progress, "after a broken config")

        // And the old process can still hand over for real.
        try good.write(toFile: chain.configPath, atomically: true, encoding: .utf8)
        let old = chain.first.pid
        _ = try await chain.upgrade()
        try await waitUntil("the old process to exit") { !chain.isAlive(old) }
        try await Self.everyClientProgresses(progress, "after the final upgrade")
        let result = try await Self.finishClients(clients, stop: stop)
        #expect(result["failures"] as? Int == 0, "\(result)")
        #expect(result["resets"] as? Int == 0, "\(result)")
        #expect(result["refused"] as? Int == 0, "\(result)")
        #expect(result["ports_unchanged"] as? Bool == true, "\(result)")
    }

    /// The container mode: the new process is started on its own, not by the old one, and finds it by the socket.
    @Test func anIndependentlyStartedProcessTakesOverThroughASharedSocket() async throws {
        let setup = try await UpstreamAndChain.start { Self.config(httpUpstream: $0) }
        defer { setup.stop() }
        let (scratch, chain) = (setup.scratch, setup.chain)
        let (clients, stop, progress) = try Self.startClients(50, port: try #require(chain.port("web")), scratch: scratch)
        defer { clients.stop() }
        try await Self.everyClientProgresses(progress, "at the start")
        let successor = try Child(
            [divanExecutable.path, "mesh", "run", "--config", chain.configPath, "--takeover", chain.socketPath, "--threads", "2"],
            in: scratch, name: "successor")
        defer { successor.stop() }
        #expect(try await chain.first.finish() == 0, "the old process hands over and exits cleanly")
        try await Self.everyClientProgresses(progress, "after the takeover")
        #expect(successor.process.isRunning)
        #expect(successor.stderr.contains("upgrade socket listening"), "the successor claimed the socket for the next upgrade")
        // The claimed socket works: upgrade the successor in turn.
        let next = try await run([divanExecutable.path, "mesh", "upgrade", "--socket", chain.socketPath], in: scratch)
        #expect(next.status == 0, "\(next)")
        if let line = next.stdout.split(separator: "\n").last, line.hasPrefix("pid "), let pid = Int32(line.dropFirst(4)) { chain.adopt(pid) }
        _ = try await successor.finish()
        try await Self.everyClientProgresses(progress, "after upgrading the successor")
        let result = try await Self.finishClients(clients, stop: stop)
        #expect(result["failures"] as? Int == 0, "\(result)")
        #expect(result["resets"] as? Int == 0, "\(result)")
        #expect(result["refused"] as? Int == 0, "\(result)")
        #expect(result["ports_unchanged"] as? Bool == true, "\(result)")
    }

    /// Another user reaching the socket (the test opens its permissions to let it) is refused by SO_PEERCRED.
    @Test(.enabled(if: getuid() == 0, "only root can run a client as another user"))
    func anotherUserIsRefused() async throws {
        let setup = try await UpstreamAndChain.start { Self.config(httpUpstream: $0) }
        defer { setup.stop() }
        let (scratch, chain) = (setup.scratch, setup.chain)
        chmod(scratch.url.path, 0o755)
        chmod(scratch.path("upgrade"), 0o755)
        chmod(chain.socketPath, 0o666)
        let attempt = try await run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", divanExecutable.path, "mesh", "upgrade", "--socket", chain.socketPath],
            in: scratch)
        #expect(attempt.status != 0)
        #expect(attempt.stdout.contains("refused: peer runs as uid 65534"), "\(attempt)")
        #expect(chain.allPids.count == 1 && chain.isAlive(chain.first.pid))
        #expect(try await admin(try #require(chain.port("@admin")), "/ready") == "ready\n")
    }

    /// HTTP/2 connections with streams in flight at every moment move through ten upgrades: every response right,
    /// no GOAWAY, no closed connection, every connection still the one it opened with (same local port) and making
    /// progress on the new process after each upgrade.
    @Test func http2ConnectionsWithManyStreamsSurviveTenUpgradesOnTheSameConnections() async throws {
        let setup = try await UpstreamAndChain.start { Self.config(httpUpstream: $0) }
        defer { setup.stop() }
        let chain = setup.chain
        let connections = 16
        let clients = try await HTTP2LoadClients.start(port: try #require(chain.port("web")), connections: connections, streams: 4)
        func everyConnectionProgresses(_ what: String) async throws {
            let floor = clients.completed
            try await waitUntil("every HTTP/2 connection to progress \(what)") {
                if clients.failures > 0 {
                    // Let a connection error's GOAWAY and close arrive too, so the report tells them apart.
                    try await Task.sleep(for: .milliseconds(500))
                    let problems = chain.log.split(separator: "\n").filter { $0.contains(" warning ") || $0.contains(" error ") }
                    throw TestFailure("HTTP/2 client errors \(what): \(clients.report)\n\(problems.suffix(10).joined(separator: "\n"))")
                }
                return zip(clients.completed, floor).allSatisfy { $0 > $1 }
            }
        }
        try await everyConnectionProgresses("before the first upgrade")
        var serving = chain.first.pid
        for round in 1...10 {
            let next = try await chain.upgrade()
            try await waitUntil("the old process to exit (round \(round))") { !chain.isAlive(serving) }
            serving = next
            try await everyConnectionProgresses("after upgrade \(round)")
        }
        let ports = clients.currentLocalPorts
        let metrics = try await admin(try #require(chain.port("@admin")), "/metrics") ?? ""
        let report = await clients.stop()
        #expect(report.failures == 0, "\(report)")
        #expect(report.goAways == 0, "\(report)")
        #expect(report.closedConnections == 0, "\(report)")
        #expect(ports == clients.localPorts, "every connection is the one it opened with")
        #expect(report.completed.allSatisfy { $0 > 20 }, "\(report)")
        #expect(metrics.contains("mesh_handover_connections_moved_total{role=\"new\"} \(connections)"), "\(metrics)")
        #expect(!chain.log.contains("never reached a safe point"))
    }

    /// h2load (nghttp2) with many streams per connection, through ten upgrades. h2load reconnects silently after
    /// GOAWAY, so the proof that it never did is the last process's count: it accepted or adopted exactly the
    /// connections h2load opened at the start (a reconnection anywhere in the chain would have moved here too).
    @Test func h2loadThroughTenUpgradesFailsNothingAndNeverReconnects() async throws {
        let setup = try await UpstreamAndChain.start { Self.config(httpUpstream: $0) }
        defer { setup.stop() }
        let (scratch, chain) = (setup.scratch, setup.chain)
        let connections = 8
        let load = try Child(
            ["h2load", "-c", "\(connections)", "-m", "8", "-D", "60", "http://127.0.0.1:\(try #require(chain.port("web")))/h2load"],
            in: scratch, name: "h2load")
        defer { load.stop() }
        let adminPort = try #require(chain.port("@admin"))
        func accepted() async throws -> Int? {
            let metrics = try await admin(adminPort, "/metrics") ?? ""
            guard let line = metrics.split(separator: "\n").first(where: { $0.hasPrefix("mesh_connections_total{listener=\"web\"}") }) else {
                return nil
            }
            return Int(line.split(separator: " ").last ?? "")
        }
        try await waitUntil("h2load's connections") { try await accepted() == connections }
        var serving = chain.first.pid
        for round in 1...10 {
            let next = try await chain.upgrade()
            try await waitUntil("the old process to exit (round \(round))") { !chain.isAlive(serving) }
            serving = next
        }
        #expect(load.process.isRunning, "h2load ran through every upgrade")
        #expect(try await accepted() == connections, "no connection was opened again")
        #expect(try await load.finish(timeout: .seconds(90)) == 0, "\(load.stderr)")
        let summary = load.stdout.split(separator: "\n").first { $0.hasPrefix("requests:") }.map(String.init) ?? ""
        #expect(summary.contains(" 0 failed, 0 errored, 0 timeout"), "\(load.stdout)")
        #expect(!summary.contains("requests: 0 total"), "\(load.stdout)")
    }

    /// curl keeps one connection, upgraded from HTTP/1.1 to h2c by its first request, across an upgrade of the proxy.
    /// (Prior knowledge is covered by the NIO clients above: curl 7.88 does not reuse a prior-knowledge connection for
    /// a second transfer, against any server.)
    @Test func curlKeepsItsH2CUpgradedConnectionAcrossAnUpgrade() async throws {
        let setup = try await UpstreamAndChain.start { Self.config(httpUpstream: $0) }
        defer { setup.stop() }
        let (scratch, chain) = (setup.scratch, setup.chain)
        let port = try #require(chain.port("web"))
        let count = 40
        // One transfer every 100 ms on one connection; stdbuf makes curl write each line as its transfer ends.
        let curl = try Child(
            ["stdbuf", "-oL", "curl", "-s", "--http2", "--rate", "10/s", "-w", "%{http_code} %{local_port} %{num_connects} %{http_version}\\n"]
                + (0..<count).map { "http://127.0.0.1:\(port)/n\($0)" },
            in: scratch, name: "curl")
        defer { curl.stop() }
        func lines() -> [String] { curl.stdout.split(separator: "\n").map(String.init).filter { $0.hasPrefix("ok ") || $0.first?.isNumber == true } }
        try await waitUntil("curl's first transfers") { lines().count >= 6 }
        let old = chain.first.pid
        _ = try await chain.upgrade()
        try await waitUntil("the old process to exit") { !chain.isAlive(old) }
        #expect(try await curl.finish() == 0, "\(curl.stderr)")
        let output = curl.stdout
        for index in 0..<count { #expect(output.contains("ok /n\(index)\n"), "transfer \(index): \(output)") }
        let stats = output.split(separator: "\n").filter { $0.hasPrefix("200 ") }.map { $0.split(separator: " ") }
        #expect(stats.count == count, "\(output)")
        #expect(Set(stats.map { $0[1] }).count == 1, "one local port throughout: \(output)")
        #expect(stats.map { Int($0[2]) ?? -1 }.reduce(0, +) == 1, "one connect in all: \(output)")
        #expect(stats.allSatisfy { $0[3] == "2" }, "HTTP/2 throughout: \(output)")
        let metrics = try await admin(try #require(chain.port("@admin")), "/metrics") ?? ""
        #expect(metrics.contains("mesh_handover_connections_moved_total{role=\"new\"} 1"), "\(metrics)")
    }

    /// A client that never grants more than the initial 64 KB connection window cannot move (a fresh HTTP/2 handler
    /// can be told of a larger send window, never a smaller one): after the quiet-point timeout it gets GOAWAY,
    /// finishes its open streams, and new connections reach the new process.
    @Test func anHTTP2ConnectionWithNoQuietPointGetsGoAwayAndFinishesItsStreams() async throws {
        let setup = try await UpstreamAndChain.start { Self.config(httpUpstream: $0) }
        defer { setup.stop() }
        let (scratch, chain) = (setup.scratch, setup.chain)
        let port = try #require(chain.port("web"))
        let ready = scratch.path("h2.ready")
        let client = try Child(["python3", fixtures.appendingPathComponent("h2_goaway.py").path, "\(port)", ready], in: scratch, name: "h2")
        defer { client.stop() }
        try await waitUntil("an HTTP/2 response") { FileManager.default.fileExists(atPath: ready) }
        let old = chain.first.pid
        _ = try await chain.upgrade()
        #expect(try await client.finish() == 0, "\(client.stderr)")
        let result = try #require(JSONSerialization.jsonObject(with: Data(client.stdout.utf8)) as? [String: Any])
        #expect(result["goaway"] as? Bool == true, "\(result)")
        #expect(result["error_code"] as? Int == 0, "\(result)")
        #expect(result["reset"] == nil, "no stream was reset: \(result)")
        #expect(result["after"] as? Int == result["open_at_goaway"] as? Int, "the streams open at GOAWAY finished: \(result)")
        try await waitUntil("the old process to exit") { !chain.isAlive(old) }
        let fresh = try await run(["curl", "-s", "--http2-prior-knowledge", "http://127.0.0.1:\(port)/after"], in: scratch)
        #expect(fresh.stdout == "ok /after\n", "\(fresh)")
    }
}
