import KVWire
import NIOCore
import Testing

@testable import RESP

private func parse(_ text: String, limits: RESPLimits = RESPLimits(), chunk: Int = .max) -> (commands: [[String]], error: String?) {
    var parser = RESPParser(limits: limits)
    var commands: [[String]] = []
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let end = min(bytes.count, offset + chunk)
        let accepted = parser.append(ByteBuffer(bytes: bytes[offset..<end]))
        #expect(accepted)
        offset = end
        do {
            while let command = try parser.next() {
                commands.append(command.map { String(decoding: $0, as: UTF8.self) })
            }
        } catch {
            return (commands, error.message)
        }
    }
    return (commands, nil)
}

@Suite("RESP parser")
struct ParserTests {
    @Test("multibulk commands, whole or a byte at a time", arguments: [Int.max, 1, 3])
    func multibulk(chunk: Int) {
        let result = parse("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*1\r\n$4\r\nPING\r\n", chunk: chunk)
        #expect(result.commands == [["SET", "k", "hello"], ["PING"]])
        #expect(result.error == nil)
    }

    @Test("binary-safe bulk strings keep CR, LF and NUL")
    func binarySafe() {
        let result = parse("*2\r\n$4\r\nECHO\r\n$4\r\n\r\n\0x\r\n")
        #expect(result.commands == [["ECHO", "\r\n\0x"]])
    }

    @Test("inline commands, quotes and escapes, as redis-cli and telnet send them")
    func inline() {
        let result = parse("PING\r\nSET k \"a b\\n\\x41\"\nGET 'it\\'s'\r\n\r\n   \r\n")
        #expect(result.commands == [["PING"], ["SET", "k", "a b\nA"], ["GET", "it's"]])
    }

    @Test("empty and negative multibulk counts are skipped, as Redis does")
    func emptyMultibulk() {
        #expect(parse("*0\r\n*-10\r\n*1\r\n$4\r\nPING\r\n").commands == [["PING"]])
    }

    @Test("malformed input gets Redis's protocol errors", arguments: [
        ("*abc\r\n", "Protocol error: invalid multibulk length"),
        ("*20000000\r\n", "Protocol error: invalid multibulk length"),
        ("*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n", "Protocol error: expected '$', got 'f'"),
        ("*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$-10\r\n", "Protocol error: invalid bulk length"),
        ("*1\r\n$2000000000\r\n", "Protocol error: invalid bulk length"),
        ("*1\r\n$01\r\n", "Protocol error: invalid bulk length"),
        ("SET k \"unterminated\r\n", "Protocol error: unbalanced quotes in request"),
        ("SET k \"a\"b\r\n", "Protocol error: unbalanced quotes in request"),
    ])
    func malformed(input: String, message: String) {
        #expect(parse(input, limits: RESPLimits(maximumArguments: 1_000_000)).error == message)
    }

    @Test("a bulk longer than the configured limit is refused before it is buffered")
    func oversizedBulk() {
        let limits = RESPLimits(maximumBulkLength: 1024)
        #expect(parse("*2\r\n$4\r\nECHO\r\n$1025\r\n", limits: limits).error == "Protocol error: invalid bulk length")
        #expect(parse("*2\r\n$4\r\nECHO\r\n$1024\r\n", limits: limits).error == nil)
    }

    @Test("lines without an end beyond 64 KiB are errors, not unbounded buffering")
    func tooLongLines() {
        let garbage = String(repeating: "x", count: 70_000)
        #expect(parse(garbage).error == "Protocol error: too big inline request")
        #expect(parse("*" + String(repeating: "1", count: 70_000)).error == "Protocol error: too big mbulk count string")
        #expect(parse("*1\r\n$" + String(repeating: "1", count: 70_000)).error == "Protocol error: too big bulk count string")
    }

    @Test("the query buffer limit counts buffered bytes and arguments read so far")
    func queryBuffer() {
        var parser = RESPParser(limits: RESPLimits(maximumQueryBuffer: 100))
        let header = parser.append(ByteBuffer(string: "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n"))
        let partOfValue = parser.append(ByteBuffer(string: "$200\r\n" + String(repeating: "v", count: 50)))
        let overLimit = parser.append(ByteBuffer(string: String(repeating: "v", count: 60)))
        #expect(header && partOfValue && !overLimit)
    }

    @Test("strict integers: no sign, spaces or leading zeros", arguments: [
        ("0", 0), ("-5", -5), ("9223372036854775807", Int.max), ("-9223372036854775808", Int.min),
    ] as [(String, Int)])
    func integers(text: String, value: Int) {
        #expect(RESPParser.parseStrictInteger(Array(text.utf8)) == value)
    }

    @Test("not integers", arguments: ["", "-", "+1", " 1", "01", "-0", "1a", "9223372036854775808"])
    func notIntegers(text: String) {
        #expect(RESPParser.parseStrictInteger(Array(text.utf8)) == nil)
    }
}

@Suite("RESP encoder")
struct EncoderTests {
    private func encode(_ value: RESPValue, _ version: ProtocolVersion) -> String {
        var buffer = ByteBuffer()
        value.encode(into: &buffer, version: version)
        return String(buffer: buffer)
    }

    @Test("RESP2 and RESP3 forms", arguments: [
        (RESPValue.ok, "+OK\r\n", "+OK\r\n"),
        (.error("ERR syntax error"), "-ERR syntax error\r\n", "-ERR syntax error\r\n"),
        (.integer(-3), ":-3\r\n", ":-3\r\n"),
        (.bulk("hi"), "$2\r\nhi\r\n", "$2\r\nhi\r\n"),
        (.null, "$-1\r\n", "_\r\n"),
        (.array([.integer(1), .null]), "*2\r\n:1\r\n$-1\r\n", "*2\r\n:1\r\n_\r\n"),
        (.map([("a", .integer(1))]), "*2\r\n$1\r\na\r\n:1\r\n", "%1\r\n$1\r\na\r\n:1\r\n"),
        (.verbatim("x:1"), "$3\r\nx:1\r\n", "=7\r\ntxt:x:1\r\n"),
    ])
    func forms(value: RESPValue, resp2: String, resp3: String) {
        #expect(encode(value, .resp2) == resp2)
        #expect(encode(value, .resp3) == resp3)
    }
}

@Suite("Glob patterns")
struct GlobPatternTests {
    @Test("Redis's stringmatch", arguments: [
        ("*", "anything", true), ("user:*", "user:1", true), ("user:*", "use", false),
        ("h?llo", "hello", true), ("h?llo", "hllo", false), ("h[ae]llo", "hallo", true),
        ("h[^e]llo", "hello", false), ("h[a-b]llo", "hbllo", true), ("h\\*llo", "h*llo", true),
        ("h\\*llo", "hello", false), ("*a*b", "xxaxxb", true), ("*a*b", "xxaxx", false), ("", "", true),
    ])
    func matching(pattern: String, text: String, matches: Bool) {
        #expect(GlobPattern(Array(pattern.utf8)).matches(Array(text.utf8)) == matches)
    }

    @Test("the literal prefix bounds a scan")
    func prefix() {
        #expect(GlobPattern(Array("user:*:name".utf8)).literalPrefix == Array("user:".utf8))
        #expect(GlobPattern(Array("a\\*b?".utf8)).literalPrefix == Array("a*b".utf8))
        #expect(KeyCommands.successor(of: Array("user:".utf8)) == Array("user;".utf8))
        #expect(KeyCommands.successor(of: [0x61, 0xFF]) == [0x62])
        #expect(KeyCommands.successor(of: [0xFF]) == nil)
    }
}
