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
/// Operations with an unknown outcome have no return event: nothing ever forces them in, and the
/// search succeeds as soon as every operation with a known outcome is linearized.
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

    func run(deadline: ContinuousClock.Instant?) -> Outcome {
        let count = operations.count
        // Node 0 is the head sentinel, nodes 1...events the events, node events + 1 the tail sentinel.
        var events: [(time: Int64, isReturn: Bool, operation: Int)] = []
        events.reserveCapacity(2 * count)
        for (index, operation) in operations.enumerated() {
            events.append((operation.invokeTime, false, index))
            if let returnTime = operation.returnTime {
                events.append((max(returnTime, operation.invokeTime), true, index))
            }
        }
        // At equal times, calls go first: the operations are then concurrent, the permissive reading
        // of timestamps that cannot tell which came first.
        events.sort { lhs, rhs in
            if lhs.time != rhs.time { return lhs.time < rhs.time }
            if lhs.isReturn != rhs.isReturn { return !lhs.isReturn }
            return lhs.operation < rhs.operation
        }
        let tail = events.count + 1
        var next = Array(1...tail) + [tail]
        var previous = [0] + Array(0..<tail)
        var isReturn = [false]
        var operationOfNode = [-1]
        var callNode = Array(repeating: 0, count: count)
        var returnNode = Array(repeating: 0, count: count)
        for (offset, event) in events.enumerated() {
            isReturn.append(event.isReturn)
            operationOfNode.append(event.operation)
            if event.isReturn {
                returnNode[event.operation] = offset + 1
            } else {
                callNode[event.operation] = offset + 1
            }
        }
        let actions = operations.map(\.action)
        let isKnown = operations.map(\.isOutcomeKnown)

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

        let isRead = actions.map { action in
            if case .read = action { return true }
            return false
        }
        let clock = ContinuousClock()
        var remaining = isKnown.filter { $0 }.count
        var state = model.initialState
        var stack: [(operation: Int, previousState: Value)] = []
        var linearized = OperationSet(capacity: count)
        var explored = Set<Configuration>()
        var longest: [Int] = []
        var stuck = -1
        var iterations = 0
        var node = next[0]
        var isFreshConfiguration = true

        /// Linearizes `operation` next unless that configuration was explored before.
        func linearize(_ operation: Int, to newState: Value) -> Bool {
            linearized.insert(operation)
            guard explored.insert(Configuration(linearized: linearized, state: newState)).inserted else {
                linearized.remove(operation)
                return false
            }
            stack.append((operation, state))
            state = newState
            unlink(callNode[operation])
            if isKnown[operation] {
                unlink(returnNode[operation])
                remaining -= 1
            }
            node = next[0]
            isFreshConfiguration = true
            return true
        }

        /// Undoes linearization steps until one leaves an alternative to try; false when none is left.
        ///
        /// A read changes no state, so a configuration where a read can go next completes exactly when
        /// the configuration with that read linearized does: any completion can move the read to its
        /// front. When a read's branch fails, its parent has failed too, and the search pops past it.
        func backtrack() -> Bool {
            while let top = stack.popLast() {
                linearized.remove(top.operation)
                state = top.previousState
                if isKnown[top.operation] {
                    relink(returnNode[top.operation])
                    remaining += 1
                }
                relink(callNode[top.operation])
                node = next[callNode[top.operation]]
                if !isRead[top.operation] { return true }
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
                while !isReturn[candidate] {
                    let operation = operationOfNode[candidate]
                    if isRead[operation], model.step(state, actions[operation]) != nil { break }
                    candidate = next[candidate]
                }
                if !isReturn[candidate] {
                    if linearize(operationOfNode[candidate], to: state) { continue }
                    while !isReturn[candidate] { candidate = next[candidate] }
                    node = candidate
                }
            }
            let operation = operationOfNode[node]
            if !isReturn[node] {
                if let newState = model.step(state, actions[operation]), linearize(operation, to: newState) {
                    continue
                }
                node = next[node]
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
