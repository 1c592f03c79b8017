import ArgumentParser
import Foundation
import Logging
import Mesh
import NIOCore
import NIOPosix
import ServiceLifecycle

/// `divan mesh`: the Divan Mesh sidecar proxy.
struct MeshCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mesh",
        abstract: "Divan Mesh: a TCP and HTTP/1.1 sidecar proxy.",
        subcommands: [MeshRun.self, MeshCheck.self]
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

    func run() async throws {
        // A launcher may hand us a blocked SIGTERM/SIGINT (the mask survives exec); graceful shutdown needs them.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        sigprocmask(SIG_UNBLOCK, &signals, nil)
        let parsed = try loadMeshConfig(path: config)
        let level = Logger.Level(rawValue: logLevel) ?? .notice
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "divan.mesh")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        let proxy = try MeshProxy(config: parsed, group: group, logger: logger)
        let service = MeshService(proxy: proxy, drainTime: .seconds(drainSeconds))
        let runner = ServiceGroup(
            configuration: .init(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await runner.run()
        try await group.shutdownGracefully()
    }
}
