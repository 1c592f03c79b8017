import Linearizability
import Testing

/// Decides linearizability by trying every order: slow, but obviously right, so it checks the
/// search's prunings (read-first, due order, dropped and expiring unknown operations).
private func bruteForce(_ operations: [ClientOperation], _ model: RegisterModel) -> Bool {
    func search(_ state: Value, _ remaining: [ClientOperation]) -> Bool {
        guard remaining.contains(where: \.isOutcomeKnown) else { return true }
        for (index, operation) in remaining.enumerated() {
            // An operation can go next unless a known one still to go returned before it was invoked.
            let isBlocked = remaining.contains { other in
                other.returnTime.map { $0 < operation.invokeTime } ?? false
            }
            guard !isBlocked, let next = model.step(state, operation.action) else { continue }
            var rest = remaining
            rest.remove(at: index)
            if search(next, rest) { return true }
        }
        return false
    }
    return search(model.initialState, operations)
}

/// The history as it stood at `time`: later invocations dropped, running operations' outcomes unknown.
private func cut(_ operations: [ClientOperation], at time: Int64) -> [ClientOperation] {
    operations.compactMap { operation in
        guard operation.invokeTime <= time else { return nil }
        var cut = operation
        if let returnTime = operation.returnTime, returnTime > time {
            guard case .read = operation.action else {
                cut.returnTime = nil
                return cut
            }
            return nil
        }
        return cut
    }
}

/// A small random history: a few processes, few values, random overlaps, reads that see any value.
private func randomHistory(_ random: inout SplitMix64, model: RegisterModel) -> [ClientOperation] {
    var operations: [ClientOperation] = []
    for process in 0..<3 {
        var time = Int64.random(in: 0..<5, using: &random)
        for _ in 0..<Int.random(in: 1...3, using: &random) {
            let value = { (random: inout SplitMix64) in
                Int.random(in: 0..<4, using: &random) == 0 ? Value.null : .integer(Int.random(in: 1...2, using: &random))
            }
            let roll = Int.random(in: 0..<10, using: &random)
            let action: Action =
                roll < 4
                ? .read(observed: value(&random))
                : model == .casRegister && roll < 7
                    ? .compareAndSet(expected: value(&random), new: value(&random)) : .write(value(&random))
            let invoke = time
            let duration = Int64.random(in: 1...12, using: &random)
            let isUnknown = Int.random(in: 0..<5, using: &random) == 0
            if case .read = action, isUnknown { continue }
            operations.append(
                ClientOperation(
                    id: operations.count, process: process, key: "x", action: action, invokeTime: invoke,
                    returnTime: isUnknown ? nil : invoke + duration))
            if isUnknown { break }
            time = invoke + duration + Int64.random(in: 1...3, using: &random)
        }
    }
    return operations
}

@Suite("Agreement with brute force")
struct BruteForceTests {
    @Test(arguments: RegisterModel.allCases)
    func checkerAgreesWithBruteForceOnRandomSmallHistories(model: RegisterModel) {
        var random = SplitMix64(state: model == .register ? 11 : 12)
        var counts = (linearizable: 0, not: 0)
        for round in 0..<1_500 {
            let operations = randomHistory(&random, model: model)
            let expected = bruteForce(operations, model)
            let result = Checker(model: model).check(History(operations: operations))
            if expected { counts.linearizable += 1 } else { counts.not += 1 }
            let agrees: Bool
            switch result {
            case .linearizable: agrees = expected
            case .notLinearizable: agrees = !expected
            case .unknown: agrees = false
            }
            if !agrees {
                Issue.record("round \(round): brute force says \(expected), checker \(result): \(operations)")
                return
            }
            if case .notLinearizable(let violation) = result {
                #expect(violation.window.contains(violation.culprit), "round \(round)")
                #expect(violation.unordered.contains(violation.culprit), "round \(round)")
                // The window ends where the history first fails: just before the culprit's return, it
                // could still be ordered.
                let end = violation.culprit.returnTime ?? .max
                let earlier = operations.compactMap(\.returnTime).filter { $0 < end }.max() ?? -1
                #expect(bruteForce(cut(operations, at: earlier), model), "round \(round)")
            }
        }
        // Both verdicts must be common, or the comparison proves little.
        #expect(counts.linearizable > 150 && counts.not > 150, "\(counts)")
    }
}
