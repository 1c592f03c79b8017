import Foundation
import Linearizability
import Synchronization

/// One completed operation, for the report and the latency picture.
struct OperationSample: Sendable {
    var process: Int
    var function: HistoryEvent.Function
    var kind: HistoryEvent.Kind
    var node: Int
    var invoked: Int64
    var completed: Int64
}

/// The history as clients make it: events appended in the order they happen, each stamped inside
/// the lock, so the file order is the time order.
final class HistoryRecorder: Sendable {
    let clock: RunClock
    private let state = Mutex<(events: [HistoryEvent], samples: [OperationSample])>(([], []))

    init(clock: RunClock) {
        self.clock = clock
    }

    /// Records an event stamped now; returns the stamp.
    @discardableResult
    func record(process: Int, _ kind: HistoryEvent.Kind, _ function: HistoryEvent.Function, key: String, value: HistoryEvent.Payload) -> Int64 {
        state.withLock { state in
            let time = clock.nanoseconds
            state.events.append(HistoryEvent(process: process, kind: kind, function: function, key: key, value: value, time: time))
            return time
        }
    }

    func sample(_ sample: OperationSample) {
        state.withLock { $0.samples.append(sample) }
    }

    var events: [HistoryEvent] { state.withLock { $0.events } }
    var samples: [OperationSample] { state.withLock { $0.samples } }
}

/// What one request did, in the checker's terms.
struct Outcome {
    var kind: HistoryEvent.Kind
    var value: Value = .null
}

/// Runs one operation against one node and classifies the answer: a reply is `ok` or `fail`,
/// `-UNCERTAIN` and a lost or timed-out request are `info` (unknown outcome), and a request that
/// never left (no connection) is `fail`.
func perform(_ function: HistoryEvent.Function, key: String, value: HistoryEvent.Payload, on client: RESPClient, timeout: Double) -> Outcome {
    let arguments: [String]
    switch (function, value) {
    case (.read, _): arguments = ["GET", key]
    case (.write, .value(let new)): arguments = ["SET", key, "\(text(new))"]
    case (.cas, .compareAndSet(let expected, let new)): arguments = ["SET", key, "\(text(new))", "IFEQ", "\(text(expected))"]
    default: return Outcome(kind: .fail)
    }
    let reply: RESPReply
    do throws(Connection.Failure) {
        reply = try client.call(arguments, timeout: timeout)
    } catch {
        if case .notConnected = error { return Outcome(kind: .fail) }
        return Outcome(kind: .info)
    }
    switch reply {
    case .error(let message):
        return Outcome(kind: message.hasPrefix("UNCERTAIN") ? .info : .fail)
    case .bulk(let bytes) where function == .read:
        let string = String(decoding: bytes, as: UTF8.self)
        return Outcome(kind: .ok, value: Int(string).map(Value.integer) ?? .string(string))
    case .null where function == .read:
        return Outcome(kind: .ok, value: .null)
    case .null where function == .cas:
        // SET ... IFEQ answers nil when the value did not match: the write was not performed.
        return Outcome(kind: .fail)
    case .simple("OK") where function != .read:
        return Outcome(kind: .ok)
    default:
        return Outcome(kind: .info)
    }
}

private func text(_ value: Value) -> String {
    switch value {
    case .integer(let integer): return String(integer)
    case .string(let string): return string
    case .bool(let bool): return String(bool)
    case .null: return ""
    }
}

/// The clients: each on its own thread, one operation at a time, a random mix of reads, writes of
/// unique values, and compare-and-sets from the last value the client saw, on a few keys, each
/// operation on a random node (learners too), paced to `rate` operations per second in all.
struct Workload: Sendable {
    var clients: Int
    var keys: [String]
    var rate: Double
    var timeout: Double
    var respPorts: [Int: Int]

    /// Runs until `end` (seconds on the run clock). A client whose operation ended with an unknown
    /// outcome continues as a new process (Jepsen's convention): the old operation may still be
    /// pending, and a process runs one operation at a time.
    func run(until end: Double, recorder: HistoryRecorder, random: SeededRandom) {
        let nextValue = UniqueValues()
        var random = random
        let bodies: [@Sendable () -> Void] = (0..<clients).map { index in
            let seed = random.fork()
            return { runClient(index, until: end, recorder: recorder, random: seed, nextValue: nextValue) }
        }
        runOnThreads(bodies)
    }

    private func runClient(_ index: Int, until end: Double, recorder: HistoryRecorder, random: SeededRandom, nextValue: UniqueValues) {
        var random = random
        var process = index
        var known: [String: Int] = [:]
        var connections: [Int: RESPClient] = [:]
        let nodes = respPorts.keys.sorted()
        let meanPause = Double(clients) / rate
        while recorder.clock.seconds < end {
            let node = nodes.randomElement(using: &random)!
            let key = keys.randomElement(using: &random)!
            let roll = Int.random(in: 0..<10, using: &random)
            let function: HistoryEvent.Function
            let payload: HistoryEvent.Payload
            if roll < 3, let expected = known[key] {
                function = .cas
                payload = .compareAndSet(expected: .integer(expected), new: .integer(nextValue.next()))
            } else if roll < 6 {
                function = .write
                payload = .value(.integer(nextValue.next()))
            } else {
                function = .read
                payload = .value(.null)
            }
            let client = connections[node] ?? RESPClient(port: respPorts[node]!)
            connections[node] = client
            let invoked = recorder.record(process: process, .invoke, function, key: key, value: payload)
            let outcome = perform(function, key: key, value: payload, on: client, timeout: timeout)
            let completionValue: HistoryEvent.Payload = function == .read ? .value(outcome.value) : payload
            let completed = recorder.record(process: process, outcome.kind, function, key: key, value: completionValue)
            recorder.sample(OperationSample(process: process, function: function, kind: outcome.kind, node: node, invoked: invoked, completed: completed))
            switch (outcome.kind, function, payload, outcome.value) {
            case (.ok, .read, _, .integer(let seen)): known[key] = seen
            case (.ok, .read, _, _): known[key] = nil
            case (.ok, _, .value(.integer(let written)), _), (.ok, _, .compareAndSet(_, .integer(let written)), _): known[key] = written
            case (.info, _, _, _):
                process += clients
                client.disconnect()
            default: break
            }
            pause(Double.random(in: 0...(2 * meanPause), using: &random))
        }
    }
}

/// Hands out the values clients write: each written once, so a read names the write it saw.
final class UniqueValues: Sendable {
    private let counter = Atomic<Int>(1)

    func next() -> Int { counter.wrappingAdd(1, ordering: .relaxed).oldValue }
}
