/// A reply of a Redis-protocol server, as far as the harness needs to tell them apart.
enum RESPReply: Equatable, Sendable {
    case simple(String)
    case error(String)
    case integer(Int)
    case bulk([UInt8])
    case null
    case array([RESPReply])
}

/// A small RESP2 client: one command at a time on one connection, with a deadline per command.
/// After a timeout or a broken stream the connection is dropped and the next command reconnects,
/// so a late reply can never be taken for the answer to a later command.
final class RESPClient {
    let port: Int
    private var connection: Connection?

    init(port: Int) {
        self.port = port
    }

    /// Sends one command and waits for its reply for at most `timeout` seconds.
    func call(_ arguments: [String], timeout: Double) throws(Connection.Failure) -> RESPReply {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        if connection?.isUsable != true {
            connection = nil
            connection = try Connection(port: port, timeout: timeout)
        }
        let stream = connection!
        var request = Array("*\(arguments.count)\r\n".utf8)
        for argument in arguments {
            request += Array("$\(argument.utf8.count)\r\n".utf8) + Array(argument.utf8) + [13, 10]
        }
        do throws(Connection.Failure) {
            try stream.send(request, timeout: timeout)
            return try Self.reply(from: stream, until: deadline)
        } catch {
            connection = nil
            throw error
        }
    }

    /// Closes the connection (the next call opens a new one).
    func disconnect() {
        connection = nil
    }

    static func reply(from stream: Connection, until deadline: ContinuousClock.Instant) throws(Connection.Failure) -> RESPReply {
        let line = try stream.readLine(until: deadline)
        guard let kind = line.first else { throw .lost("an empty reply line") }
        let rest = String(decoding: line.dropFirst(), as: UTF8.self)
        switch kind {
        case UInt8(ascii: "+"): return .simple(rest)
        case UInt8(ascii: "-"): return .error(rest)
        case UInt8(ascii: ":"): return .integer(Int(rest) ?? 0)
        case UInt8(ascii: "_"): return .null
        case UInt8(ascii: "$"):
            guard let length = Int(rest) else { throw .lost("a bad bulk length '\(rest)'") }
            if length < 0 { return .null }
            let bytes = try stream.read(count: length + 2, until: deadline)
            return .bulk(Array(bytes.dropLast(2)))
        case UInt8(ascii: "*"):
            guard let count = Int(rest) else { throw .lost("a bad array length '\(rest)'") }
            if count < 0 { return .null }
            var items: [RESPReply] = []
            for _ in 0..<count { items.append(try reply(from: stream, until: deadline)) }
            return .array(items)
        default:
            throw .lost("an unknown reply type '\(Character(UnicodeScalar(kind)))'")
        }
    }
}

/// Plain HTTP/1.1 requests to a node's admin port (`/status`, `/ready`, `/membership`, `/snapshot`).
enum AdminClient {
    /// The status code and body, or nil when the node did not answer within `timeout` seconds.
    static func request(port: Int, _ method: String, _ path: String, body: String = "", timeout: Double = 3) -> (status: Int, body: String)? {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        guard let connection = try? Connection(port: port, timeout: timeout) else { return nil }
        let request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        guard (try? connection.send(Array(request.utf8), timeout: timeout)) != nil,
              let response = try? connection.readToEnd(until: deadline) else { return nil }
        let text = String(decoding: response, as: UTF8.self)
        guard let headEnd = text.range(of: "\r\n\r\n"), let statusLine = text[..<headEnd.lowerBound].split(separator: "\r\n").first else { return nil }
        let words = statusLine.split(separator: " ")
        guard words.count >= 2, let status = Int(words[1]) else { return nil }
        return (status, String(text[headEnd.upperBound...]))
    }
}
