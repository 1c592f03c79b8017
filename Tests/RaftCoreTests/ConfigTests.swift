import RaftCore
import Testing

/// A configuration that makes no sense, and why.
struct NonsenseConfig: Sendable, CustomTestStringConvertible {
    var what: String
    var change: @Sendable (inout RaftConfig) -> Void

    var testDescription: String { what }

    static let all: [NonsenseConfig] = [
        .init(what: "id 0") { $0.id = noNode },
        .init(what: "an election tick below 2") { $0.electionTick = 1 },
        .init(what: "a heartbeat tick of 0") { $0.heartbeatTick = 0 },
        .init(what: "a heartbeat no faster than the election timeout") { $0.heartbeatTick = $0.electionTick },
        .init(what: "no in-flight appends") { $0.maxInflightMessages = 0 },
        .init(what: "no entries per append") { $0.maxEntriesPerAppend = 0 },
        .init(what: "a negative byte limit per append") { $0.maxBytesPerAppend = -1 },
        .init(what: "no proposal bytes") { $0.maxProposalBytes = 0 },
        .init(what: "lease reads without check-quorum") {
            $0.readMode = .leaseBased
            $0.checkQuorum = false
        },
    ]
}

@Suite("Configuration")
struct ConfigTests {
    @Test func theDefaultsAreValid() throws {
        try RaftConfig(id: 1).validate()
    }

    @Test(arguments: NonsenseConfig.all)
    func nonsenseIsRejectedAndNoNodeStartsWithIt(_ nonsense: NonsenseConfig) {
        var config = RaftConfig(id: 1)
        nonsense.change(&config)
        #expect(throws: RaftConfigError.self) { try config.validate() }
        #expect(throws: RaftConfigError.self) { _ = try RaftNode(config: config, recovered: .empty) }
    }

    @Test func aRecoveredLogWithAGapIsRejected() {
        let entries = [Entry(term: 1, index: 1, payload: .empty), Entry(term: 1, index: 3, payload: .empty)]
        #expect(throws: RaftConfigError.self) {
            _ = try RaftNode(config: RaftConfig(id: 1), recovered: RecoveredState(hardState: HardState(term: 1), snapshot: nil, entries: entries))
        }
    }
}
