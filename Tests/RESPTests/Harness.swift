import KVStore
import KVWire
import NIOCore
import Synchronization

@testable import RESP

/// A clock the test moves by hand, shared by the store and the front end.
final class TestClock: Sendable {
    private let milliseconds: Mutex<Int64>

    init(_ start: Int64 = 1_700_000_000_000) {
        milliseconds = Mutex(start)
    }

    var now: Int64 { milliseconds.withLock { $0 } }

    func advance(by delta: Int64) {
        milliseconds.withLock { $0 += delta }
    }
}

/// One connection's state machine over `LocalKVService`, without a socket: the test sends text and
/// reads the replies, rendered the way redis-cli shows them. Calls run one by one in the order the
/// machine starts them; `started` records how many were running at once.
struct Harness {
    let clock: TestClock
    let service: LocalKVService
    private(set) var machine: ConnectionStateMachine
    private(set) var isClosed = false

    init(options: RESPServerOptions = RESPServerOptions(), clock: TestClock = TestClock(), service: LocalKVService? = nil) {
        self.clock = clock
        self.service = service ?? LocalKVService(engine: MemoryEngine(), clock: { clock.now })
        let server = ServerContext(options: options, now: { clock.now })
        machine = ConnectionStateMachine(
            session: Session(id: 7, isAuthenticated: options.password == nil, connectedAt: clock.now), server: server
        )
    }

    /// Sends one inline command per line and returns one rendered reply per reply received.
    mutating func send(_ lines: String...) async -> [String] {
        await sendBytes(ByteBuffer(string: lines.map { $0 + "\r\n" }.joined()))
    }

    mutating func sendBytes(_ bytes: ByteBuffer) async -> [String] {
        var output = ByteBuffer()
        var pending = machine.received(bytes)
        while !pending.isEmpty {
            let action = pending.removeFirst()
            switch action {
            case .write(var buffer):
                output.writeBuffer(&buffer)
            case .close:
                isClosed = true
            case .start(let id, let call):
                let reply = await call.run(service)
                pending += machine.completed(id, reply: reply)
            }
        }
        return ReplyReader.render(output)
    }

    /// The reply of one command.
    mutating func run(_ line: String) async -> String {
        let replies = await send(line)
        return replies.count == 1 ? replies[0] : "\(replies)"
    }
}

/// Renders RESP2/RESP3 replies as one line each, close to redis-cli's output.
enum ReplyReader {
    static func render(_ buffer: ByteBuffer) -> [String] {
        var bytes = buffer
        var replies: [String] = []
        while bytes.readableBytes > 0, let reply = readOne(&bytes) { replies.append(reply) }
        return replies
    }

    private static func readLine(_ buffer: inout ByteBuffer) -> String? {
        guard let end = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\r")) else { return nil }
        let line = buffer.readString(length: end - buffer.readerIndex)
        buffer.moveReaderIndex(forwardBy: 2)
        return line
    }

    static func readOne(_ buffer: inout ByteBuffer) -> String? {
        guard let marker = buffer.readInteger(as: UInt8.self), let line = readLine(&buffer) else { return nil }
        switch Character(Unicode.Scalar(marker)) {
        case "+": return line
        case "-": return "(error) \(line)"
        case ":": return "(integer) \(line)"
        case "_": return "(nil)"
        case "$", "=":
            guard let length = Int(line), length >= 0 else { return "(nil)" }
            let text = buffer.readString(length: length) ?? ""
            buffer.moveReaderIndex(forwardBy: 2)
            return "\"\(marker == UInt8(ascii: "=") ? String(text.dropFirst(4)) : text)\""
        case "*", "~":
            guard let count = Int(line), count >= 0 else { return "(nil)" }
            return "[" + (0..<count).map { _ in readOne(&buffer) ?? "?" }.joined(separator: ", ") + "]"
        case "%":
            let count = Int(line) ?? 0
            return "{" + (0..<count).map { _ in "\(readOne(&buffer) ?? "?"): \(readOne(&buffer) ?? "?")" }.joined(separator: ", ") + "}"
        default:
            return "?\(line)"
        }
    }
}
