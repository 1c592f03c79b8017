import ArgumentParser
import DivanServer
import Foundation
import Glibc

/// `divan bench upgrade`: Divan Mesh's hot upgrade under load, against HAProxy's socket-passing
/// reload and nginx's reload, in one run.
struct BenchUpgrade: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "upgrade",
        abstract: "Measure hot upgrades under load: Divan Mesh against HAProxy (-x, -sf) and nginx (-s reload).",
        discussion: """
            Each proxy in turn sits between the same upstream (nginx answering "ok") and the same load: \
            CONNECTIONS long-lived keep-alive connections, each sending one request per INTERVAL seconds. \
            Every EVERY seconds the proxy is upgraded or reloaded: `divan mesh upgrade` (listeners and live \
            connections move to a new process, over --window seconds), a new `haproxy -x STATS_SOCKET -sf \
            OLD_PID`, `nginx -s reload`, and nginx's binary upgrade (USR2 to the master, then WINCH and QUIT to \
            the old one; nginx runs daemonized for it, since a master that keeps its parent ignores USR2). A connection the server closes is reopened and counted as not \
            surviving that reload. Prints requests, failed requests, resets, refused connections, the fewest \
            connections that survived a reload, p50 and p99, p99 within 1 s after a reload starts, and how \
            long the old process (Divan, HAProxy) or old workers (nginx) took to be gone. Then, with --idle N, \
            how long Divan Mesh takes to hand over N idle connections (window 0), and how many answer a \
            request afterwards. Needs nginx and haproxy (scripts/bench-upgrade installs them).
            """)

    @Option(help: "Seconds of load per proxy.") var seconds = 30.0
    @Option(help: "Long-lived keep-alive connections of the load.") var connections = 1000
    @Option(help: "Seconds between two requests of one connection.") var interval = 1.0
    @Option(help: "Seconds between two reloads.") var every = 2.0
    @Option(help: "Divan's --handover-window, in seconds.") var window = 1.0
    @Option(help: "Idle connections for the handover-time measurement (0 skips it).") var idle = 10_000
    @Option(help: "Proxies to measure, comma-separated: divan, haproxy, nginx (-s reload), nginx-usr2 (binary upgrade).")
    var proxies = "divan,haproxy,nginx,nginx-usr2"

    func validate() throws {
        guard seconds > interval + every + 2, connections > 0, interval > 0, every > 0, window >= 0, idle >= 0 else {
            throw ValidationError("--seconds must exceed --interval + --every + 2, and every count must be positive")
        }
        let unknown = Set(proxyList).subtracting(["divan", "haproxy", "nginx", "nginx-usr2"])
        guard unknown.isEmpty else { throw ValidationError("unknown proxies: \(unknown.sorted())") }
    }

    private var proxyList: [String] { proxies.split(separator: ",").map(String.init) }

    func run() async throws {
        var tools: [String: String] = [:]
        for tool in ["nginx"] + proxyList.filter({ $0 == "haproxy" }) {
            guard let path = executable(tool) else { throw ValidationError("\(tool) is not installed (scripts/bench-upgrade installs haproxy and nginx-light)") }
            tools[tool] = path
        }
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        guard Int(limit.rlim_cur) > connections + idle + 1_000 else {
            throw ValidationError("the open-file limit (\(limit.rlim_cur)) is too low for \(connections) + \(idle) connections")
        }
        let children = try BenchChildren(scratchNamed: "upgrade")
        let signals = children.stopOnSignals()
        defer {
            children.stopAllAndClean()
            signals.forEach { $0.cancel() }
        }
        chmod(children.directory, 0o755)
        let bench = UpgradeBenchRun(
            tools: tools, children: children, seconds: seconds, connections: connections, interval: interval, every: every,
            window: window)
        say("divan bench upgrade: \(connections) connections, one request per \(interval) s each, a reload every \(every) s for \(seconds) s")
        say("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, load average \(loadAverage())")
        #if DEBUG
        say("this is a debug build of divan: its latency and timing figures are not comparable (scripts/bench-upgrade builds a release)")
        #endif
        let upstream = try await bench.startUpstream()
        var rows: [(String, UpgradeBenchRun.Figures)] = []
        var idleResult: UpgradeBenchRun.IdleHandover?
        for proxy in proxyList {
            switch proxy {
            case "divan":
                rows.append(("Divan Mesh (divan mesh upgrade)", try await bench.measureDivan(upstreamPort: upstream)))
                if idle > 0 { idleResult = try await bench.measureIdleHandover(idle, upstreamPort: upstream) }
            case "haproxy": rows.append(("HAProxy (-x, -sf)", try await bench.measureHAProxy(upstreamPort: upstream)))
            case "nginx": rows.append(("nginx (-s reload)", try await bench.measureNginx(upstreamPort: upstream)))
            default: rows.append(("nginx (USR2 binary upgrade)", try await bench.measureNginxBinaryUpgrade(upstreamPort: upstream)))
            }
        }
        say("machine after the run: load average \(loadAverage())")
        print("\n\(connections) keep-alive connections, one request per \(interval) s each, a reload every \(every) s for \(seconds) s\n")
        print("| proxy | reloads | requests | failed | resets | refused | connections surviving a reload (fewest) | p50 ms | p99 ms | p99 ms in 1 s after a reload | old process gone after, mean / max s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for (name, figures) in rows {
            print(
                "| \(name) | \(figures.reloads) | \(figures.requests) | \(figures.failed) | \(figures.resets) | \(figures.refused) "
                    + "| \(figures.fewestSurvivors) / \(connections) | \(fixed(figures.p50, digits: 2)) | \(fixed(figures.p99, digits: 2)) "
                    + "| \(fixed(figures.p99AfterReload, digits: 2)) | \(fixed(figures.goneMean, digits: 2)) / \(fixed(figures.goneMax, digits: 2)) |")
        }
        if let idleResult {
            print(
                "\nDivan Mesh, \(idleResult.opened) idle connections, window 0: \(idleResult.moved) moved in "
                    + "\(idleResult.seconds.map { fixed($0, digits: 2) + " s" } ?? "(no handover logged)"); \(idleResult.answered) answered a request afterwards.")
        }
    }
}

/// One run of `divan bench upgrade`: the upstream, each proxy under load with its reloads, and the figures.
struct UpgradeBenchRun {
    /// What one proxy's run measured.
    struct Figures {
        var reloads = 0
        var requests = 0
        var failed = 0
        var resets = 0
        var refused = 0
        var fewestSurvivors = 0
        var p50 = 0.0
        var p99 = 0.0
        var p99AfterReload = 0.0
        var goneMean = 0.0
        var goneMax = 0.0
    }

    /// The idle-connection handover measurement.
    struct IdleHandover {
        var opened: Int
        var moved: Int
        var seconds: Double?
        var answered: Int
    }

    let tools: [String: String]
    let children: BenchChildren
    let seconds: Double
    let connections: Int
    let interval: Double
    let every: Double
    let window: Double

    private var directory: String { children.directory }
    private var divan: String { URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path }

    func startUpstream() async throws -> Int {
        let port = try freeLoopbackPort()
        try FileManager.default.createDirectory(atPath: "\(directory)/upstream/logs", withIntermediateDirectories: true)
        try """
            daemon off; worker_processes 1; pid \(directory)/upstream/nginx.pid; error_log \(directory)/upstream/logs/error.log;
            events { worker_connections 8192; }
            http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
              server { listen 127.0.0.1:\(port); location / { return 200 "ok\\n"; } } }
            """.write(toFile: "\(directory)/upstream/nginx.conf", atomically: true, encoding: .utf8)
        _ = try children.launch(tools["nginx"]!, ["-p", "\(directory)/upstream", "-c", "\(directory)/upstream/nginx.conf"])
        try await waitForPort(port, what: "the nginx upstream")
        return port
    }

    // MARK: - The proxies

    func measureDivan(upstreamPort: Int) async throws -> Figures {
        let (port, socket, first) = try await startDivan(upstreamPort: upstreamPort, window: window, name: "divan")
        return try await underLoad(port: port) {
            let (old, new) = try upgradeDivan(socket: socket)
            children.adopt(new)
            return old == first.pid ? [{ first.isRunning }] : [{ isAlive(old) }]
        }
    }

    /// Starts `divan mesh run` in front of the upstream; returns its port, upgrade socket and process.
    private func startDivan(upstreamPort: Int, window: Double, name: String) async throws -> (Int, String, ChildProcess) {
        let port = try freeLoopbackPort()
        let admin = try freeLoopbackPort()
        try """
            admin:
              address: 127.0.0.1:\(admin)
            listeners:
              - name: web
                address: 127.0.0.1:\(port)
                idle_timeout: 300s
                routes:
                  - cluster: backend
            clusters:
              - name: backend
                endpoints: [127.0.0.1:\(upstreamPort)]
                max_idle_connections_per_endpoint: 1024
            """.write(toFile: "\(directory)/\(name).yaml", atomically: true, encoding: .utf8)
        let socket = "\(directory)/\(name)-upgrade/mesh.sock"
        let log = "\(directory)/\(name).log"
        let process = try children.launch(
            divan,
            [
                "mesh", "run", "--config", "\(directory)/\(name).yaml", "--upgrade-socket", socket, "--threads", "1",
                "--handover-window", "\(window)", "--drain-seconds", "10",
            ], log: log)
        try await waitForPort(port, what: "divan mesh run (log: \(log))")
        return (port, socket, process)
    }

    /// Asks the running Divan Mesh to upgrade; returns the old and the new process ids.
    private func upgradeDivan(socket: String) throws -> (pid_t, pid_t) {
        let text = output(of: divan, ["mesh", "upgrade", "--socket", socket]) ?? ""
        // "pid OLD handed over to pid NEW"
        let words = text.split(whereSeparator: \.isWhitespace)
        guard let at = words.firstIndex(of: "handed"), at >= 1, words.count > at + 4,
              let old = pid_t(words[at - 1]), let new = pid_t(words[at + 4])
        else { throw ValidationError("divan mesh upgrade failed: \(text)") }
        return (old, new)
    }

    func measureHAProxy(upstreamPort: Int) async throws -> Figures {
        let port = try freeLoopbackPort()
        let stats = "\(directory)/haproxy.sock"
        let config = "\(directory)/haproxy.cfg"
        try """
            global
              maxconn 8000
              nbthread 1
              stats socket \(stats) mode 600 level admin expose-fd listeners
              hard-stop-after 60s
            defaults
              mode http
              timeout connect 2s
              timeout client 300s
              timeout server 300s
              option http-keep-alive
              http-reuse always
            frontend web
              bind 127.0.0.1:\(port)
              default_backend backend
            backend backend
              server upstream 127.0.0.1:\(upstreamPort)

            """.write(toFile: config, atomically: true, encoding: .utf8)
        let haproxy = tools["haproxy"]!
        var current = try children.launch(haproxy, ["-db", "-f", config])
        try await waitForPort(port, what: "haproxy")
        guard await waitUntil(seconds: 10, { FileManager.default.fileExists(atPath: stats) }) else {
            throw ValidationError("haproxy made no stats socket")
        }
        return try await underLoad(port: port) {
            let old = current
            current = try children.launch(haproxy, ["-db", "-f", config, "-x", stats, "-sf", "\(old.pid)"])
            return [{ old.isRunning }]
        }
    }

    func measureNginx(upstreamPort: Int) async throws -> Figures {
        let port = try freeLoopbackPort()
        let prefix = "\(directory)/proxy"
        try writeNginxProxyConfig(prefix: prefix, daemon: false, port: port, upstreamPort: upstreamPort)
        let nginx = tools["nginx"]!
        let master = try children.launch(nginx, ["-p", prefix, "-c", "\(prefix)/nginx.conf"])
        try await waitForPort(port, what: "nginx")
        return try await underLoad(port: port) {
            let workers = processTree(master.pid).dropFirst()
            _ = output(of: nginx, ["-p", prefix, "-c", "\(prefix)/nginx.conf", "-s", "reload"])
            return workers.map { worker in { isAlive(worker) } }
        }
    }

    /// Writes `PREFIX/nginx.conf`: one worker proxying `port` to the upstream with a keep-alive pool.
    private func writeNginxProxyConfig(prefix: String, daemon: Bool, port: Int, upstreamPort: Int) throws {
        try FileManager.default.createDirectory(atPath: "\(prefix)/logs", withIntermediateDirectories: true)
        try """
            daemon \(daemon ? "on" : "off"); worker_processes 1; pid \(prefix)/nginx.pid; error_log \(prefix)/logs/error.log;
            worker_rlimit_nofile 65536; worker_shutdown_timeout 60s;
            events { worker_connections 20000; }
            http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
              upstream backend { server 127.0.0.1:\(upstreamPort); keepalive 1024; }
              server { listen 127.0.0.1:\(port);
                location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
            """.write(toFile: "\(prefix)/nginx.conf", atomically: true, encoding: .utf8)
    }

    /// nginx's binary upgrade: USR2 makes the master start a new master (same binary here), then
    /// WINCH and QUIT retire the old master and its workers. A master ignores USR2 while its parent
    /// is the one that started it, so nginx runs daemonized here and is found through its pid file.
    func measureNginxBinaryUpgrade(upstreamPort: Int) async throws -> Figures {
        let port = try freeLoopbackPort()
        let prefix = "\(directory)/proxy-usr2"
        let pidFile = "\(prefix)/nginx.pid"
        try writeNginxProxyConfig(prefix: prefix, daemon: true, port: port, upstreamPort: upstreamPort)
        let nginx = tools["nginx"]!
        func master() -> pid_t? {
            (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        // Not `output(of:)`: the daemon keeps the pipe of its standard output open.
        let starter = try children.launch(nginx, ["-p", prefix, "-c", "\(prefix)/nginx.conf"])
        starter.waitUntilExit()
        children.release(starter.pid)
        guard await waitUntil(seconds: 10, { master() != nil }), let first = master() else {
            throw ValidationError("daemonized nginx wrote no pid file")
        }
        children.adopt(first)
        try await waitForPort(port, what: "nginx (daemonized)")
        return try await underLoad(port: port) {
            guard let old = master() else { throw ValidationError("nginx's pid file is gone") }
            kill(old, SIGUSR2)
            let deadline = Date().addingTimeInterval(10)
            while (master() == nil || master() == old) && Date() < deadline { usleep(5_000) }
            guard let new = master(), new != old else { throw ValidationError("nginx started no new master on USR2") }
            children.adopt(new)
            let retired = [old] + processTree(old).dropFirst().filter { $0 != new }
            kill(old, SIGWINCH)
            kill(old, SIGQUIT)
            children.release(old)
            return retired.map { pid in { isAlive(pid) } }
        }
    }

    // MARK: - The load and the figures

    /// Runs the load for `seconds`, calling `reload` every `every` seconds once every connection is
    /// open; `reload` returns, for each process the reload retires, a test of whether it still runs.
    private func underLoad(port: Int, reload: @escaping () throws -> [@Sendable () -> Bool]) async throws -> Figures {
        let load = UpgradeLoad(port: port, connections: connections, interval: interval, threads: 1)
        let start = Date()
        let end = start.addingTimeInterval(seconds)
        async let outcome = load.run(until: end)
        try await Task.sleep(for: .seconds(interval + 1))
        let lastReload = end.addingTimeInterval(-interval - 2)
        var reloads: [Date] = []
        var watchers: [Task<Double, Never>] = []
        while Date().addingTimeInterval(every) < lastReload {
            try await Task.sleep(for: .seconds(every))
            let started = Date()
            reloads.append(started)
            let retired = try reload()
            watchers.append(
                Task {
                    while retired.contains(where: { $0() }) && Date().timeIntervalSince(started) < 120 {
                        try? await Task.sleep(for: .milliseconds(10))
                    }
                    return Date().timeIntervalSince(started)
                })
        }
        let seen = await outcome
        var gone: [Double] = []
        for watcher in watchers { gone.append(await watcher.value) }
        return figures(seen, reloads: reloads, gone: gone)
    }

    private func figures(_ seen: UpgradeLoad.Outcome, reloads: [Date], gone: [Double]) -> Figures {
        func percentile(_ values: [Double], _ p: Double) -> Double {
            guard !values.isEmpty else { return 0 }
            let sorted = values.sorted()
            return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] * 1000
        }
        let all = seen.latencies.map(\.1)
        let afterReload = seen.latencies.filter { start, _ in reloads.contains { $0 <= start && start < $0.addingTimeInterval(1) } }.map(\.1)
        let survivors = reloads.indices.map { index -> Int in
            let from = reloads[index]
            let to = index + 1 < reloads.count ? reloads[index + 1] : .distantFuture
            return connections - Set(seen.reconnects.filter { from <= $0.0 && $0.0 < to }.map(\.1)).count
        }
        return Figures(
            reloads: reloads.count, requests: seen.requests, failed: seen.failed, resets: seen.resets, refused: seen.refused,
            fewestSurvivors: survivors.min() ?? connections, p50: percentile(all, 0.50), p99: percentile(all, 0.99),
            p99AfterReload: percentile(afterReload, 0.99), goneMean: gone.isEmpty ? 0 : gone.reduce(0, +) / Double(gone.count),
            goneMax: gone.max() ?? 0)
    }

    // MARK: - Idle handover

    /// Starts a Divan Mesh with a handover window of 0, opens `count` idle connections to it, upgrades
    /// it once, and reads how long the handover took from its log; then asks a request on each.
    func measureIdleHandover(_ count: Int, upstreamPort: Int) async throws -> IdleHandover {
        let (port, socket, _) = try await startDivan(upstreamPort: upstreamPort, window: 0, name: "divan-idle")
        let log = "\(directory)/divan-idle.log"
        let sockets = (0..<count).compactMap { _ in BlockingSocket(port: port) }
        defer { sockets.forEach { $0.close() } }
        try await Task.sleep(for: .seconds(1))
        let before = handoverLines(log).count
        let (_, new) = try upgradeDivan(socket: socket)
        children.adopt(new)
        _ = await waitUntil(seconds: 60) { handoverLines(log).count > before }
        let line = handoverLines(log).last ?? ""
        func field(_ name: String) -> Substring? {
            guard let range = line.range(of: "\(name)=") else { return nil }
            return line[range.upperBound...].prefix { !$0.isWhitespace }
        }
        let moved = field("connections").flatMap { Int($0) } ?? 0
        let duration = field("duration").flatMap { Double($0) }
        let answered = sockets.filter { $0.askOK() }.count
        return IdleHandover(opened: sockets.count, moved: moved, seconds: duration, answered: answered)
    }

    private func handoverLines(_ log: String) -> [Substring] {
        ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.contains("handover: finished") }
    }

    private func waitForPort(_ port: Int, what: String) async throws {
        guard await waitUntil(seconds: 15, { BlockingSocket(port: port).map { $0.close() } != nil }) else {
            throw ValidationError("\(what) did not listen on port \(port) within 15 s")
        }
    }
}

/// Whether a process other than our own child still runs (a zombie does not).
private func isAlive(_ pid: pid_t) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
    return stat[stat.index(close, offsetBy: 2)] != "Z"
}

/// A plain blocking TCP connection to 127.0.0.1, for the idle connections.
private struct BlockingSocket {
    let fd: Int32

    init?(port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            Glibc.close(fd)
            return nil
        }
        self.fd = fd
    }

    /// Sends a GET and reads the status line (5 s at most): true for a 200.
    func askOK() -> Bool {
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else { return false }
        var status = [UInt8](repeating: 0, count: 12)
        var got = 0
        while got < status.count {
            let count = status.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, $0.count - got, 0) }
            guard count > 0 else { return false }
            got += count
        }
        return status.starts(with: Array("HTTP/1.1 200".utf8))
    }

    func close() { Glibc.close(fd) }
}
