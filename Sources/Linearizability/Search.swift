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
/// Call and return events sit in one doubly linked list in time order, and a linearized operation is
/// lifted out of it. From a configuration, the operations that may go next are those whose calls
/// come before the first return left in the list: that return's operation must be linearized before
/// anything invoked after it. The search tries each move whose result the model allows and whose
/// configuration is new, descends, and backtracks when a configuration has no move left.
///
/// An operation with an unknown outcome has no return: nothing forces it in, and the search succeeds
/// once every operation with a known outcome is linearized. It gets an *expiry* event instead, after
/// the last return of an operation that could observe the value it writes. Past that point, taking
/// effect or not makes no difference to anything left, so at the expiry the search settles it as
/// "did not happen" rather than carry both possibilities through the rest of the history.
struct SingleKeySearch {
    enum Outcome {
        case linearizable
        /// No order exists. `longest` is the longest partial order the search built (indices of the
        /// operations that took effect, in order); `stuck` is the operation whose return it could not
        /// get past there.
        case notLinearizable(longest: [Int], stuck: Int)
        case timedOut
    }

    let model: RegisterModel
    let operations: [ClientOperation]

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

        // The order to try moves in: known operations by return, unknown ones by invocation. Taking
        // the operation due soonest first (Lowe's just-in-time idea) finds an order in far fewer tries
        // than invocation order; an unknown operation that some read saw is usually needed early.
        var due = operations.map(\.invokeTime)
        for event in events where event.rank == 1 {
            due[event.operation] = event.time
        }

        /// The moves to try from one configuration, and how far the search has got through them.
        struct Frame {
            var candidates: [Int]
            var nextCandidate = 0
            /// An unknown operation whose expiry comes before any return: settling it as not having
            /// happened is the last move to try here. -1 if none.
            var expiring: Int
            /// The operation whose return ends the candidates, or -1.
            var returning: Int
        }

        let clock = ContinuousClock()
        var remaining = isKnown.filter { $0 }.count
        var state = model.initialState
        var path: [(operation: Int, previousState: Value, tookEffect: Bool)] = []
        var linearized = OperationSet(capacity: count)
        var explored = Set<Configuration>()
        var longest: [Int] = []
        var longestDepth = -1
        var stuck = -1
        var iterations = 0

        /// The moves from the current configuration: the operations invoked before the first return
        /// or expiry still in the list, those due soonest first.
        ///
        /// A read that can go next is the only move worth trying: a read changes no state, so any
        /// completion of this configuration can move the read to its front.
        func frame() -> Frame {
            var candidates: [Int] = []
            var node = next[0]
            while isCall[node] {
                let operation = operationOfNode[node]
                if isRead[operation], model.step(state, actions[operation]) != nil {
                    return Frame(candidates: [operation], expiring: -1, returning: -1)
                }
                candidates.append(operation)
                node = next[node]
            }
            candidates.sort { (due[$0], $0) < (due[$1], $1) }
            // Frames are built only while an operation with a known outcome is left, so `node` is a
            // return or an expiry, never the tail.
            let operation = operationOfNode[node]
            return Frame(
                candidates: candidates, expiring: isKnown[operation] ? -1 : operation,
                returning: isKnown[operation] ? operation : -1)
        }

        /// Takes `operation` next, leaving `newState`, unless that configuration was explored before.
        /// Without `effect`, the move settles an unknown operation as not having happened.
        func move(_ operation: Int, to newState: Value, effect: Bool = true) -> Bool {
            linearized.insert(operation)
            guard explored.insert(Configuration(linearized: linearized, state: newState)).inserted else {
                linearized.remove(operation)
                return false
            }
            path.append((operation, state, effect))
            state = newState
            unlink(callNode[operation])
            if endNode[operation] != 0 {
                unlink(endNode[operation])
            }
            if isKnown[operation] {
                remaining -= 1
            }
            return true
        }

        func undo(_ last: (operation: Int, previousState: Value, tookEffect: Bool)) {
            linearized.remove(last.operation)
            state = last.previousState
            if endNode[last.operation] != 0 {
                relink(endNode[last.operation])
            }
            if isKnown[last.operation] {
                remaining += 1
            }
            relink(callNode[last.operation])
        }

        guard remaining > 0 else { return .linearizable }
        var frames = [frame()]
        while true {
            iterations &+= 1
            if iterations & 1023 == 0, let deadline, clock.now >= deadline {
                return .timedOut
            }
            let top = frames.count - 1
            let moved: Bool
            if frames[top].nextCandidate < frames[top].candidates.count {
                let operation = frames[top].candidates[frames[top].nextCandidate]
                frames[top].nextCandidate += 1
                guard let newState = model.step(state, actions[operation]) else { continue }
                moved = move(operation, to: newState)
            } else if frames[top].expiring >= 0 {
                // Every other move from here failed; the expiring operation may still not have happened.
                let operation = frames[top].expiring
                frames[top].expiring = -1
                moved = move(operation, to: state, effect: false)
            } else {
                if frames[top].returning >= 0, path.count > longestDepth {
                    longestDepth = path.count
                    longest = path.filter(\.tookEffect).map(\.operation)
                    stuck = frames[top].returning
                }
                frames.removeLast()
                guard let last = path.popLast() else {
                    return .notLinearizable(longest: longest, stuck: stuck)
                }
                undo(last)
                continue
            }
            if moved {
                if remaining == 0 { return .linearizable }
                frames.append(frame())
            }
        }
    }
}
