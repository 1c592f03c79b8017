import Foundation
import Synchronization

/// SplitMix64: the harness's one source of randomness, so a seed replays the same schedule of
/// faults and the same choices of operations (timing still varies from run to run).
struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// An independent generator for one consumer (a client, the nemesis), derived from this one.
    mutating func fork() -> SeededRandom {
        SeededRandom(seed: next())
    }
}

/// Nanoseconds on the monotonic clock since the run started: the time axis of the history, the
/// nemesis log and the timeline.
struct RunClock: Sendable {
    let origin = ContinuousClock.now

    var nanoseconds: Int64 {
        let elapsed = origin.duration(to: .now)
        return elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
    }

    var seconds: Double { Double(nanoseconds) / 1e9 }
}

/// Sleeps the calling thread (the harness runs on its own threads, never on the cooperative pool).
func pause(_ seconds: Double) {
    guard seconds > 0 else { return }
    usleep(UInt32(min(seconds, 4_000) * 1_000_000))
}

/// Polls `condition` every 50 ms until it holds or `seconds` pass; returns whether it held.
func waitUntil(within seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while true {
        if condition() { return true }
        guard ContinuousClock.now < deadline else { return false }
        usleep(50_000)
    }
}

/// Runs `bodies` on their own OS threads and returns when all have finished.
func runOnThreads(_ bodies: [@Sendable () -> Void]) {
    let group = DispatchGroup()
    for body in bodies {
        group.enter()
        let thread = Thread {
            body()
            group.leave()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
    group.wait()
}

/// A failure of the harness itself (not of the cluster under test).
public struct ChaosError: Error, CustomStringConvertible {
    public var description: String

    init(_ description: String) {
        self.description = description
    }
}

/// A value shared between the harness's threads.
final class Shared<Value: Sendable>: Sendable {
    private let storage: Mutex<Value>

    init(_ value: Value) {
        storage = Mutex(value)
    }

    var value: Value { storage.withLock { $0 } }

    @discardableResult
    func update<Result: Sendable>(_ body: (inout Value) -> Result) -> Result {
        storage.withLock { body(&$0) }
    }
}
