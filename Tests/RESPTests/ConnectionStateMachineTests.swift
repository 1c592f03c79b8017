import KVWire
import NIOCore
import Testing

@testable import RESP

/// The connection state machine without a socket or a store: the test plays the service, finishing
/// calls in whatever order the story needs.
private struct Machine {
    var machine: ConnectionStateMachine
    var output: [String] = []
    var raw = ""
    var isClosed = false
    /// Calls started and not yet finished by the test, by id.
    var running: [(id: UInt64, call: KVCall)] = []

    init(limits: RESPLimits = RESPLimits()) {
        let server = ServerContext(options: RESPServerOptions(limits: limits), now: { 0 })
        machine = ConnectionStateMachine(session: Session(id: 1, isAuthenticated: true, connectedAt: 0), server: server)
    }

    mutating func send(_ text: String) {
        perform(machine.received(ByteBuffer(string: text)))
    }

    mutating func finish(_ id: UInt64, _ reply: RESPValue) {
        running.removeAll { $0.id == id }
        perform(machine.completed(id, reply: reply))
    }

    private mutating func perform(_ actions: [ConnectionStateMachine.Action]) {
        for action in actions {
            switch action {
            case .write(let buffer):
                output += ReplyReader.render(buffer)
                raw += String(buffer: buffer)
            case .start(let id, let call): running.append((id, call))
            case .close: isClosed = true
            }
        }
    }
}

@Suite("Connection state machine")
struct ConnectionStateMachineTests {
    @Test("a pipelined burst of writes to different keys starts at once; replies keep the command order")
    func concurrentWritesOrderedReplies() {
        var connection = Machine()
        connection.send((1...5).map { "SET k\($0) v\r\n" }.joined())
        #expect(connection.running.count == 5)
        for call in connection.running.reversed() {
            connection.finish(call.id, .integer(Int64(call.id)))
        }
        #expect(connection.output == (0...4).map { "(integer) \($0)" })
    }

    @Test("a command on a key an earlier running write touches waits for it, and so does everything after it")
    func sameKeyWaits() {
        var connection = Machine()
        connection.send("SET k 1\r\nGET k\r\nGET other\r\nPING\r\n")
        #expect(connection.running.map(\.id) == [0])
        connection.finish(0, .ok)
        #expect(connection.running.map(\.id) == [1, 2])
        #expect(connection.output == ["OK"])
        connection.finish(2, .bulk("o"))
        connection.finish(1, .bulk("1"))
        #expect(connection.output == ["OK", "\"1\"", "\"o\"", "PONG"])
    }

    @Test("reads of the same key run together; FLUSHDB waits for everything and everything waits for it")
    func readsShareBarriersDoNot() {
        var connection = Machine()
        connection.send("GET k\r\nGET k\r\nFLUSHDB\r\nGET k\r\n")
        #expect(connection.running.map(\.id) == [0, 1])
        connection.finish(0, .null)
        connection.finish(1, .null)
        #expect(connection.running.map(\.id) == [2])
        connection.finish(2, .ok)
        #expect(connection.running.map(\.id) == [3])
    }

    @Test("at the pipelining limit the machine stops taking input until replies drain")
    func pipeliningLimit() {
        var connection = Machine(limits: RESPLimits(maximumPipelinedCommands: 3))
        connection.send((1...10).map { "GET k\($0)\r\n" }.joined())
        #expect(connection.running.count == 3)
        #expect(!connection.machine.wantsInput)
        while let next = connection.running.first {
            connection.finish(next.id, .integer(Int64(next.id)))
        }
        #expect(connection.output == (0..<10).map { "(integer) \($0)" })
        #expect(connection.machine.wantsInput)
    }

    @Test("a protocol error is answered after the replies before it, then the connection closes")
    func protocolErrorAfterRunningCalls() {
        var connection = Machine()
        connection.send("GET k\r\n*1\r\n$x\r\nPING\r\n")
        #expect(connection.output.isEmpty && !connection.isClosed)
        connection.finish(0, .bulk("v"))
        #expect(connection.output == ["\"v\"", "(error) ERR Protocol error: invalid bulk length"])
        #expect(connection.isClosed)
    }

    @Test("a timed-out call is answered once; its late reply is dropped")
    func lateReplyIgnored() {
        var connection = Machine()
        connection.send("SET k v\r\n")
        let call = connection.running[0]
        connection.finish(call.id, call.call.timeoutReply(milliseconds: 10))
        connection.finish(call.id, .ok)
        #expect(connection.output == ["(error) UNCERTAIN timed out after 10 ms; the write may or may not have been applied"])
    }

    @Test("HELLO 3 changes the encoding of later replies only")
    func helloMidPipeline() {
        var connection = Machine()
        connection.send("GET a\r\nHELLO 3\r\nGET b\r\n")
        connection.finish(0, .null)
        connection.finish(2, .null)
        #expect(connection.raw.hasPrefix("$-1\r\n%7\r\n"))
        #expect(connection.raw.hasSuffix("_\r\n"))
    }

    @Test("the query buffer limit closes the connection without a reply, as in Redis")
    func queryBufferLimit() {
        var connection = Machine(limits: RESPLimits(maximumBulkLength: 1 << 20, maximumQueryBuffer: 1024))
        connection.send("*2\r\n$4\r\nECHO\r\n$4096\r\n" + String(repeating: "x", count: 2000))
        #expect(connection.isClosed && connection.output.isEmpty)
    }
}

@Suite("KV errors as Redis errors")
struct FailureReplyTests {
    @Test("no leader, moved regions and indefinite failures", arguments: [
        (KVError.definite(.noLeader(region: 3)), true, "TRYAGAIN region 3 has no leader yet; nothing was changed, retry shortly"),
        (.definite(.notLeader(region: 1, leader: 2)), false, "TRYAGAIN not the leader of region 1 (leader: 2); nothing was changed, retry shortly"),
        (.definite(.noRegion), true, "CLUSTERDOWN no region holds the key"),
        (.definite(.shuttingDown), false, "CLUSTERDOWN the node is shutting down"),
        (.definite(.tooLarge("value")), true, "ERR too large: value"),
        (.indefinite(.timedOut), true, "UNCERTAIN timed out; the write may or may not have been applied"),
        (.indefinite(.leadershipLost), true, "UNCERTAIN leadership lost; the write may or may not have been applied"),
        (.indefinite(.timedOut), false, "TRYAGAIN the read timed out; nothing was changed, retry"),
    ])
    func failure(error: KVError, isWrite: Bool, message: String) {
        #expect(Replies.failure(error, isWrite: isWrite) == .error(message))
    }
}
