import Linearizability
import Testing

private func check(_ builder: HistoryBuilder, _ model: RegisterModel = .register) -> CheckResult {
    Checker(model: model, timeout: .seconds(10)).check(builder.history)
}

private func violationOf(_ builder: HistoryBuilder, _ model: RegisterModel = .register) -> Violation? {
    if case .notLinearizable(let violation) = check(builder, model) { return violation }
    return nil
}

@Suite("Register histories")
struct RegisterTests {
    @Test func emptyHistoryIsLinearizable() {
        #expect(check(HistoryBuilder()) == .linearizable)
    }

    @Test func readOfANeverWrittenKeyIsNull() {
        var history = HistoryBuilder()
        history.read(0, nil, 0, 10)
        history.write(1, 1, 20, 30)
        history.read(0, 1, 40, 50)
        #expect(check(history) == .linearizable)
    }

    @Test func staleReadAfterAnAcknowledgedWriteIsCaught() throws {
        var history = HistoryBuilder()
        history.write(0, 1, 0, 10)
        history.write(0, 2, 20, 30)
        history.read(1, 1, 40, 50)
        let violation = try #require(violationOf(history))
        #expect(violation.culprit.id == 2)
        #expect(violation.window.map(\.id) == [1, 2])
        #expect(violation.unordered.map(\.id) == [2])
        #expect(violation.stateAtCulprit == .integer(2))
    }

    @Test func readConcurrentWithAWriteMaySeeEitherValue() {
        for observed in [1, 2] {
            var history = HistoryBuilder()
            history.write(0, 1, 0, 10)
            history.write(0, 2, 20, 40)
            history.read(1, observed, 25, 35)
            #expect(check(history) == .linearizable)
        }
    }

    @Test func readOfAWriteThatDefinitelyFailedIsCaught() throws {
        // The history file drops a failed write, so the read sees a value nobody wrote.
        let text = """
            {"process": 0, "type": "invoke", "f": "write", "key": "x", "value": 1, "time": 0}
            {"process": 0, "type": "ok", "f": "write", "key": "x", "value": 1, "time": 10}
            {"process": 0, "type": "invoke", "f": "write", "key": "x", "value": 2, "time": 20}
            {"process": 1, "type": "invoke", "f": "read", "key": "x", "value": null, "time": 25}
            {"process": 1, "type": "ok", "f": "read", "key": "x", "value": 2, "time": 35}
            {"process": 0, "type": "fail", "f": "write", "key": "x", "value": 2, "time": 40}
            """
        let history = try HistoryFile.parse(text)
        guard case .notLinearizable(let violation) = Checker(model: .register).check(history) else {
            Issue.record("a read of a failed write passed")
            return
        }
        #expect(violation.culprit.line == 4)
        #expect(violation.culprit.action == .read(observed: .integer(2)))
    }

    @Test func concurrentWritesMayBeReadInEitherOrder() {
        for (first, second) in [(1, 2), (2, 1)] {
            var history = HistoryBuilder()
            history.write(0, 1, 0, 100)
            history.write(1, 2, 0, 100)
            history.read(2, first, 10, 20)
            history.read(2, second, 30, 40)
            history.read(3, second, 110, 120)
            #expect(check(history) == .linearizable, "reads \(first) then \(second)")
        }
    }

    @Test func sequentialReadsCannotSeeConcurrentWritesInContradictoryOrders() throws {
        var history = HistoryBuilder()
        history.write(0, 1, 0, 100)
        history.write(1, 2, 0, 100)
        history.read(2, 1, 10, 20)
        history.read(2, 2, 30, 40)
        history.read(3, 1, 50, 60)
        let violation = try #require(violationOf(history))
        #expect(violation.culprit.id == 4)
        #expect(Set(violation.window.map(\.id)) == [0, 1, 2, 3, 4])
    }

    @Test func readsAfterConcurrentWritesMustAgreeOnTheLastOne() throws {
        var history = HistoryBuilder()
        history.write(0, 1, 0, 100)
        history.write(1, 2, 0, 100)
        history.read(2, 2, 110, 120)
        history.read(3, 1, 130, 140)
        let violation = try #require(violationOf(history))
        #expect(violation.culprit.id == 3)
    }

    @Test func unknownWriteMayTakeEffectLate() {
        var history = HistoryBuilder()
        history.write(0, 1, 0, nil)
        history.write(1, 2, 10, 20)
        history.read(2, 2, 30, 40)
        history.read(2, 1, 1_000, 1_010)
        #expect(check(history) == .linearizable)
    }

    @Test func unknownWriteMayNeverTakeEffect() {
        var history = HistoryBuilder()
        history.write(0, 1, 0, nil)
        history.read(2, nil, 30, 40)
        history.read(2, nil, 1_000, 1_010)
        #expect(check(history) == .linearizable)
    }

    @Test func unknownWriteCannotTakeEffectBeforeItsInvocation() throws {
        var history = HistoryBuilder()
        history.read(2, 1, 0, 10)
        history.write(0, 1, 20, nil)
        let violation = try #require(violationOf(history))
        #expect(violation.culprit.id == 0)
    }

    @Test func unknownWriteTakesEffectOnceOnly() throws {
        var history = HistoryBuilder()
        history.write(0, 1, 0, nil)
        history.write(1, 2, 10, 20)
        history.read(2, 1, 30, 40)
        history.write(1, 3, 50, 60)
        history.read(2, 3, 70, 80)
        history.read(2, 1, 90, 100)
        let violation = try #require(violationOf(history))
        #expect(violation.culprit.id == 5)
        #expect(violation.window.map(\.id).contains(3))
    }

    @Test func unknownWriteMayExplainALaterReadOfARepeatedValue() throws {
        var history = HistoryBuilder()
        history.write(0, 7, 0, nil)
        history.read(1, nil, 10, 20)
        history.write(2, 7, 30, 40)
        history.read(1, 7, 50, 60)
        history.write(2, 8, 70, 80)
        history.read(1, 7, 90, 100)
        #expect(check(history) == .linearizable)
        history.operations[0].returnTime = 25
        let violation = try #require(violationOf(history))
        #expect(violation.culprit.id == 5)
        #expect(violation.stateAtCulprit == .integer(8))
    }

    @Test func keysAreCheckedIndependently() throws {
        var history = HistoryBuilder()
        history.write(0, 1, 0, 10, key: "a")
        history.write(0, 2, 20, 30, key: "b")
        history.read(1, 1, 40, 50, key: "a")
        history.read(1, 2, 40, 50, key: "b")
        #expect(check(history) == .linearizable)
        history.read(1, 1, 60, 70, key: "b")
        let violation = try #require(violationOf(history))
        #expect(violation.key == "b")
    }

    @Test func windowIsSmallAfterALongLinearizablePrefix() throws {
        var history = HistoryBuilder()
        for step in 0..<500 {
            let time = Int64(step) * 100
            history.write(step % 3, step, time, time + 40)
            history.read(3 + step % 2, step, time + 50, time + 90)
        }
        history.read(5, 498, 50_000, 50_010)
        let violation = try #require(violationOf(history))
        #expect(violation.culprit.id == 1_000)
        #expect(violation.window.map(\.id) == [998, 999, 1_000])
        #expect(violation.stateBefore == .integer(498))
        #expect(violation.stateAtCulprit == .integer(499))
    }
}

@Suite("CAS register histories")
struct CASRegisterTests {
    @Test func successfulCompareAndSetsChain() {
        var history = HistoryBuilder()
        history.cas(0, nil, 1, 0, 10)
        history.cas(1, 1, 2, 20, 30)
        history.read(2, 2, 40, 50)
        #expect(check(history, .casRegister) == .linearizable)
    }

    @Test func compareAndSetCannotSucceedOnAnotherValue() throws {
        var history = HistoryBuilder()
        history.write(0, 1, 0, 10)
        history.cas(1, 5, 2, 20, 30)
        let violation = try #require(violationOf(history, .casRegister))
        #expect(violation.culprit.id == 1)
    }

    @Test func concurrentCompareAndSetsOrderThemselves() {
        var history = HistoryBuilder()
        history.write(0, 0, 0, 10)
        history.cas(1, 1, 2, 20, 100)
        history.cas(2, 0, 1, 20, 100)
        history.read(3, 2, 110, 120)
        #expect(check(history, .casRegister) == .linearizable)
    }

    @Test func twoCompareAndSetsFromTheSameValueCannotBothSucceed() throws {
        var history = HistoryBuilder()
        history.write(0, 0, 0, 10)
        history.cas(1, 0, 1, 20, 100)
        history.cas(2, 0, 2, 20, 100)
        #expect(violationOf(history, .casRegister) != nil)
    }

    @Test func failedCompareAndSetIsDropped() throws {
        let text = """
            {"process": 0, "type": "invoke", "f": "write", "key": "x", "value": 0, "time": 0}
            {"process": 0, "type": "ok", "f": "write", "key": "x", "value": 0, "time": 10}
            {"process": 1, "type": "invoke", "f": "cas", "key": "x", "value": [7, 1], "time": 20}
            {"process": 1, "type": "fail", "f": "cas", "key": "x", "value": [7, 1], "time": 30}
            {"process": 1, "type": "invoke", "f": "read", "key": "x", "value": null, "time": 40}
            {"process": 1, "type": "ok", "f": "read", "key": "x", "value": 0, "time": 50}
            """
        let history = try HistoryFile.parse(text, model: .casRegister)
        #expect(history.operations.count == 2)
        #expect(Checker(model: .casRegister).check(history) == .linearizable)
    }

    @Test func unknownCompareAndSetMayTakeEffectLate() {
        var history = HistoryBuilder()
        history.write(0, 0, 0, 10)
        history.cas(1, 5, 6, 20, nil)
        history.write(0, 5, 30, 40)
        history.read(2, 6, 50, 60)
        #expect(check(history, .casRegister) == .linearizable)
    }

    @Test func unknownCompareAndSetNeedsItsExpectedValue() throws {
        var history = HistoryBuilder()
        history.write(0, 0, 0, 10)
        history.cas(1, 5, 6, 20, nil)
        history.read(2, 6, 50, 60)
        #expect(violationOf(history, .casRegister) != nil)
    }

    @Test func registerModelRejectsCompareAndSet() {
        var history = HistoryBuilder()
        history.cas(0, nil, 1, 0, 10)
        #expect(violationOf(history, .register) != nil)
        #expect(!RegisterModel.register.supports(.compareAndSet(expected: .null, new: .integer(1))))
    }
}

@Suite("Performance and time limit")
struct PerformanceTests {
    @Test func tenThousandOperationsFromTenClientsCheckInSeconds() {
        let history = simulatedRegisterHistory(operations: 10_000, clients: 10, casRegister: false, seed: 8)
        #expect(history.operations.count == 10_000)
        let clock = ContinuousClock()
        var result = CheckResult.unknown
        let elapsed = clock.measure {
            result = Checker(model: .register, timeout: .seconds(60)).check(history)
        }
        #expect(result == .linearizable)
        #expect(elapsed < .seconds(10), "took \(elapsed)")
    }

    @Test func manyUnknownWritesWithUniqueValuesCheckQuickly() {
        let history = simulatedRegisterHistory(
            operations: 3_000, clients: 10, casRegister: false, seed: 4, unknownPercent: 20, values: 1_000_000)
        #expect(Checker(model: .register, timeout: .seconds(30)).check(history) == .linearizable)
    }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func generatedCASHistoriesAreLinearizable(seed: UInt64) {
        let history = simulatedRegisterHistory(
            operations: 2_000, clients: 10, casRegister: true, seed: seed, unknownPercent: 5)
        #expect(Checker(model: .casRegister, timeout: .seconds(30)).check(history) == .linearizable)
    }

    @Test func corruptedGeneratedHistoryIsCaughtWithASmallWindow() throws {
        var history = simulatedRegisterHistory(
            operations: 1_000, clients: 10, casRegister: false, seed: 9, unknownPercent: 0)
        // Rewrite one read late in the history to a value no write ever wrote.
        let index = try #require(history.operations.lastIndex { if case .read = $0.action { true } else { false } })
        history.operations[index].action = .read(observed: .integer(-1))
        guard case .notLinearizable(let violation) = Checker(model: .register, timeout: .seconds(30)).check(history)
        else {
            Issue.record("a read of a never-written value passed")
            return
        }
        #expect(violation.culprit.id == history.operations[index].id)
        #expect(violation.window.count < 40)
    }

    @Test func unknownWritesNobodySawCostNothing() {
        // Unique values: no read sees the unknown writes, so the checker drops them instead of trying
        // each of them in and out of every order.
        var history = HistoryBuilder()
        for step in 0..<200 {
            let time = Int64(step) * 100
            history.write(step % 10, 1_000 + step, time, nil)
            history.write(10, step, time, time + 50)
            history.read(11, step, time + 60, time + 70)
        }
        history.read(11, 5, 30_000, 30_010)
        guard case .notLinearizable(let violation) = Checker(model: .register, timeout: .seconds(10)).check(history.history)
        else {
            Issue.record("a stale read passed")
            return
        }
        #expect(violation.culprit.id == 600)
    }

    @Test func pathologicalHistoryGivesUpAsUnknown() {
        // Thirty concurrent writes and a read of a value none of them wrote: every subset of the
        // writes, with each possible last one, is a configuration to rule out.
        var history = HistoryBuilder()
        for process in 0..<30 {
            history.write(process, process, Int64(process), 1_000 + Int64(process))
        }
        history.read(30, 999, 0, 2_000)
        let clock = ContinuousClock()
        var result = CheckResult.linearizable
        let elapsed = clock.measure {
            result = Checker(model: .register, timeout: .milliseconds(500)).check(history.history)
        }
        #expect(result == .unknown)
        #expect(elapsed < .seconds(3), "took \(elapsed)")
    }
}
