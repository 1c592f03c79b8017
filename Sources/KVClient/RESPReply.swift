import KVWire

/// A reply from a Divan node's Redis-protocol port (RESP2, which is what a client gets without HELLO 3).
public enum RESPReply: Sendable, Hashable {
    case simple(String)
    case error(String)
    case integer(Int64)
    case bulk(Bytes)
    case null
    case array([RESPReply])

    /// A command as RESP sends it: an array of bulk strings.
    static func encode(_ arguments: [Bytes]) -> Bytes {
        var bytes = Array("*\(arguments.count)\r\n".utf8)
        for argument in arguments {
            bytes += Array("$\(argument.count)\r\n".utf8)
            bytes += argument
            bytes += [13, 10]
        }
        return bytes
    }
}

/// Reads replies from a byte stream that arrives in pieces: `next()` returns a whole reply, nil when
/// more bytes are needed, and throws on bytes that are not RESP.
struct RESPReplyParser {
    private var buffer: Bytes = []
    private var position = 0

    struct Malformed: Error, CustomStringConvertible {
        var description: String
    }

    mutating func append(_ bytes: some Sequence<UInt8>) {
        if position > 0, position == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            position = 0
        }
        buffer.append(contentsOf: bytes)
    }

    mutating func next() throws -> RESPReply? {
        var cursor = position
        guard let reply = try parse(&cursor) else { return nil }
        position = cursor
        if position > 1 << 20 {
            buffer.removeFirst(position)
            position = 0
        }
        return reply
    }

    private func line(_ cursor: inout Int) -> String? {
        var end = cursor
        while end + 1 < buffer.count {
            if buffer[end] == 13, buffer[end + 1] == 10 {
                let text = String(decoding: buffer[cursor..<end], as: UTF8.self)
                cursor = end + 2
                return text
            }
            end += 1
        }
        return nil
    }

    private func parse(_ cursor: inout Int) throws -> RESPReply? {
        guard cursor < buffer.count else { return nil }
        let kind = buffer[cursor]
        var after = cursor + 1
        guard let text = line(&after) else { return nil }
        switch kind {
        case UInt8(ascii: "+"):
            cursor = after
            return .simple(text)
        case UInt8(ascii: "-"):
            cursor = after
            return .error(text)
        case UInt8(ascii: ":"):
            guard let value = Int64(text) else { throw Malformed(description: "integer reply '\(text)'") }
            cursor = after
            return .integer(value)
        case UInt8(ascii: "$"):
            guard let length = Int(text), length >= -1 else { throw Malformed(description: "bulk length '\(text)'") }
            if length == -1 {
                cursor = after
                return .null
            }
            guard buffer.count >= after + length + 2 else { return nil }
            let bytes = Array(buffer[after..<(after + length)])
            cursor = after + length + 2
            return .bulk(bytes)
        case UInt8(ascii: "*"):
            guard let count = Int(text), count >= -1 else { throw Malformed(description: "array length '\(text)'") }
            if count == -1 {
                cursor = after
                return .null
            }
            var elements: [RESPReply] = []
            elements.reserveCapacity(count)
            for _ in 0..<count {
                guard let element = try parse(&after) else { return nil }
                elements.append(element)
            }
            cursor = after
            return .array(elements)
        default:
            throw Malformed(description: "reply type byte \(kind)")
        }
    }
}
