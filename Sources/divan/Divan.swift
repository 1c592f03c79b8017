import ArgumentParser

/// The `divan` command line: every Divan program is a subcommand of it.
@main
struct Divan: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "divan",
        abstract: "Divan: a Raft-replicated KV store and a hot-upgradable sidecar proxy.",
        subcommands: [UpCommand.self, ServerCommand.self, SimulateCommand.self, CheckCommand.self, ChaosCommand.self, MeshCommand.self, Bench.self, Debug.self]
    )
}
