import ArgumentParser

/// `divan debug …`: hidden tools that tests drive as child processes.
struct Debug: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Tools for tests and debugging.",
        shouldDisplay: false,
        subcommands: [DebugWALWriter.self]
    )
}
