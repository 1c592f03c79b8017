import Foundation

/// The `divan` executable that `swift build --build-tests` builds next to the test bundle, for the
/// test suites that start real processes.
public let divanExecutable: URL = {
    var directory = Bundle.main.bundleURL
    while directory.path != "/" {
        let candidate = directory.appendingPathComponent("divan")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        directory.deleteLastPathComponent()
    }
    return URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../.build/debug/divan").standardized
}()
