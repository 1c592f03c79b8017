import ArgumentParser
import Foundation
import Linearizability

extension RegisterModel: ExpressibleByArgument {}

/// `divan check`: decides whether a recorded history is linearizable.
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check a JSON Lines history for linearizability, one key at a time.",
        discussion: """
            The history format is described in docs/linearizability.md.
            Exit codes: 0 linearizable; 1 not linearizable (the smallest window that cannot be ordered \
            is printed and drawn); 2 the file is unreadable or malformed; 3 unknown (the time limit \
            passed before the checker could decide).
            """
    )

    @Argument(help: "The history file, in JSON Lines.")
    var history: String

    @Option(help: "The model each key is checked against: register or cas-register.")
    var model: RegisterModel

    @Option(help: "Seconds to search before giving up with \"unknown\".")
    var timeout: Double = 60

    @Option(help: "Where to write the HTML timeline of a violation (default: HISTORY.violation.html).")
    var visualize: String?

    func validate() throws {
        guard timeout > 0, timeout.isFinite else { throw ValidationError("--timeout must be a positive number") }
    }

    func run() throws {
        let text: String
        do {
            text = try String(contentsOfFile: history, encoding: .utf8)
        } catch {
            printError("divan check: cannot read \(history): \(error.localizedDescription)")
            throw ExitCode(2)
        }
        let parsed: History
        do {
            parsed = try HistoryFile.parse(text, model: model)
        } catch {
            printError("\(history):\(error.line): \(error.message)")
            throw ExitCode(2)
        }

        let clock = ContinuousClock()
        let started = clock.now
        let result = Checker(model: model, timeout: .seconds(timeout)).check(parsed)
        let elapsed = started.duration(to: clock.now)
        let keys = Set(parsed.operations.map(\.key)).count
        switch result {
        case .linearizable:
            let milliseconds = Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) / 1e15
            print(
                "linearizable: \(parsed.operations.count) operations on \(keys) key(s), checked in "
                    + String(format: "%.1f ms", milliseconds))
        case .notLinearizable(let violation):
            print(violation)
            let path = visualize ?? history + ".violation.html"
            do {
                try Timeline.html(for: violation).write(toFile: path, atomically: true, encoding: .utf8)
                print("Timeline written to \(path)")
            } catch {
                printError("divan check: cannot write the timeline to \(path): \(error.localizedDescription)")
            }
            throw ExitCode(1)
        case .unknown:
            print(
                "unknown: no decision within the \(timeout) s limit (\(parsed.operations.count) operations on "
                    + "\(keys) key(s)); the history may or may not be linearizable. Retry with a larger --timeout.")
            throw ExitCode(3)
        }
    }

    private func printError(_ message: String) {
        FileHandle.standardError.write(Data((message + "\n").utf8))
    }
}
