import NIOCore
import RaftCore
import Testing

@testable import RaftTransport

/// A stand-in for a channel: the state machines only need an identity.
final class FakeConnection: Sendable {}

@Suite struct OutboundStateMachineTests {
    typealias Machine = OutboundStateMachine<FakeConnection>

    static func message(_ payload: Message.Payload = .heartbeat(commit: 0, readRound: 0), group: UInt64 = 1) -> GroupMessage {
        GroupMessage(group: group, message: Samples.message(payload))
    }

    static func connected(limit: Int = 100) -> (Machine, FakeConnection) {
        var machine = Machine(maximumQueuedMessages: limit, backoff: Backoff())
        guard case .connect = machine.enqueue(message()).action else { fatalError("first message must connect") }
        let connection = FakeConnection()
        _ = machine.connectSucceeded(connection)
        return (machine, connection)
    }

    @Test func firstMessageConnectsAndIsSentAfterTheHandshake() {
        var machine = Machine(maximumQueuedMessages: 10, backoff: Backoff())
        guard case .connect = machine.enqueue(Self.message(group: 1)).action else { Issue.record("expected connect"); return }
        guard case .none = machine.enqueue(Self.message(group: 2)).action else { Issue.record("one attempt at a time"); return }
        let connection = FakeConnection()
        guard case .handshake(let c, let pending) = machine.connectSucceeded(connection) else { Issue.record("expected handshake"); return }
        #expect(c === connection)
        #expect(pending.map(\.group) == [1, 2])
        #expect(machine.queuedCount == 0)
    }

    @Test func sendsWithinOneTurnScheduleOneFlush() {
        var (machine, connection) = Self.connected()
        guard case .scheduleFlush(let c) = machine.enqueue(Self.message(group: 1)).action else { Issue.record("expected a flush"); return }
        #expect(c === connection)
        for group in 2...50 {
            guard case .none = machine.enqueue(Self.message(group: UInt64(group))).action else { Issue.record("flush scheduled twice"); return }
        }
        guard case .write(_, let messages) = machine.flushDue() else { Issue.record("expected a write"); return }
        #expect(messages.map(\.group) == Array(1...50))
        guard case .none = machine.flushDue() else { Issue.record("nothing left to write"); return }
        guard case .scheduleFlush = machine.enqueue(Self.message()).action else { Issue.record("next turn flushes again"); return }
    }

    @Test func aFullSendBufferHoldsMessagesInTheBoundedQueueUntilItDrains() {
        var (machine, connection) = Self.connected(limit: 3)
        guard case .none = machine.writabilityChanged(connection, isWritable: false) else { Issue.record("nothing to write"); return }
        for group in 1...5 {
            guard case .none = machine.enqueue(Self.message(group: UInt64(group))).action else { Issue.record("no flush while full"); return }
        }
        guard case .none = machine.flushDue() else { Issue.record("no write while full"); return }
        #expect(machine.queuedCount == 3)
        guard case .none = machine.writabilityChanged(FakeConnection(), isWritable: true) else { Issue.record("other connection"); return }
        guard case .write(_, let messages) = machine.writabilityChanged(connection, isWritable: true) else { Issue.record("expected a write"); return }
        #expect(messages.map(\.group) == [3, 4, 5])
    }

    @Test func overflowDropsTheOldestReplicationMessageFirst() {
        var (machine, _) = Self.connected(limit: 3)
        _ = machine.enqueue(Self.message(.voteRequest(.init(isPreVote: false, lastIndex: 1, lastTerm: 1, isTransfer: false)), group: 1))
        _ = machine.enqueue(Self.message(.heartbeat(commit: 1, readRound: 0), group: 2))
        _ = machine.enqueue(Self.message(.appendResponse(.init(index: 1)), group: 3))
        #expect(machine.enqueue(Self.message(.readIndexRequest(context: 1), group: 4)).dropped == 1)
        guard case .write(_, let messages) = machine.flushDue() else { Issue.record("expected a write"); return }
        #expect(messages.map(\.group) == [1, 3, 4])
    }

    @Test func overflowWithOnlyElectionTrafficDropsTheOldest() {
        var (machine, _) = Self.connected(limit: 2)
        for group in 1...3 {
            _ = machine.enqueue(Self.message(.voteResponse(isPreVote: false, granted: true), group: UInt64(group)))
        }
        guard case .write(_, let messages) = machine.flushDue() else { Issue.record("expected a write"); return }
        #expect(messages.map(\.group) == [2, 3])
    }

    @Test func failedAttemptsBackOffExponentiallyUpToTheCapAndResetOnSuccess() {
        let backoff = Backoff(initial: .milliseconds(10), maximum: .milliseconds(50))
        var machine = Machine(maximumQueuedMessages: 10, backoff: backoff)
        _ = machine.enqueue(Self.message())
        var delays: [TimeAmount] = []
        for _ in 0..<5 {
            guard case .reportUnreachable(let delay, _) = machine.connectFailed() else { Issue.record("expected a report"); return }
            delays.append(delay)
            let retries = machine.retryDue()
            #expect(retries)
        }
        #expect(delays == [10, 20, 40, 50, 50].map { TimeAmount.milliseconds($0) })
        let connection = FakeConnection()
        _ = machine.connectSucceeded(connection)
        guard case .reportUnreachable(let delay, _) = machine.connectionClosed(connection) else { Issue.record("expected a report"); return }
        #expect(delay == .milliseconds(10))
    }

    @Test func unreachablePeerLosesItsQueue() {
        var machine = Machine(maximumQueuedMessages: 10, backoff: Backoff())
        for _ in 0..<4 { _ = machine.enqueue(Self.message()) }
        guard case .reportUnreachable(_, let dropped) = machine.connectFailed() else { Issue.record("expected a report"); return }
        #expect(dropped == 4)
        #expect(machine.queuedCount == 0)
    }

    @Test func lateCloseOfAnOldConnectionIsIgnored() {
        var (machine, old) = Self.connected()
        _ = machine.connectionClosed(old)
        let retries = machine.retryDue()
        #expect(retries)
        let current = FakeConnection()
        _ = machine.connectSucceeded(current)
        guard case .none = machine.connectionClosed(old) else { Issue.record("old close tore down the new connection"); return }
        guard case .connected(let c) = machine.phase, c === current else { Issue.record("expected connected"); return }
    }

    @Test func shutDownClosesAndRefusesEverything() {
        var (machine, connection) = Self.connected()
        #expect(machine.shutDown() === connection)
        #expect(machine.enqueue(Self.message()).dropped == 1)
        guard case .none = machine.connectionClosed(connection) else { Issue.record("no retry after shutdown"); return }
        let retries = machine.retryDue()
        #expect(!retries)
        guard case .close = machine.connectSucceeded(FakeConnection()) else { Issue.record("late connect must close"); return }
    }
}

@Suite struct InboundStateMachineTests {
    let batch = [GroupMessage(group: 1, message: Samples.heartbeat(from: 7)), GroupMessage(group: 2, message: Samples.heartbeat(from: 8))]

    @Test func handshakeThenBatchesDeliverOnlyTheNamedSendersMessages() {
        var machine = InboundStateMachine()
        #expect(machine.received(.handshake(node: 7)) == .accept(peer: 7))
        #expect(machine.received(.batch(batch)) == .deliver(from: 7, [batch[0]], spoofed: 1))
    }

    @Test func batchBeforeHandshakeCloses() {
        var machine = InboundStateMachine()
        #expect(machine.received(.batch(batch)) == .close(reason: "batch before handshake"))
        #expect(machine.received(.handshake(node: 7)) == .none)
    }

    @Test func secondHandshakeOrNodeZeroCloses() {
        var machine = InboundStateMachine()
        _ = machine.received(.handshake(node: 7))
        #expect(machine.received(.handshake(node: 8)) == .close(reason: "second handshake"))
        var other = InboundStateMachine()
        #expect(other.received(.handshake(node: 0)) == .close(reason: "handshake names node 0"))
    }

    @Test func decodingErrorClosesOnce() {
        var machine = InboundStateMachine()
        #expect(machine.decodingFailed(.unsupportedVersion(9)) == .close(reason: "unsupported frame version 9"))
        #expect(machine.decodingFailed(.unsupportedVersion(9)) == .none)
        #expect(machine.state == .closed)
    }
}
