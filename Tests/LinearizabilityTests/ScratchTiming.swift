import Linearizability
import Testing

@Test func scratchTiming() throws {
    let clock = ContinuousClock()
    for (clients, u, values) in [(10, 1, 10), (20, 0, 10), (20, 1, 1_000_000), (20, 5, 1_000_000), (10, 20, 1_000_000), (10, 5, 100)] {
        var history = History(operations: [])
        history = simulatedRegisterHistory(operations: 10_000, clients: clients, casRegister: false, seed: 8, unknownPercent: u, values: values)
        var result = CheckResult.unknown
        let t = clock.measure { result = Checker(model: .casRegister, timeout: .seconds(60)).check(history) }
        print("SCRATCH 10k clients=\(clients) unknown%=\(u) values=\(values) check \(t) \(result == .linearizable)")
    }
}
