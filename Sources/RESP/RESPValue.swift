import KVWire
import NIOCore

/// The protocol a connection speaks, chosen with HELLO.
enum ProtocolVersion: Int, Sendable {
    case resp2 = 2
    case resp3 = 3
}

/// A reply, independent of the protocol version: the encoder decides how each case looks in RESP2
/// and RESP3, so command code states what it means once.
indirect enum RESPValue: Sendable, Hashable {
    case simple(String)
    /// The whole error line without the leading `-`, e.g. `ERR syntax error`.
    case error(String)
    case integer(Int64)
    case bulk(Bytes)
    /// A missing value: `$-1` in RESP2, `_` in RESP3.
    case null
    case array([RESPValue])
    /// RESP3's map; RESP2 flattens it into an array of keys and values, as Redis does.
    case map([MapEntry])
    /// Plain text such as INFO: RESP3's verbatim string (`=`, format `txt`), RESP2's bulk string.
    case verbatim(String)

    /// One key and value of a map reply.
    struct MapEntry: Sendable, Hashable {
        var key: RESPValue
        var value: RESPValue
    }

    static let ok = RESPValue.simple("OK")

    static func bulk(_ text: String) -> RESPValue { .bulk(Array(text.utf8)) }

    static func map(_ pairs: [(String, RESPValue)]) -> RESPValue {
        .map(pairs.map { MapEntry(key: .bulk($0.0), value: $0.1) })
    }
}

extension RESPValue {
    /// Appends the wire form of this value for `version` to `buffer`.
    func encode(into buffer: inout ByteBuffer, version: ProtocolVersion) {
        switch self {
        case .simple(let text):
            buffer.writeInteger(UInt8(ascii: "+"))
            buffer.writeString(text)
            buffer.writeStaticString("\r\n")
        case .error(let text):
            buffer.writeInteger(UInt8(ascii: "-"))
            buffer.writeString(text)
            buffer.writeStaticString("\r\n")
        case .integer(let value):
            buffer.writeInteger(UInt8(ascii: ":"))
            buffer.writeString(String(value))
            buffer.writeStaticString("\r\n")
        case .bulk(let bytes):
            Self.writeBulk(bytes, marker: UInt8(ascii: "$"), into: &buffer)
        case .null:
            buffer.writeStaticString(version == .resp3 ? "_\r\n" : "$-1\r\n")
        case .array(let elements):
            Self.writeHeader(UInt8(ascii: "*"), count: elements.count, into: &buffer)
            for element in elements { element.encode(into: &buffer, version: version) }
        case .map(let entries):
            if version == .resp3 {
                Self.writeHeader(UInt8(ascii: "%"), count: entries.count, into: &buffer)
            } else {
                Self.writeHeader(UInt8(ascii: "*"), count: entries.count * 2, into: &buffer)
            }
            for entry in entries {
                entry.key.encode(into: &buffer, version: version)
                entry.value.encode(into: &buffer, version: version)
            }
        case .verbatim(let text):
            if version == .resp3 {
                Self.writeBulk(Array("txt:\(text)".utf8), marker: UInt8(ascii: "="), into: &buffer)
            } else {
                Self.writeBulk(Array(text.utf8), marker: UInt8(ascii: "$"), into: &buffer)
            }
        }
    }

    private static func writeHeader(_ marker: UInt8, count: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(marker)
        buffer.writeString(String(count))
        buffer.writeStaticString("\r\n")
    }

    private static func writeBulk(_ bytes: Bytes, marker: UInt8, into buffer: inout ByteBuffer) {
        writeHeader(marker, count: bytes.count, into: &buffer)
        buffer.writeBytes(bytes)
        buffer.writeStaticString("\r\n")
    }
}
