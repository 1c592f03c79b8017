/// A set of operation indices that also keeps a running hash of its members, so that the memo table
/// hashes a linearized set in constant time instead of reading every word.
struct OperationSet: Hashable {
    private var words: [UInt64]
    private var runningHash: UInt64 = 0

    init(capacity: Int) {
        words = Array(repeating: 0, count: (capacity + 63) / 64)
    }

    mutating func insert(_ index: Int) {
        words[index >> 6] |= 1 << UInt64(index & 63)
        runningHash ^= Self.mix(index)
    }

    mutating func remove(_ index: Int) {
        words[index >> 6] &= ~(1 << UInt64(index & 63))
        runningHash ^= Self.mix(index)
    }

    static func == (lhs: OperationSet, rhs: OperationSet) -> Bool {
        lhs.runningHash == rhs.runningHash && lhs.words == rhs.words
    }

    func hash(into hasher: inout Hasher) {
        hasher.combine(runningHash)
    }

    /// SplitMix64's finalizer: XOR of these is a good hash of a set, and it is order-independent.
    private static func mix(_ index: Int) -> UInt64 {
        var z = UInt64(truncatingIfNeeded: index) &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A configuration the search has already explored: which operations are linearized, and the state
/// they leave. Reaching it again by another order cannot lead anywhere new (Lowe's memoization).
private struct Configuration: Hashable {
    var linearized: OperationSet
    var state: Value
}

/// The Wing–Gong depth-first search, with Lowe's memoization, over one key's operations.
///
/// Call and return events sit in one doubly linked list in time order. The search walks it from the
/// front: at a call it tries to linearize that operation next and, if the model allows it and the
/// configuration is new, lifts the operation out of the list and starts again from the front; at a
/// return it has met an operation that must already be linearized but is not, so it backtracks.
///
/// An operation with an unknown outcome has no return: nothing forces it in, and the search succeeds
/// once every operation with a known outcome is linearized. It gets an *expiry* event instead, after
/// the last return of an operation that could observe the value it writes. Past that point, taking
/// effect or not makes no difference to anything left, so at the expiry the search settles it as
/// "did not happen" rather than carry both possibilities through the rest of the history.
struct SingleKeySearch {
    enum Outcome {
        case linearizable
        /// No order exists. `longest` is the longest partial order the search built (operation
        /// indices, in order); `stuck` is the operation whose return it could not get past there.
        case notLinearizable(longest: [Int], stuck: Int)
        case timedOut
    }

    let model: RegisterModel
    let operations: [Operation]

    /// When each unknown-outcome operation stops mattering: the last return of a known read of the
    /// value it writes or of a compare-and-set expecting it. Nil while such an observer has no return.
    private func expiries() -> [Int64?] {
        var lastObservation: [Value: Int64?] = [:]
        for operation in operations {
            let observed: Value
            switch operation.action {
            case .read(let value): observed = value
            case .compareAndSet(let expected, _): observed = expected
            case .write: continue
            }
            let returnTime = operation.returnTime.map { max($0, operation.invokeTime) }
            switch (lastObservation[observed], returnTime) {
            case (nil, _): lastObservation[observed] = returnTime
            case (.some(.some(let last)), .some(let time)): lastObservation[observed] = max(last, time)
            case (.some, _): lastObservation[observed] = .some(nil)
            }
        }
        return operations.map { operation in
            guard !operation.isOutcomeKnown else { return nil }
            switch operation.action {
            case .read: return nil
            case .write(let value), .compareAndSet(_, let value):
                return (lastObservation[value] ?? .some(operation.invokeTime)).map { max($0, operation.invokeTime) }
            }
        }
    }

    func run(deadline: ContinuousClock.Instant?) -> Outcome {
        let count = operations.count
        // Node 0 is the head sentinel, nodes 1...events the events, node events + 1 the tail sentinel.
        // An event's rank orders events at equal times: calls first, so that operations whose
        // timestamps cannot tell which came first count as concurrent; expiries last, after every
        // observation at that time.
        var events: [(time: Int64, rank: Int, operation: Int)] = []
        events.reserveCapacity(2 * count)
        for (index, (operation, expiry)) in zip(operations, expiries()).enumerated() {
            events.append((operation.invokeTime, 0, index))
            if let returnTime = operation.returnTime {
                events.append((max(returnTime, operation.invokeTime), 1, index))
            } else if let expiry {
                events.append((expiry, 2, index))
            }
        }
        events.sort { ($0.time, $0.rank, $0.operation) < ($1.time, $1.rank, $1.operation) }
        let tail = events.count + 1
        var next = Array(1...tail) + [tail]
        var previous = [0] + Array(0..<tail)
        var isCall = [false]
        var operationOfNode = [-1]
        var callNode = Array(repeating: 0, count: count)
        // The return node of an operation with a known outcome, the expiry node of one without; 0 if none.
        var endNode = Array(repeating: 0, count: count)
        for (offset, event) in events.enumerated() {
            isCall.append(event.rank == 0)
            operationOfNode.append(event.operation)
            if event.rank == 0 {
                callNode[event.operation] = offset + 1
            } else {
                endNode[event.operation] = offset + 1
            }
        }
        let actions = operations.map(\.action)
        let isKnown = operations.map(\.isOutcomeKnown)
        let isRead = actions.map { action in
            if case .read = action { return true }
            return false
        }

        func unlink(_ node: Int) {
            next[previous[node]] = next[node]
            previous[next[node]] = previous[node]
        }
        // Dancing links: a node removed from the list still remembers its neighbours, so relinking in
        // the reverse order of removal restores the list exactly.
        func relink(_ node: Int) {
            next[previous[node]] = node
            previous[next[node]] = node
        }

        let clock = ContinuousClock()
        var remaining = isKnown.filter { $0 }.count
        var state = model.initialState
        var stack: [(operation: Int, previousState: Value, changesState: Bool)] = []
        var linearized = OperationSet(capacity: count)
        var explored = Set<Configuration>()
        var longest: [Int] = []
        var stuck = -1
        var iterations = 0
        var node = next[0]
        var isFreshConfiguration = true

        /// Takes `operation` next, leaving `newState`, unless that configuration was explored before.
        /// `changesState` is false for a read, and for settling an unknown operation as not happened.
        func linearize(_ operation: Int, to newState: Value, changesState: Bool) -> Bool {
            linearized.insert(operation)
            guard explored.insert(Configuration(linearized: linearized, state: newState)).inserted else {
                linearized.remove(operation)
                return false
            }
            stack.append((operation, state, changesState))
            state = newState
            unlink(callNode[operation])
            if endNode[operation] != 0 {
                unlink(endNode[operation])
            }
            if isKnown[operation] {
                remaining -= 1
            }
            node = next[0]
            isFreshConfiguration = true
            return true
        }

        /// Undoes linearization steps until one leaves an alternative to try; false when none is left.
        ///
        /// A step that changes nothing (a read, or settling an unknown operation as not having
        /// happened) can move to the front of any completion, so a configuration where such a step can
        /// go next completes exactly when the configuration after it does. When such a step's branch
        /// fails, its parent has failed too, and the search pops past it.
        func backtrack() -> Bool {
            while let top = stack.popLast() {
                linearized.remove(top.operation)
                state = top.previousState
                if endNode[top.operation] != 0 {
                    relink(endNode[top.operation])
                }
                if isKnown[top.operation] {
                    remaining += 1
                }
                relink(callNode[top.operation])
                node = next[callNode[top.operation]]
                if top.changesState { return true }
            }
            return false
        }

        // While an operation with a known outcome is left, its return is in the list, so the walk
        // meets a return before it can reach the tail.
        while remaining > 0 {
            iterations &+= 1
            if iterations & 1023 == 0, let deadline, clock.now >= deadline {
                return .timedOut
            }
            if isFreshConfiguration {
                // By the same argument, a read that can go next is the only branch worth taking here.
                isFreshConfiguration = false
                var candidate = next[0]
                while isCall[candidate] {
                    let operation = operationOfNode[candidate]
                    if isRead[operation], model.step(state, actions[operation]) != nil { break }
                    candidate = next[candidate]
                }
                if isCall[candidate] {
                    if linearize(operationOfNode[candidate], to: state, changesState: false) { continue }
                    while isCall[candidate] { candidate = next[candidate] }
                    node = candidate
                }
            }
            let operation = operationOfNode[node]
            if isCall[node] {
                if let newState = model.step(state, actions[operation]),
                    linearize(operation, to: newState, changesState: !isRead[operation])
                {
                    continue
                }
                node = next[node]
            } else if !isKnown[operation] {
                // An expiry: every call before it was tried here, so settling the operation as not
                // having happened is the one move left.
                if linearize(operation, to: state, changesState: false) { continue }
                guard backtrack() else { return .notLinearizable(longest: longest, stuck: stuck) }
            } else {
                if stack.count > longest.count || stuck < 0 {
                    longest = stack.map(\.operation)
                    stuck = operation
                }
                guard backtrack() else {
                    return .notLinearizable(longest: longest, stuck: stuck)
                }
            }
        }
        return .linearizable
    }
}
