/// What the checker decided about a history.
public enum CheckResult: Sendable, Hashable {
    case linearizable
    case notLinearizable(Violation)
    /// The time limit passed before the checker could decide.
    case unknown
}

/// Why a history is not linearizable: the smallest window of operations that cannot be ordered.
public struct Violation: Sendable, Hashable {
    /// The key whose sub-history fails.
    public var key: String
    /// The operation that cannot be placed: its return comes before any order can include it.
    public var culprit: ClientOperation
    /// The operations of the window, by invocation time. The window ends at the earliest return after
    /// which the key's history has no order at all. It starts at the invocation of the last write in
    /// the longest partial order found (the value the culprit contradicts), or of the earliest
    /// operation no order could place, whichever comes first.
    public var window: [ClientOperation]
    /// The window's operations in the order of the longest partial linearization the checker found.
    public var partialLinearization: [ClientOperation]
    /// The window's operations that no order could place, the culprit among them.
    public var unordered: [ClientOperation]
    /// The register's value in that partial linearization just before its first window operation.
    public var stateBefore: Value
    /// The register's value after the whole partial linearization, when the culprit had to be placed.
    public var stateAtCulprit: Value
}

/// A Wing–Gong / Lowe linearizability checker with memoization, checking a KV history key by key.
public struct Checker: Sendable {
    public var model: RegisterModel
    /// How long `check` may search before it answers `.unknown`; nil searches until it decides.
    public var timeout: Duration?

    public init(model: RegisterModel, timeout: Duration? = nil) {
        self.model = model
        self.timeout = timeout
    }

    /// Checks every key's sub-history against `model`, each key as its own register starting at `null`,
    /// and reports the first key, in key order, that fails.
    public func check(_ history: History) -> CheckResult {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        var hasTimedOut = false
        for partition in history.partitionedByKey() {
            let operations = Self.checkable(partition.operations)
            switch SingleKeySearch(model: model, operations: operations).run(deadline: deadline) {
            case .linearizable:
                continue
            case .timedOut:
                // Another key may still fail definitely, and a definite answer beats "unknown".
                hasTimedOut = true
            case .notLinearizable(let longest, let stuck):
                return .notLinearizable(
                    explain(
                        key: partition.key, operations: operations,
                        failure: (longest, stuck), deadline: deadline))
            }
        }
        return hasTimedOut ? .unknown : .linearizable
    }

    /// The operations the search needs. A read whose answer never came constrains nothing. Nor does
    /// an operation with an unknown outcome whose value no read saw and no compare-and-set expected:
    /// whatever it wrote was overwritten unseen, so it may as well never have happened. Dropping them
    /// matters, because the search must try each such operation both in and out of every order.
    private static func checkable(_ operations: [ClientOperation]) -> [ClientOperation] {
        var observed = Set<Value>()
        for operation in operations {
            switch operation.action {
            case .read(let value) where operation.isOutcomeKnown: observed.insert(value)
            case .compareAndSet(let expected, _): observed.insert(expected)
            case .read, .write: break
            }
        }
        return operations.filter { operation in
            guard !operation.isOutcomeKnown else { return true }
            switch operation.action {
            case .read: return false
            case .write(let value), .compareAndSet(_, let value): return observed.contains(value)
            }
        }
    }

    /// The key's history cut at `time`: operations invoked later are dropped, and those still running
    /// then lose their outcome. A history is linearizable only if all its cuts are, so the earliest
    /// cut that fails holds the violation and nothing after it.
    private static func cut(_ operations: [ClientOperation], at time: Int64) -> [ClientOperation] {
        checkable(
            operations.compactMap { operation in
                guard operation.invokeTime <= time else { return nil }
                var cut = operation
                if let returnTime = operation.returnTime, returnTime > time {
                    cut.returnTime = nil
                }
                return cut
            })
    }

    private func explain(
        key: String, operations: [ClientOperation], failure: (longest: [Int], stuck: Int),
        deadline: ContinuousClock.Instant?
    ) -> Violation {
        // Binary search for the earliest failing cut. A failing cut costs a whole exhaustive search,
        // a passing one usually a single greedy pass, so the first guess is the cut at the return the
        // search got stuck on, which fails whenever that operation is the culprit. Should the time run
        // out, the earliest failing cut found so far still explains the failure, with a wider window.
        let returnTimes = Array(Set(operations.compactMap(\.returnTime))).sorted()
        var best = (operations: operations, longest: failure.longest, stuck: failure.stuck)
        var low = 0
        var high = returnTimes.count - 1
        var guess = operations[failure.stuck].returnTime.flatMap { returnTimes.firstIndex(of: $0) }
        search: while low < high {
            let middle = guess ?? (low + high) / 2
            guess = nil
            let candidate = Self.cut(operations, at: returnTimes[middle])
            switch SingleKeySearch(model: model, operations: candidate).run(deadline: deadline) {
            case .linearizable:
                low = middle + 1
            case .notLinearizable(let longest, let stuck):
                best = (candidate, longest, stuck)
                high = middle
            case .timedOut:
                break search
            }
        }
        return violation(
            key: key, operations: operations, cut: best.operations, longest: best.longest,
            stuck: best.stuck)
    }

    /// Describes the failure of `cut` by `operations` as the history recorded them, whole.
    private func violation(
        key: String, operations: [ClientOperation], cut: [ClientOperation], longest: [Int], stuck: Int
    ) -> Violation {
        let original = Dictionary(operations.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        let ordered = Set(longest)
        let unplaced = cut.indices.filter { !ordered.contains($0) && cut[$0].isOutcomeKnown }
        let end = cut[stuck].returnTime ?? cut[stuck].invokeTime
        let unplacedStart = unplaced.map { cut[$0].invokeTime }.min() ?? cut[stuck].invokeTime
        // The window reaches back to the write that set the value the unplaced operations contradict.
        let anchor = longest.last { if case .read = cut[$0].action { false } else { true } }
        let start = min(anchor.map { cut[$0].invokeTime } ?? unplacedStart, unplacedStart)
        let inWindow = Set(
            cut.indices.filter { index in
                cut[index].invokeTime <= end && (cut[index].returnTime ?? .max) >= start
            })

        var state = model.initialState
        var stateBefore: Value?
        for index in longest {
            if stateBefore == nil, inWindow.contains(index) {
                stateBefore = state
            }
            // Every step of the order was accepted by the model when the search took it.
            state = model.step(state, cut[index].action) ?? state
        }
        func restore(_ index: Int) -> ClientOperation { original[cut[index].id] ?? cut[index] }
        return Violation(
            key: key,
            culprit: restore(stuck),
            window: inWindow.sorted { (cut[$0].invokeTime, $0) < (cut[$1].invokeTime, $1) }.map(restore),
            partialLinearization: longest.filter(inWindow.contains).map(restore),
            unordered: unplaced.filter(inWindow.contains).map(restore),
            stateBefore: stateBefore ?? state,
            stateAtCulprit: state)
    }
}
