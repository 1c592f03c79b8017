import Linearizability

/// Builds hand-written histories: each operation gets the next id, times are plain numbers.
struct HistoryBuilder {
    var operations: [ClientOperation] = []

    var history: History { History(operations: operations) }

    mutating func add(_ process: Int, _ action: Action, _ invoke: Int64, _ returned: Int64?, key: String = "x") {
        operations.append(
            ClientOperation(
                id: operations.count, process: process, key: key, action: action,
                invokeTime: invoke, returnTime: returned))
    }

    mutating func write(_ process: Int, _ value: Int, _ invoke: Int64, _ returned: Int64?, key: String = "x") {
        add(process, .write(.integer(value)), invoke, returned, key: key)
    }

    mutating func read(_ process: Int, _ value: Int?, _ invoke: Int64, _ returned: Int64, key: String = "x") {
        add(process, .read(observed: value.map(Value.integer) ?? .null), invoke, returned, key: key)
    }

    mutating func cas(
        _ process: Int, _ expected: Int?, _ new: Int, _ invoke: Int64, _ returned: Int64?, key: String = "x"
    ) {
        add(
            process, .compareAndSet(expected: expected.map(Value.integer) ?? .null, new: .integer(new)),
            invoke, returned, key: key)
    }
}

/// A small seeded generator, so that a generated history is the same on every run.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Records a history from a simulated register that is linearizable by construction: every operation
/// takes effect at one instant between its invocation and its return, and the clients overlap freely.
func simulatedRegisterHistory(
    operations count: Int, clients: Int, casRegister: Bool, seed: UInt64, unknownPercent: Int = 1,
    values: Int = 10
) -> History {
    enum Phase {
        case idle
        case invoked(Action, start: Int64)
        case applied(Action, start: Int64)
    }
    var random = SplitMix64(state: seed)
    var phases = Array(repeating: Phase.idle, count: clients)
    var register = Value.null
    var builder = HistoryBuilder()
    var started = 0
    var time: Int64 = 0
    while builder.operations.count < count || phases.contains(where: { if case .idle = $0 { false } else { true } }) {
        time += Int64.random(in: 1...100, using: &random)
        let client = Int.random(in: 0..<clients, using: &random)
        switch phases[client] {
        case .idle:
            guard started < count else { continue }
            started += 1
            let value = Value.integer(Int.random(in: 0..<values, using: &random))
            let roll = Int.random(in: 0..<10, using: &random)
            let action: Action =
                roll < 5
                ? .read(observed: .null)
                : casRegister && roll < 7
                    ? .compareAndSet(expected: register, new: value) : .write(value)
            phases[client] = .invoked(action, start: time)
        case .invoked(let action, let start):
            switch action {
            case .read: phases[client] = .applied(.read(observed: register), start: start)
            case .write(let value):
                register = value
                phases[client] = .applied(action, start: start)
            case .compareAndSet(let expected, let new):
                // A compare-and-set that would not succeed here definitely failed: the history drops it.
                guard expected == register else {
                    phases[client] = .idle
                    started -= 1
                    continue
                }
                register = new
                phases[client] = .applied(action, start: start)
            }
        case .applied(let action, let start):
            let isUnknown: Bool
            if case .read = action { isUnknown = false } else {
                isUnknown = Int.random(in: 0..<100, using: &random) < unknownPercent
            }
            builder.add(client, action, start, isUnknown ? nil : time)
            phases[client] = .idle
        }
    }
    return builder.history
}
