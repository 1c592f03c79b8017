import KVWire
import NIOCore

/// Input that is not RESP. It is answered with Redis's message and the connection closes.
struct RESPProtocolError: Error, Sendable, Hashable {
    /// The text after `-ERR `, e.g. `Protocol error: invalid bulk length`.
    let message: String

    init(_ message: String) {
        self.message = message
    }
}

/// Limits on what one client may send.
public struct RESPLimits: Sendable, Hashable {
    /// The longest bulk string accepted (Redis's `proto-max-bulk-len`, 512 MiB there).
    public var maximumBulkLength: Int
    /// The most arguments one command may carry.
    public var maximumArguments: Int
    /// The most bytes buffered for commands not yet complete (Redis's `client-query-buffer-limit`).
    public var maximumQueryBuffer: Int
    /// The most commands of one connection in flight or waiting for their turn to reply; beyond it
    /// the connection stops reading until replies drain.
    public var maximumPipelinedCommands: Int
    /// The most keys KEYS examines before it answers with an error that points to SCAN.
    public var maximumKeysScannedByKEYS: Int

    public init(
        maximumBulkLength: Int = 64 * 1024 * 1024,
        maximumArguments: Int = 1024 * 1024,
        maximumQueryBuffer: Int = 256 * 1024 * 1024,
        maximumPipelinedCommands: Int = 1024,
        maximumKeysScannedByKEYS: Int = 100_000
    ) {
        self.maximumBulkLength = maximumBulkLength
        self.maximumArguments = maximumArguments
        self.maximumQueryBuffer = maximumQueryBuffer
        self.maximumPipelinedCommands = maximumPipelinedCommands
        self.maximumKeysScannedByKEYS = maximumKeysScannedByKEYS
    }
}

/// An incremental parser of client commands: RESP arrays of bulk strings and inline commands.
/// Feed it bytes as they arrive and take commands out while it has complete ones; the errors and
/// the limits are Redis's (networking.c), so clients see what they would see from Redis.
struct RESPParser {
    /// Redis's `PROTO_INLINE_MAX_SIZE`: the longest inline command or length line.
    static let maximumLineLength = 64 * 1024

    private let limits: RESPLimits
    private var buffer = ByteBuffer()
    /// Arguments of a multibulk command read so far, and how many are still to come.
    private var arguments: [Bytes] = []
    private var remainingArguments = 0
    private var bufferedArgumentBytes = 0

    init(limits: RESPLimits) {
        self.limits = limits
    }

    /// Adds received bytes; false when the client is over its query buffer limit, which Redis
    /// answers by closing the connection without a reply.
    mutating func append(_ bytes: ByteBuffer) -> Bool {
        if buffer.readableBytes == 0 {
            buffer = bytes
        } else {
            // Bytes already parsed stay at the front until discarded; drop them before they pile up.
            if buffer.readerIndex > Self.maximumLineLength { buffer.discardReadBytes() }
            var bytes = bytes
            buffer.writeBuffer(&bytes)
        }
        return buffer.readableBytes + bufferedArgumentBytes <= limits.maximumQueryBuffer
    }

    /// The next complete command, or nil until more bytes arrive.
    mutating func next() throws(RESPProtocolError) -> [Bytes]? {
        while true {
            if remainingArguments == 0 {
                guard let first = buffer.readableBytesView.first else { return nil }
                if first == UInt8(ascii: "*") {
                    guard let count = try readLength(tooLong: "too big mbulk count string") else { return nil }
                    guard let count, count <= limits.maximumArguments else {
                        throw RESPProtocolError("Protocol error: invalid multibulk length")
                    }
                    // Redis skips empty and negative multibulk counts without a reply.
                    guard count > 0 else { continue }
                    remainingArguments = count
                    arguments.reserveCapacity(min(count, 1024))
                } else {
                    guard let line = try readInlineLine() else { return nil }
                    let words = try Self.splitInline(line)
                    if words.isEmpty { continue }
                    return words
                }
            }
            while remainingArguments > 0 {
                guard let argument = try readBulk() else { return nil }
                arguments.append(argument)
                bufferedArgumentBytes += argument.count
                remainingArguments -= 1
            }
            let command = arguments
            arguments = []
            bufferedArgumentBytes = 0
            return command
        }
    }

    /// Reads `*<integer>\r\n`; nil when the line is incomplete, `.some(nil)` when the number is
    /// malformed. The caller has checked the `*`.
    private mutating func readLength(tooLong: String) throws(RESPProtocolError) -> Int?? {
        let view = buffer.readableBytesView
        guard let carriageReturn = view.firstIndex(of: UInt8(ascii: "\r")) else {
            if view.count > Self.maximumLineLength { throw RESPProtocolError("Protocol error: \(tooLong)") }
            return nil
        }
        guard carriageReturn + 1 < view.endIndex else { return nil }
        let number = Self.parseStrictInteger(view[(view.startIndex + 1)..<carriageReturn])
        buffer.moveReaderIndex(forwardBy: carriageReturn + 2 - view.startIndex)
        return .some(number)
    }

    /// Reads one `$<length>\r\n<bytes>\r\n`, or nil until it is complete.
    private mutating func readBulk() throws(RESPProtocolError) -> Bytes? {
        let view = buffer.readableBytesView
        guard let first = view.first else { return nil }
        guard first == UInt8(ascii: "$") else {
            throw RESPProtocolError("Protocol error: expected '$', got '\(Character(Unicode.Scalar(first)))'")
        }
        guard let carriageReturn = view.firstIndex(of: UInt8(ascii: "\r")) else {
            if view.count > Self.maximumLineLength { throw RESPProtocolError("Protocol error: too big bulk count string") }
            return nil
        }
        guard carriageReturn + 1 < view.endIndex else { return nil }
        guard let length = Self.parseStrictInteger(view[(view.startIndex + 1)..<carriageReturn]),
              length >= 0, length <= limits.maximumBulkLength
        else {
            throw RESPProtocolError("Protocol error: invalid bulk length")
        }
        let headerLength = carriageReturn + 2 - view.startIndex
        // Redis skips the two bytes after the payload without looking at them; so do we.
        guard buffer.readableBytes >= headerLength + length + 2 else { return nil }
        buffer.moveReaderIndex(forwardBy: headerLength)
        let bytes = buffer.readBytes(length: length) ?? []
        buffer.moveReaderIndex(forwardBy: 2)
        return bytes
    }

    /// Reads one inline line without its line ending, or nil until it is complete.
    private mutating func readInlineLine() throws(RESPProtocolError) -> ArraySlice<UInt8>? {
        let view = buffer.readableBytesView
        guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if view.count > Self.maximumLineLength { throw RESPProtocolError("Protocol error: too big inline request") }
            return nil
        }
        var end = newline
        if end > view.startIndex, view[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        let line = ArraySlice(view[view.startIndex..<end])
        buffer.moveReaderIndex(forwardBy: newline + 1 - view.startIndex)
        return line
    }

    /// Redis's `string2ll`: an optional minus and digits, no sign, spaces or leading zeros.
    static func parseStrictInteger<C: Collection>(_ digits: C) -> Int? where C.Element == UInt8 {
        var iterator = digits.makeIterator()
        guard var byte = iterator.next() else { return nil }
        var isNegative = false
        if byte == UInt8(ascii: "-") {
            isNegative = true
            guard let next = iterator.next() else { return nil }
            byte = next
        }
        if byte == UInt8(ascii: "0") {
            return iterator.next() == nil && !isNegative ? 0 : nil
        }
        var value = 0
        var current: UInt8? = byte
        while let digit = current {
            guard digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") else { return nil }
            // Negative numbers accumulate downwards so that Int.min, one beyond -Int.max, parses.
            let (shifted, overflowA) = value.multipliedReportingOverflow(by: 10)
            let digitValue = Int(digit - UInt8(ascii: "0"))
            let (added, overflowB) = isNegative ? shifted.subtractingReportingOverflow(digitValue) : shifted.addingReportingOverflow(digitValue)
            if overflowA || overflowB { return nil }
            value = added
            current = iterator.next()
        }
        return value
    }

    /// Redis's `sdssplitargs`: words separated by spaces, double quotes with escapes (`\n`, `\xHH`, …),
    /// single quotes with `\'`; a closing quote must be followed by a space or the end.
    static func splitInline(_ line: ArraySlice<UInt8>) throws(RESPProtocolError) -> [Bytes] {
        let unbalanced = RESPProtocolError("Protocol error: unbalanced quotes in request")
        var words: [Bytes] = []
        var index = line.startIndex
        func isSpace(_ byte: UInt8) -> Bool { byte == 32 || byte == 9 || byte == 10 || byte == 13 || byte == 11 || byte == 12 }
        while true {
            while index < line.endIndex, isSpace(line[index]) { index += 1 }
            guard index < line.endIndex else { return words }
            var word: Bytes = []
            var inDouble = false
            var inSingle = false
            var done = false
            while !done {
                if inDouble {
                    guard index < line.endIndex else { throw unbalanced }
                    let byte = line[index]
                    if byte == UInt8(ascii: "\\"), index + 3 < line.endIndex, line[index + 1] == UInt8(ascii: "x"),
                       let high = hexValue(line[index + 2]), let low = hexValue(line[index + 3]) {
                        word.append(high << 4 | low)
                        index += 3
                    } else if byte == UInt8(ascii: "\\"), index + 1 < line.endIndex {
                        index += 1
                        switch line[index] {
                        case UInt8(ascii: "n"): word.append(10)
                        case UInt8(ascii: "r"): word.append(13)
                        case UInt8(ascii: "t"): word.append(9)
                        case UInt8(ascii: "b"): word.append(8)
                        case UInt8(ascii: "a"): word.append(7)
                        default: word.append(line[index])
                        }
                    } else if byte == UInt8(ascii: "\"") {
                        if index + 1 < line.endIndex, !isSpace(line[index + 1]) { throw unbalanced }
                        done = true
                    } else {
                        word.append(byte)
                    }
                } else if inSingle {
                    guard index < line.endIndex else { throw unbalanced }
                    let byte = line[index]
                    if byte == UInt8(ascii: "\\"), index + 1 < line.endIndex, line[index + 1] == UInt8(ascii: "'") {
                        index += 1
                        word.append(UInt8(ascii: "'"))
                    } else if byte == UInt8(ascii: "'") {
                        if index + 1 < line.endIndex, !isSpace(line[index + 1]) { throw unbalanced }
                        done = true
                    } else {
                        word.append(byte)
                    }
                } else {
                    guard index < line.endIndex else { break }
                    let byte = line[index]
                    if isSpace(byte) {
                        done = true
                    } else if byte == UInt8(ascii: "\"") {
                        inDouble = true
                    } else if byte == UInt8(ascii: "'") {
                        inSingle = true
                    } else {
                        word.append(byte)
                    }
                }
                if index < line.endIndex { index += 1 }
            }
            words.append(word)
        }
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
