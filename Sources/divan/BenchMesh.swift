import ArgumentParser
import DivanServer
import Foundation

/// `divan bench mesh`: the same HTTP load through Divan Mesh, HAProxy and nginx as reverse proxies in
/// front of one nginx upstream, in one run, with ratios to HAProxy.
struct BenchMesh: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mesh",
        abstract: "Measure Divan Mesh against HAProxy and nginx as HTTP/1.1 and HTTP/2 (h2c) reverse proxies.",
        discussion: """
            One nginx upstream serves a 1 KiB file. Each proxy in turn (this executable's `mesh run`, \
            haproxy, nginx; one worker thread each, keep-alive and a connection pool toward the upstream) \
            gets 2 s of warm-up and then the measured load: wrk (2 threads, CONNECTIONS keep-alive \
            connections, latency percentiles), then h2load (CONNECTIONS connections with STREAMS streams \
            each, HTTP/2 with prior knowledge toward the proxy, HTTP/1.1 upstream). On two cores or more, \
            wrk, h2load and the upstream are pinned to core 0 and the proxy under test to core 1 (taskset), \
            so that every proxy gets the same CPU budget. Proxy CPU per request is the proxy's user + system \
            time (/proc, workers included) over the measured window divided by the requests completed. \
            Needs wrk, h2load, haproxy, nginx and taskset (scripts/bench-mesh installs them).
            """)

    @Option(help: "Seconds of measured load per proxy and protocol.") var seconds = 15
    @Option(help: "Keep-alive connections of the load.") var connections = 64
    @Option(help: "Concurrent streams per HTTP/2 connection (h2load -m).") var streams = 10
    @Option(help: "Proxies to measure, comma-separated: divan, haproxy, nginx.") var proxies = "divan,haproxy,nginx"

    func validate() throws {
        guard seconds > 0, connections > 0, streams > 0 else { throw ValidationError("every count must be positive") }
        let unknown = Set(proxyList).subtracting(["divan", "haproxy", "nginx"])
        guard unknown.isEmpty else { throw ValidationError("unknown proxies: \(unknown.sorted())") }
    }

    private var proxyList: [String] { proxies.split(separator: ",").map(String.init) }

    func run() async throws {
        var tools: [String: String] = [:]
        for tool in ["wrk", "h2load", "nginx", "taskset", "curl"] + proxyList.filter({ $0 == "haproxy" }) {
            guard let path = executable(tool) else {
                throw ValidationError("\(tool) is not installed (scripts/bench-mesh installs wrk, haproxy, nginx-light, nghttp2-client, curl)")
            }
            tools[tool] = path
        }
        let children = try BenchChildren(scratchNamed: "mesh")
        let signals = children.stopOnSignals()
        defer {
            children.stopAllAndClean()
            signals.forEach { $0.cancel() }
        }
        // nginx's workers drop to an unprivileged user and must read the page.
        chmod(children.directory, 0o755)
        let bench = MeshBenchRun(
            tools: tools, children: children, seconds: seconds, connections: connections, streams: streams,
            pinned: ProcessInfo.processInfo.activeProcessorCount >= 2)
        say("divan bench mesh: \(seconds) s per proxy and protocol, \(connections) connections, \(streams) streams per HTTP/2 connection")
        say("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, load average \(loadAverage())"
            + (bench.pinned ? "; load and upstream on core 0, proxy on core 1" : "; one core: nothing pinned"))
        #if DEBUG
        say("this is a debug build of divan: its figures are not comparable (scripts/bench-mesh builds a release)")
        #endif
        let upstream = try await bench.startUpstream()
        var rows: [MeshBenchRun.Row] = []
        for proxy in proxyList {
            rows.append(try await bench.measure(proxy, upstreamPort: upstream))
        }
        say("machine after the run: load average \(loadAverage())")
        print("")
        MeshBenchRun.printTables(rows, seconds: seconds, connections: connections, streams: streams)
    }
}

/// One run of `divan bench mesh`: the upstream, the proxies' configurations, the load and its parsing.
struct MeshBenchRun {
    /// What one proxy did under both loads.
    struct Row {
        var proxy: String
        var http1: HTTP1Figures
        var http2: HTTP2Figures
    }

    struct HTTP1Figures {
        var requestsPerSecond: Double
        var p50: Double
        var p99: Double
        var cpuMicrosecondsPerRequest: Double
        var non2xx: Int
        var socketErrors: String
    }

    struct HTTP2Figures {
        var requestsPerSecond: Double
        var meanMilliseconds: Double
        var cpuMicrosecondsPerRequest: Double
        var failed: Int
    }

    let tools: [String: String]
    let children: BenchChildren
    let seconds: Int
    let connections: Int
    let streams: Int
    let pinned: Bool

    private var directory: String { children.directory }

    /// A program started on `core` when pinning, else as is.
    private func pinnedCommand(_ core: Int, _ program: String, _ arguments: [String]) -> (String, [String]) {
        pinned ? (tools["taskset"]!, ["-c", "\(core)", program] + arguments) : (program, arguments)
    }

    /// Starts nginx serving a 1 KiB page on core 0; returns its port.
    func startUpstream() async throws -> Int {
        let port = try freeLoopbackPort()
        try FileManager.default.createDirectory(atPath: "\(directory)/www", withIntermediateDirectories: true)
        try String(repeating: "x", count: 1024).write(toFile: "\(directory)/www/index.html", atomically: true, encoding: .utf8)
        try """
            worker_processes 1;
            daemon off;
            pid \(directory)/upstream.pid;
            error_log \(directory)/upstream-error.log;
            events { worker_connections 4096; }
            http {
                access_log off;
                keepalive_requests 1000000;
                server { listen 127.0.0.1:\(port); root \(directory)/www; location / { index index.html; } }
            }
            """.write(toFile: "\(directory)/upstream.conf", atomically: true, encoding: .utf8)
        let (program, arguments) = pinnedCommand(0, tools["nginx"]!, ["-c", "\(directory)/upstream.conf", "-p", directory])
        _ = try children.launch(program, arguments, log: "\(directory)/upstream.log")
        try await waitForHTTP(port, what: "the nginx upstream")
        return port
    }

    /// Starts `proxy` in front of the upstream, measures it under both loads, and stops it.
    func measure(_ proxy: String, upstreamPort: Int) async throws -> Row {
        let port = try freeLoopbackPort()
        let h2Port = proxy == "divan" ? port : try freeLoopbackPort()
        let (name, program, arguments) = try configure(proxy, port: port, h2Port: h2Port, upstreamPort: upstreamPort)
        let (pinnedProgram, pinnedArguments) = pinnedCommand(1, program, arguments)
        let child = try children.launch(pinnedProgram, pinnedArguments, log: "\(directory)/\(proxy).log")
        defer { children.stop(child) }
        try await waitForHTTP(port, what: name)
        say("\(name): HTTP/1.1 (wrk)")
        let http1 = try http1Load(port: port, pid: child.pid)
        say("\(name): HTTP/2 (h2load)")
        let http2 = try http2Load(port: h2Port, pid: child.pid)
        return Row(proxy: name, http1: http1, http2: http2)
    }

    /// The proxy's display name and command line, after writing its configuration.
    private func configure(_ proxy: String, port: Int, h2Port: Int, upstreamPort: Int) throws -> (String, String, [String]) {
        switch proxy {
        case "divan":
            try """
                listeners:
                  - name: bench
                    address: 127.0.0.1:\(port)
                    protocol: http
                    routes:
                      - cluster: upstream
                clusters:
                  - name: upstream
                    endpoints: [127.0.0.1:\(upstreamPort)]
                    max_idle_connections_per_endpoint: 128
                """.write(toFile: "\(directory)/mesh.yaml", atomically: true, encoding: .utf8)
            let divan = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
            return ("Divan Mesh", divan, ["mesh", "run", "--config", "\(directory)/mesh.yaml", "--threads", "1", "--log-level", "warning"])
        case "haproxy":
            try """
                global
                    nbthread 1
                    maxconn 4096
                defaults
                    mode http
                    timeout connect 2s
                    timeout client 60s
                    timeout server 60s
                    option http-keep-alive
                    http-reuse always
                frontend bench
                    bind 127.0.0.1:\(port)
                    default_backend upstream
                frontend bench_h2
                    bind 127.0.0.1:\(h2Port) proto h2
                    default_backend upstream
                backend upstream
                    server u1 127.0.0.1:\(upstreamPort)

                """.write(toFile: "\(directory)/haproxy.cfg", atomically: true, encoding: .utf8)
            let version = output(of: tools["haproxy"]!, ["-v"])?.split(separator: " ").dropFirst(2).first.map(String.init) ?? "?"
            return ("HAProxy \(version)", tools["haproxy"]!, ["-f", "\(directory)/haproxy.cfg", "-db"])
        default:
            let location = "location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
            try """
                worker_processes 1;
                daemon off;
                pid \(directory)/proxy.pid;
                error_log \(directory)/proxy-error.log;
                events { worker_connections 4096; }
                http {
                    access_log off;
                    keepalive_requests 1000000;
                    upstream backend { server 127.0.0.1:\(upstreamPort); keepalive 128; }
                    server { listen 127.0.0.1:\(port); \(location) }
                    server { listen 127.0.0.1:\(h2Port) http2; \(location) }
                }
                """.write(toFile: "\(directory)/nginx-proxy.conf", atomically: true, encoding: .utf8)
            return ("nginx \(nginxVersion())", tools["nginx"]!, ["-c", "\(directory)/nginx-proxy.conf", "-p", directory])
        }
    }

    private func nginxVersion() -> String {
        // `nginx -v` writes to standard error: ask for it on standard output through the shell.
        output(of: "/bin/sh", ["-c", "\(tools["nginx"]!) -v 2>&1"])?.split(separator: "/").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? "?"
    }

    private func waitForHTTP(_ port: Int, what: String) async throws {
        let ready = await waitUntil(seconds: 15) {
            output(of: tools["curl"]!, ["-fs", "-o", "/dev/null", "http://127.0.0.1:\(port)/"]) != nil
        }
        guard ready else { throw ValidationError("\(what) did not answer on port \(port) within 15 s (logs in \(directory))") }
    }

    /// Runs a load program on core 0 and returns its output.
    private func load(_ tool: String, _ arguments: [String]) throws -> String {
        let (program, pinnedArguments) = pinnedCommand(0, tools[tool]!, arguments)
        guard let text = output(of: program, pinnedArguments) else { throw ValidationError("\(tool) \(arguments.joined(separator: " ")) failed") }
        return text
    }

    private func http1Load(port: Int, pid: pid_t) throws -> HTTP1Figures {
        let url = "http://127.0.0.1:\(port)/"
        _ = try load("wrk", ["-t2", "-c\(connections)", "-d2s", url])
        let before = cpuSeconds(processTree(pid))
        let text = try load("wrk", ["-t2", "-c\(connections)", "-d\(seconds)s", "--latency", url])
        let cpu = cpuSeconds(processTree(pid)) - before
        return try Self.parseWrk(text, cpuSeconds: cpu)
    }

    private func http2Load(port: Int, pid: pid_t) throws -> HTTP2Figures {
        let url = "http://127.0.0.1:\(port)/"
        _ = try load("h2load", ["-c\(connections)", "-m\(streams)", "-t2", "-D2", url])
        let before = cpuSeconds(processTree(pid))
        let text = try load("h2load", ["-c\(connections)", "-m\(streams)", "-t2", "-D\(seconds)", url])
        let cpu = cpuSeconds(processTree(pid)) - before
        return try Self.parseH2load(text, cpuSeconds: cpu)
    }

    /// Milliseconds from a figure with its unit, as wrk and h2load print them ("812.00us", "1.23ms", "2.01s").
    static func milliseconds(_ text: Substring) -> Double? {
        for (unit, scale) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0)] where text.hasSuffix(unit) {
            return Double(text.dropLast(unit.count)).map { $0 * scale }
        }
        return nil
    }

    static func parseWrk(_ text: String, cpuSeconds: Double) throws -> HTTP1Figures {
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        func percentile(_ name: String) -> Double? {
            lines.first { $0.hasPrefix(name + "%") }.flatMap { $0.split(separator: " ").last }.flatMap(milliseconds)
        }
        guard let rps = lines.first(where: { $0.hasPrefix("Requests/sec:") }).flatMap({ $0.split(separator: " ").last }).flatMap({ Double($0) }),
              let requests = lines.first(where: { $0.contains(" requests in ") }).flatMap({ $0.split(separator: " ").first }).flatMap({ Int($0) }),
              let p50 = percentile("50"), let p99 = percentile("99")
        else { throw ValidationError("cannot read wrk's output:\n\(text)") }
        let non2xx = lines.first { $0.hasPrefix("Non-2xx or 3xx responses:") }.flatMap { $0.split(separator: " ").last }.flatMap { Int($0) } ?? 0
        let socketErrors = lines.first { $0.hasPrefix("Socket errors:") }.map { String($0.dropFirst("Socket errors: ".count)) } ?? "none"
        return HTTP1Figures(
            requestsPerSecond: rps, p50: p50, p99: p99, cpuMicrosecondsPerRequest: cpuSeconds / Double(max(1, requests)) * 1e6,
            non2xx: non2xx, socketErrors: socketErrors)
    }

    static func parseH2load(_ text: String, cpuSeconds: Double) throws -> HTTP2Figures {
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        // "finished in 15.00s, 5762.40 req/s, ..."; "requests: T total, S started, D done, OK succeeded, F failed, ..."
        // "time for request:   min   max   mean   sd   +/- sd"
        guard let finished = lines.first(where: { $0.hasPrefix("finished in") })?.split(separator: " "), finished.count > 3,
              let rps = Double(finished[3]),
              let counts = lines.first(where: { $0.hasPrefix("requests:") })?.split(separator: " "), counts.count > 10,
              let succeeded = Int(counts[7]), let failed = Int(counts[9]),
              let timing = lines.first(where: { $0.hasPrefix("time for request:") })?.split(separator: " "), timing.count > 5,
              let mean = milliseconds(timing[5])
        else { throw ValidationError("cannot read h2load's output:\n\(text)") }
        return HTTP2Figures(
            requestsPerSecond: rps, meanMilliseconds: mean, cpuMicrosecondsPerRequest: cpuSeconds / Double(max(1, succeeded)) * 1e6,
            failed: failed)
    }

    static func printTables(_ rows: [Row], seconds: Int, connections: Int, streams: Int) {
        let reference = rows.first { $0.proxy.hasPrefix("HAProxy") }
        func ratio(_ value: Double, _ base: Double?) -> String { base.map { fixed(value / $0, digits: 2) + "×" } ?? "–" }
        print("HTTP/1.1: wrk -t2 -c\(connections) -d\(seconds)s, 1 KiB body from nginx, one proxy thread.\n")
        print("| proxy | req/s | p50 ms | p99 ms | proxy CPU µs/req | req/s vs HAProxy | p99 vs HAProxy | non-2xx | socket errors |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for row in rows {
            let figures = row.http1
            print(
                "| \(row.proxy) | \(fixed(figures.requestsPerSecond)) | \(fixed(figures.p50, digits: 2)) | \(fixed(figures.p99, digits: 2)) "
                    + "| \(fixed(figures.cpuMicrosecondsPerRequest, digits: 1)) | \(ratio(figures.requestsPerSecond, reference?.http1.requestsPerSecond)) "
                    + "| \(ratio(figures.p99, reference?.http1.p99)) | \(figures.non2xx) | \(figures.socketErrors) |")
        }
        print("\nHTTP/2 with prior knowledge: h2load -c\(connections) -m\(streams) -t2 -D\(seconds), HTTP/1.1 upstream.\n")
        print("| proxy | req/s | mean ms | proxy CPU µs/req | req/s vs HAProxy | failed |")
        print("|---|---:|---:|---:|---:|---:|")
        for row in rows {
            let figures = row.http2
            print(
                "| \(row.proxy) | \(fixed(figures.requestsPerSecond)) | \(fixed(figures.meanMilliseconds, digits: 2)) "
                    + "| \(fixed(figures.cpuMicrosecondsPerRequest, digits: 1)) | \(ratio(figures.requestsPerSecond, reference?.http2.requestsPerSecond)) "
                    + "| \(figures.failed) |")
        }
    }
}
