import ArgumentParser
import Foundation
import HotUpgrade
import Logging
import Mesh
import SystemPackage
import NIOCore
import NIOPosix
import ServiceLifecycle

/// `divan mesh`: the Divan Mesh sidecar proxy.
struct MeshCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mesh",
        abstract: "Divan Mesh: a TCP and HTTP/1.1 sidecar proxy.",
        subcommands: [MeshRun.self, MeshCheck.self, MeshUpgrade.self]
    )
}

/// Reads and validates a config file, printing every problem with its line and field.
func loadMeshConfig(path: String) throws -> MeshConfig {
    let text: String
    do {
        text = try String(contentsOfFile: path, encoding: .utf8)
    } catch {
        throw ValidationError("cannot read \(path): \(error.localizedDescription)")
    }
    do {
        return try MeshConfig.parse(yaml: text)
    } catch {
        let lines = error.errors.map { "\(path):\($0.line): \($0.field): \($0.message)" }
        throw ValidationError(lines.joined(separator: "\n"))
    }
}

/// `divan mesh check --config FILE`: validates only.
struct MeshCheck: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check", abstract: "Validate a Mesh config file.")

    @Option(name: .long, help: "The YAML config file.")
    var config: String

    func run() async throws {
        let parsed = try loadMeshConfig(path: config)
        print("\(config): OK (\(parsed.listeners.count) listeners, \(parsed.clusters.count) clusters)")
    }
}

/// The upgrade socket's default path: a directory of its own (mode 0700) next to the config file.
func defaultUpgradeSocket(config: String) -> String {
    let directory = URL(fileURLWithPath: config).standardizedFileURL.deletingLastPathComponent()
    return directory.appendingPathComponent(".divan-upgrade").appendingPathComponent("mesh.sock").path
}

/// `divan mesh upgrade`: asks the running proxy to start the binary at its own path and hand over to it.
struct MeshUpgrade: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "upgrade", abstract: "Hot-upgrade a running Mesh proxy: listeners and live connections move to a new process.")

    @Option(name: .long, help: "The running proxy's upgrade socket.")
    var socket: String?

    @Option(name: .long, help: "The running proxy's config file (the socket defaults to one next to it).")
    var config: String?

    func validate() throws {
        if socket == nil && config == nil { throw ValidationError("give --socket or --config") }
    }

    func run() async throws {
        let path = FilePath(socket ?? defaultUpgradeSocket(config: config!))
        let reply: HandoverMessage
        do {
            let connection = try await connect(to: path)
            defer { connection.close() }
            try connection.send(.upgradeRequest)
            reply = try connection.receive()
        } catch {
            throw ValidationError("upgrade via \(path): \(error)")
        }
        switch reply {
        case .upgradeResult(let pid, true, let message):
            print("upgraded: \(message)")
            print("pid \(pid)")
        case .upgradeResult(_, false, let message):
            print("upgrade failed: \(message)")
            throw ExitCode(1)
        case .refuse(let reason):
            print("upgrade refused: \(reason)")
            throw ExitCode(1)
        default:
            print("upgrade: unexpected reply \(reply)")
            throw ExitCode(1)
        }
    }
}

extension MeshUpgrade {
    /// Connects to the upgrade socket, retrying for `patience`: right after an upgrade, the new
    /// process claims the socket path only once the old one has exited.
    func connect(to path: FilePath, patience: Duration = .seconds(5)) async throws -> HandoverSocket {
        let deadline = ContinuousClock.now + patience
        while true {
            do {
                return try HandoverSocket.connect(to: path, timeout: .seconds(60))
            } catch {
                guard ContinuousClock.now < deadline else { throw error }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }
}

/// `divan mesh run --config FILE`: runs the proxy until SIGTERM or SIGINT, then drains.
struct MeshRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run the Mesh proxy.")

    @Option(name: .long, help: "The YAML config file.")
    var config: String

    @Option(name: .long, help: "Log level: trace, debug, info (access log), notice, warning, error.")
    var logLevel: String = "notice"

    @Option(name: .long, help: "Event loop threads (default: one per core).")
    var threads: Int = System.coreCount

    @Option(name: .long, help: "Seconds to let in-flight requests finish on shutdown.")
    var drainSeconds: Int = 10

    @Option(name: .long, help: "The upgrade socket this process listens on (default: .divan-upgrade/mesh.sock next to the config).")
    var upgradeSocket: String?

    @Option(name: .long, help: "Take over from the process listening on this upgrade socket (then listen on it).")
    var takeover: String?

    @Option(name: .long, help: "Seconds over which a hot upgrade spreads the handover of live connections.")
    var handoverWindow: Double = 2

    func run() async throws {
        // A launcher may hand us a blocked SIGTERM/SIGINT (the mask survives exec); graceful shutdown needs them.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGHUP)
        sigprocmask(SIG_UNBLOCK, &signals, nil)
        let parsed = try loadMeshConfig(path: config)
        let level = Logger.Level(rawValue: logLevel) ?? .notice
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = {
            var logger = Logger(label: "divan.mesh")
            logger[metadataKey: "pid"] = "\(getpid())"
            return logger
        }()
        let socketPath = FilePath(takeover ?? upgradeSocket ?? defaultUpgradeSocket(config: config))
        let options = HandoverOptions(window: .milliseconds(Int(handoverWindow * 1000)), drainTimeout: .seconds(drainSeconds))
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        let proxy = try MeshProxy(config: parsed, group: group, logger: logger)
        if takeover != nil {
            do {
                _ = try await Takeover.run(path: socketPath, recipient: proxy, options: options, logger: logger)
            } catch {
                try? await group.shutdownGracefully()
                throw ExitCode(1)
            }
        }
        let successorArguments = [
            "mesh", "run", "--config", config, "--takeover", socketPath.string, "--log-level", logLevel,
            "--threads", "\(threads)", "--drain-seconds", "\(drainSeconds)", "--handover-window", "\(handoverWindow)",
        ]
        let executable = ownExecutablePath()
        let server = try UpgradeServer(path: socketPath, donor: proxy, options: options, logger: logger) {
            try spawn(executable, arguments: successorArguments)
        }
        let service = MeshService(proxy: proxy, drainTime: .seconds(drainSeconds))
        let runner = ServiceGroup(
            configuration: .init(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        // SIGHUP: the same as `divan mesh upgrade`.
        signal(SIGHUP, SIG_IGN)
        let hangups = DispatchSource.makeSignalSource(signal: SIGHUP)
        hangups.setEventHandler {
            Task {
                switch await server.upgrade() {
                case .success(let pid): logger.notice("SIGHUP: handed over", metadata: ["new_pid": "\(pid)"])
                case .failure(let failure): logger.error("SIGHUP: upgrade failed; still serving", metadata: ["reason": "\(failure)"])
                }
            }
        }
        hangups.resume()
        let upgrades = Task {
            if await server.run() {
                logger.notice("handed over; exiting")
                await runner.triggerGracefulShutdown()
            }
        }
        try await runner.run()
        hangups.cancel()
        server.stop()
        await upgrades.value
        try await group.shutdownGracefully()
    }
}

/// The path of the running binary, resolved at start: if it is replaced on disk later, the path names the new one.
func ownExecutablePath() -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard length > 0 else { return CommandLine.arguments[0] }
    return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Starts `executable` with `arguments` and the default disposition for every signal; returns its pid.
func spawn(_ executable: String, arguments: [String]) throws -> Int32 {
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var all = sigset_t()
    sigfillset(&all)
    var none = sigset_t()
    sigemptyset(&none)
    // The parent ignores SIGHUP (it reads it from a dispatch source); an ignored disposition would survive exec.
    posix_spawnattr_setsigdefault(&attributes, &all)
    posix_spawnattr_setsigmask(&attributes, &none)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
    // SwiftNIO's sockets are not close-on-exec: without this the new process would hold a copy of every client
    // and upstream connection, and their closes would never reach the peer.
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    // glibc ≥ 2.34 has it, but Swift's Glibc module does not declare it (it needs _GNU_SOURCE).
    typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, CInt) -> CInt
    guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else {
        throw ValidationError("posix_spawn_file_actions_addclosefrom_np is missing (glibc 2.34 or later is needed)")
    }
    _ = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3)
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
    guard result == 0 else { throw ValidationError("posix_spawn \(executable): \(String(cString: strerror(result)))") }
    return pid
}
