import HotUpgrade
import Testing

/// The old process's side: every path to `finished`, `rolledBack` and `resumed`, without a socket.
@Suite struct HandoverStateMachineTests {
    typealias Machine = HandoverStateMachine
    static let version = HandoverStateMachine.protocolVersion

    /// Runs `events` from a fresh machine and returns the actions of each step and the final state.
    func run(_ events: [Machine.Event]) -> (actions: [[Machine.Action]], state: Machine.State) {
        var machine = Machine(ownUID: 1000)
        let actions = events.map { machine.handle($0) }
        return (actions, machine.state)
    }

    @Test func aCompleteHandoverCommitsAtReadyAndFinishesWhenDrained() {
        let (actions, state) = run([
            .hello(version: Self.version, peerUID: 1000), .ready, .batchSent(3), .adopted(3), .batchSent(2), .adopted(2), .drained,
        ])
        #expect(actions == [
            [.sendWelcome, .sendListeners], [.stopAccepting, .sendStoppedAccepting, .startMoving], [], [], [], [], [.sendDone, .close],
        ])
        #expect(state == .finished)
    }

    @Test func drainedWaitsForUnacknowledgedConnections() {
        var machine = Machine(ownUID: 1000)
        _ = machine.handle(.hello(version: Self.version, peerUID: 1000))
        _ = machine.handle(.ready)
        _ = machine.handle(.batchSent(1))
        #expect(machine.handle(.drained) == [])
        #expect(machine.state == .moving(inFlight: [1]))
        _ = machine.handle(.adopted(1))
        #expect(machine.handle(.drained) == [.sendDone, .close])
    }

    @Test func aWrongVersionIsRefusedAndNothingChanges() {
        let (actions, state) = run([.hello(version: Self.version + 1, peerUID: 1000)])
        #expect(state == .rolledBack(.versionMismatch(Self.version + 1)))
        guard case .refuse(let reason) = actions[0].first else {
            Issue.record("expected a refusal, got \(actions)")
            return
        }
        #expect(reason.contains("version"))
        #expect(actions[0].last == .close)
    }

    @Test func anotherUserIsRefused() {
        let (actions, state) = run([.hello(version: Self.version, peerUID: 0)])
        #expect(state == .rolledBack(.wrongUser(0)))
        #expect(actions[0].count == 2)
    }

    /// Every way the new process can fail before the commit point: the old one only closes the socket.
    @Test(arguments: [
        [Machine.Event.failed(.peerGone)],
        [.failed(.protocolViolation("garbage"))],
        [.hello(version: Self.version, peerUID: 1000), .failed(.peerGone)],
        [.hello(version: Self.version, peerUID: 1000), .failed(.timedOut)],
        [.hello(version: Self.version, peerUID: 1000), .aborted("bad config")],
        [.hello(version: Self.version, peerUID: 1000), .adopted(1)],
        [.ready],
    ])
    func failuresBeforeTheCommitPointRollBack(events: [Machine.Event]) {
        let (actions, state) = run(events)
        guard case .rolledBack = state else {
            Issue.record("expected rolledBack, got \(state)")
            return
        }
        #expect(actions.last == [.close])
        #expect(!actions.joined().contains(.stopAccepting))
    }

    /// After the commit point the old process accepts again and takes back what was not acknowledged.
    @Test(arguments: [
        [Machine.Event.failed(.peerGone)],
        [.batchSent(4), .failed(.peerGone)],
        [.batchSent(4), .adopted(4), .failed(.timedOut)],
        [.batchSent(1), .adopted(2)],
        [.aborted("adoption failed")],
        [.ready],
    ])
    func failuresAfterTheCommitPointResume(events: [Machine.Event]) {
        let (actions, state) = run([.hello(version: Self.version, peerUID: 1000), .ready] + events)
        guard case .resumed = state else {
            Issue.record("expected resumed, got \(state)")
            return
        }
        #expect(actions.last == [.resumeAccepting, .takeBackUnacknowledged, .close])
    }

    /// A machine past the commit point with `batches` sent, none acknowledged.
    func moving(batches: [Int], window: Int = HandoverStateMachine.defaultBatchesInFlight) -> Machine {
        var machine = Machine(ownUID: 1000, batchesInFlight: window)
        _ = machine.handle(.hello(version: Self.version, peerUID: 1000))
        _ = machine.handle(.ready)
        for size in batches { #expect(machine.handle(.batchSent(size)) == []) }
        return machine
    }

    @Test func batchesMayBeSentOnlyAfterTheCommitPointAndWithinTheWindow() {
        var machine = Machine(ownUID: 1000, batchesInFlight: 2)
        #expect(!machine.canSendBatch)
        _ = machine.handle(.hello(version: Self.version, peerUID: 1000))
        #expect(!machine.canSendBatch)
        _ = machine.handle(.ready)
        #expect(machine.canSendBatch)
        _ = machine.handle(.batchSent(250))
        #expect(machine.canSendBatch)
        _ = machine.handle(.batchSent(250))
        #expect(!machine.canSendBatch)
        _ = machine.handle(.adopted(250))
        #expect(machine.canSendBatch)
        #expect(machine.state == .moving(inFlight: [250]))
    }

    /// A full window drains as the acknowledgements come, each for the oldest batch, and sending resumes in between.
    @Test func acknowledgementsAnswerTheOldestBatchInFlight() {
        var machine = moving(batches: [250, 250, 100, 3])
        #expect(machine.state == .moving(inFlight: [250, 250, 100, 3]))
        #expect(!machine.canSendBatch)
        #expect(machine.handle(.adopted(250)) == [])
        #expect(machine.handle(.batchSent(7)) == [])
        #expect(machine.handle(.adopted(250)) == [])
        #expect(machine.handle(.adopted(100)) == [])
        #expect(machine.state == .moving(inFlight: [3, 7]))
        #expect(machine.handle(.drained) == [])
        #expect(machine.handle(.adopted(3)) == [])
        #expect(machine.handle(.adopted(7)) == [])
        #expect(machine.handle(.drained) == [.sendDone, .close])
        #expect(machine.state == .finished)
    }

    /// Empty batches (sent to keep the new process from timing out) take a place in the window like any other.
    @Test func anEmptyBatchIsAcknowledgedInItsTurn() {
        var machine = moving(batches: [0, 5])
        #expect(machine.handle(.adopted(0)) == [])
        #expect(machine.state == .moving(inFlight: [5]))
    }

    /// The protocol has no batch numbers: the new process handles batches in the order they arrive, so an
    /// acknowledgement that does not count the oldest batch is out of order or wrong, and the old process resumes.
    @Test(arguments: [
        ([3, 5], 5),
        ([3, 5], 8),
        ([3, 5], 2),
        ([], 0),
    ])
    func anAcknowledgementThatIsNotForTheOldestBatchResumes(batches: [Int], acknowledged: Int) {
        var machine = moving(batches: batches)
        #expect(machine.handle(.adopted(acknowledged)) == [.resumeAccepting, .takeBackUnacknowledged, .close])
        guard case .resumed(.protocolViolation) = machine.state else {
            Issue.record("expected a protocol violation, got \(machine.state)")
            return
        }
        #expect(!machine.canSendBatch)
    }

    @Test func aBatchBeyondTheWindowResumes() {
        var machine = moving(batches: [1, 1], window: 2)
        #expect(machine.handle(.batchSent(1)) == [.resumeAccepting, .takeBackUnacknowledged, .close])
        guard case .resumed(.protocolViolation) = machine.state else {
            Issue.record("expected a protocol violation, got \(machine.state)")
            return
        }
    }

    /// A failure with several batches in flight, some acknowledged: resumed, and the rest is taken back.
    @Test(arguments: [HandoverFailure.peerGone, .timedOut, .peerAborted("adoption failed"), .protocolViolation("garbage")])
    func aFailureWithSeveralBatchesInFlightResumes(failure: HandoverFailure) {
        var machine = moving(batches: [250, 250, 250, 250])
        _ = machine.handle(.adopted(250))
        _ = machine.handle(.batchSent(120))
        #expect(machine.handle(.failed(failure)) == [.resumeAccepting, .takeBackUnacknowledged, .close])
        #expect(machine.state == .resumed(failure))
        #expect(machine.isOver)
        #expect(machine.handle(.adopted(250)) == [])
        #expect(machine.state == .resumed(failure))
    }

    /// The peer aborting (it could not adopt) with batches in flight is a failure after the commit point too.
    @Test func anAbortWithBatchesInFlightResumes() {
        var machine = moving(batches: [250, 250])
        #expect(machine.handle(.aborted("cannot adopt")) == [.resumeAccepting, .takeBackUnacknowledged, .close])
        #expect(machine.state == .resumed(.peerAborted("cannot adopt")))
    }

    /// A window of one is the one-batch-at-a-time exchange.
    @Test func aWindowOfOneSendsOneBatchAtATime() {
        var machine = moving(batches: [2], window: 1)
        #expect(!machine.canSendBatch)
        _ = machine.handle(.adopted(2))
        #expect(machine.canSendBatch)
    }

    @Test func nothingHappensAfterTheEnd() {
        var machine = Machine(ownUID: 1000)
        _ = machine.handle(.failed(.peerGone))
        #expect(machine.isOver)
        #expect(machine.handle(.ready) == [])
        #expect(machine.handle(.failed(.peerGone)) == [])
        #expect(machine.state == .rolledBack(.peerGone))
    }
}

/// The new process's side.
@Suite struct TakeoverStateMachineTests {
    typealias Machine = TakeoverStateMachine

    func run(_ events: [Machine.Event]) -> (actions: [[Machine.Action]], state: Machine.State) {
        var machine = Machine(knownListeners: ["web", "db", "@admin"])
        let actions = events.map { machine.handle($0) }
        return (actions, machine.state)
    }

    @Test func aCompleteTakeover() {
        let (actions, state) = run([
            .welcome(version: HandoverStateMachine.protocolVersion), .listeners(["web", "@admin"]), .listenersAdopted,
            .stoppedAccepting, .connections(5), .connectionsAdopted(5), .done,
        ])
        #expect(actions == [[], [.adoptListeners], [.sendReady], [.startAccepting], [.adoptConnections], [.sendAdopted(5)], [.close]])
        #expect(state == .finished)
    }

    /// Two processes never accept at once: the new one waits for the old one to stop, and accepts in any case
    /// once the old one is done or gone.
    @Test(arguments: [Machine.Event.done, .failed(.peerGone)])
    func theNewProcessAcceptsWhenTheOldOneStopsOrGoes(last: Machine.Event) {
        let (actions, state) = run([
            .welcome(version: HandoverStateMachine.protocolVersion), .listeners(["web"]), .listenersAdopted, last,
        ])
        #expect(!actions.dropLast().joined().contains(.startAccepting))
        #expect(actions.last == [.startAccepting, .close])
        #expect(state == .finished)
    }

    @Test func aListenerMissingFromTheNewConfigAborts() {
        let (actions, state) = run([.welcome(version: HandoverStateMachine.protocolVersion), .listeners(["web", "metrics"])])
        #expect(actions[1] == [.sendAbort("listeners not in this config: metrics"), .close])
        #expect(state == .failed(.peerAborted("listeners not in this config: metrics")))
    }

    @Test func aListenerThatCannotBeAdoptedAborts() {
        let (actions, state) = run([.welcome(version: HandoverStateMachine.protocolVersion), .listeners(["web"]), .listenersFailed("EBADF")])
        #expect(actions[2] == [.sendAbort("EBADF"), .close])
        #expect(state == .failed(.peerAborted("EBADF")))
    }

    @Test(arguments: [
        [Machine.Event.refused("peer runs as uid 0")],
        [.welcome(version: HandoverStateMachine.protocolVersion + 1)],
        [.failed(.peerGone)],
        [.welcome(version: HandoverStateMachine.protocolVersion), .failed(.timedOut)],
        [.welcome(version: HandoverStateMachine.protocolVersion), .connections(1)],
        [.welcome(version: HandoverStateMachine.protocolVersion), .listeners(["web"]), .failed(.peerGone)],
    ])
    func failuresBeforeReadyGiveUp(events: [Machine.Event]) {
        let (actions, state) = run(events)
        guard case .failed = state else {
            Issue.record("expected failed, got \(state)")
            return
        }
        #expect(actions.last == [.close])
    }

    /// The old process dying after `ready` leaves this one serving what it has.
    @Test func theOldProcessDyingAfterReadyLeavesUsServing() {
        let (actions, state) = run([
            .welcome(version: HandoverStateMachine.protocolVersion), .listeners(["web"]), .listenersAdopted, .stoppedAccepting, .connections(2),
            .connectionsAdopted(2), .failed(.peerGone),
        ])
        #expect(actions.last == [.close])
        #expect(state == .finished)
    }
}
