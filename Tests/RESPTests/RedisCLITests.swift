import Foundation
import Testing

@testable import RESP

/// redis-cli 7 (Debian's redis-tools) against a RESPServer in this process.
@Suite("redis-cli against an in-process RESPServer")
struct RedisCLITests {
    @Test("every command with its options and error forms, as redis-cli shows them")
    func commands() async throws {
        let script = try String(contentsOf: clientScripts.appendingPathComponent("commands.redis"), encoding: .utf8)
        let expected = try String(contentsOf: clientScripts.appendingPathComponent("commands.expected"), encoding: .utf8)
        let result = try await withServer { server in
            try await runProgram([redisCLI, "--no-raw", "-p", "\(server.port)"], input: script)
        }
        #expect(result.status == 0, "\(result.stderr)")
        let actualLines = Self.lines(withoutLatencyLines(result.stdout))
        let expectedLines = Self.lines(expected)
        #expect(actualLines.count == expectedLines.count)
        for (index, (actual, wanted)) in zip(actualLines, expectedLines).enumerated() {
            #expect(Self.matches(actual, wanted), "line \(index + 1): \(actual) is not \(wanted)")
        }
    }

    /// Lines without the trailing empty one.
    private static func lines(_ text: String) -> [String] {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        while lines.last == "" { lines.removeLast() }
        return lines
    }

    /// `(integer) ≈N` in the expected output stands for a remaining time a little under N, which
    /// depends on how long the script took so far.
    private static func matches(_ actual: String, _ wanted: String) -> Bool {
        guard wanted.hasPrefix("(integer) ≈") else { return actual == wanted }
        guard let bound = Int64(wanted.dropFirst("(integer) ≈".count)),
              let value = Int64(actual.dropFirst("(integer) ".count)) else { return false }
        return value <= bound && value >= bound - bound / 50
    }

    @Test("a pipe of 10,000 commands: every reply, in order, none an error")
    func pipeOf10000() async throws {
        var input = ""
        for index in 0..<10_000 {
            let key = "key:\(index)"
            let value = "value-\(index)"
            input += "*3\r\n$3\r\nSET\r\n$\(key.utf8.count)\r\n\(key)\r\n$\(value.utf8.count)\r\n\(value)\r\n"
        }
        try await withServer { server in
            let port = "\(server.port)"
            let piped = try await runProgram([redisCLI, "-p", port, "--pipe"], input: input)
            #expect(piped.status == 0)
            #expect(piped.stdout.contains("errors: 0, replies: 10000"), "\(piped.stdout)")
            let check = try await runProgram([redisCLI, "-p", port], input: "DBSIZE\nGET key:0\nGET key:9999\n")
            #expect(check.stdout == "10000\nvalue-0\nvalue-9999\n")
        }
    }

    @Test("RESP3 with HELLO 3: maps and nulls in RESP3 form")
    func resp3() async throws {
        let result = try await withServer { server in
            try await runProgram([redisCLI, "-3", "--no-raw", "-p", "\(server.port)"], input: "HELLO 3\nGET missing\nCONFIG GET databases\n")
        }.stdout
        let output = withoutLatencyLines(result)
        #expect(output.contains("1# \"server\" => \"redis\""), "\(output)")
        #expect(output.contains("3# \"proto\" => (integer) 3"))
        #expect(output.contains("(nil)\n1# \"databases\" => \"1\""))
    }

    @Test("a password: NOAUTH without it, served with it")
    func password() async throws {
        try await withServer(options: RESPServerOptions(password: "s3cret")) { server in
            let port = "\(server.port)"
            let refused = try await runProgram([redisCLI, "-p", port, "SET", "k", "v"])
            #expect(refused.stdout.contains("NOAUTH Authentication required."))
            let served = try await runProgram([redisCLI, "--no-auth-warning", "-a", "s3cret", "-p", port], input: "SET k v\nGET k\n")
            #expect(served.stdout == "OK\nv\n")
        }
    }
}
