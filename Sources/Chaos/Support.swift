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

/// A loopback TCP port that was free a moment ago, chosen below the kernel's ephemeral port range.
/// The kernel hands out ports from that range to every outgoing connection and every bind to port 0,
/// so a port taken from it can be grabbed by someone else before the server meant to get it binds
/// it, or while a killed node is down before its restart on the same port (a chaos run failed to
/// start on "Address already in use" that way, beside other tests).
func freeLoopbackPort() throws -> Int {
    let ephemeralStart = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))
        .flatMap { $0.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } } ?? 32_768
    if ephemeralStart > 10_001 {
        for _ in 0..<200 {
            let port = Int.random(in: 10_000..<ephemeralStart)
            if bindLoopback(port: port) != nil { return port }
        }
    }
    guard let port = bindLoopback(port: 0) else { throw ChaosError("cannot bind a loopback port: errno \(errno)") }
    return port
}

/// Binds a loopback TCP socket to `port` (0: any), closes it, and returns the port bound, or nil.
private func bindLoopback(port: Int) -> Int? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    guard bound == 0 else { return nil }
    withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(fd, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
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
