import Linearizability
import Testing

private func line(
    _ process: Int, _ type: String, _ f: String, _ value: String, _ time: Int, key: String = "\"x\""
) -> String {
    "{\"process\": \(process), \"type\": \"\(type)\", \"f\": \"\(f)\", \"key\": \(key), \"value\": \(value), \"time\": \(time)}"
}

@Suite("History files")
struct HistoryFileTests {
    @Test func pairsInvocationsWithCompletionsPerProcess() throws {
        let text = [
            line(0, "invoke", "write", "1", 0),
            line(1, "invoke", "read", "null", 5),
            line(0, "ok", "write", "1", 10),
            line(1, "ok", "read", "1", 15),
            "",
            line(2, "invoke", "cas", "[1, \"two\"]", 20),
            line(2, "info", "cas", "[1, \"two\"]", 30),
            line(3, "invoke", "write", "true", 40),
            line(4, "invoke", "read", "null", 40),
        ].joined(separator: "\n")
        let history = try HistoryFile.parse(text, model: .casRegister)
        #expect(
            history.operations == [
                ClientOperation(
                    id: 0, process: 0, key: "x", action: .write(.integer(1)), invokeTime: 0, returnTime: 10, line: 1),
                ClientOperation(
                    id: 1, process: 1, key: "x", action: .read(observed: .integer(1)), invokeTime: 5, returnTime: 15,
                    line: 2),
                ClientOperation(
                    id: 2, process: 2, key: "x", action: .compareAndSet(expected: .integer(1), new: .string("two")),
                    invokeTime: 20, returnTime: nil, line: 6),
                ClientOperation(
                    id: 3, process: 3, key: "x", action: .write(.bool(true)), invokeTime: 40, returnTime: nil, line: 8),
            ])
    }

    @Test func eventsRoundTripThroughTheirJSONLine() throws {
        let events = [
            HistoryEvent(
                process: 7, kind: .invoke, function: .cas, key: "k \"q\"\n",
                value: .compareAndSet(expected: .null, new: .string("é\u{1}")), time: 123),
            HistoryEvent(process: 1, kind: .ok, function: .read, key: "k", value: .value(.integer(-4)), time: 9),
            HistoryEvent(process: 1, kind: .fail, function: .write, key: "k", value: .value(.bool(false)), time: 9),
        ]
        for event in events {
            #expect(try HistoryFile.event(from: Substring(event.jsonLine), line: 1) == event)
        }
    }

    @Test func acceptsEscapesIntegerKeysAndExtraMembers() throws {
        let event = try HistoryFile.event(
            from: #"{"process":1,"type":"ok","f":"read","key":12,"value":"a\u00e9\ud83d\ude00\/","time":5,"index":3}"#,
            line: 1)
        #expect(event.key == "12")
        #expect(event.value == .value(.string("aé😀/")))
    }

    @Test(arguments: [
        ("{\"process\": 0, \"type\": \"invoke\"", "invalid JSON at column 32: expected ',' or '}'"),
        ("[1, 2]", "expected a JSON object"),
        (#"{"type": "invoke", "f": "read", "key": "x", "value": null, "time": 0}"#, #"missing "process""#),
        (#"{"process": "a", "type": "invoke", "f": "read", "key": "x", "value": null, "time": 0}"#,
         #""process" must be an integer"#),
        (#"{"process": 0, "type": "begin", "f": "read", "key": "x", "value": null, "time": 0}"#,
         #"unknown type "begin"; expected invoke, ok, fail or info"#),
        (#"{"process": 0, "type": "invoke", "f": "append", "key": "x", "value": null, "time": 0}"#,
         #"unknown f "append"; expected read, write or cas"#),
        (#"{"process": 0, "type": "invoke", "f": "read", "value": null, "time": 0}"#, #"missing "key""#),
        (#"{"process": 0, "type": "invoke", "f": "read", "key": "x", "time": 0}"#, #"missing "value""#),
        (#"{"process": 0, "type": "invoke", "f": "read", "key": "x", "value": 3, "time": 0}"#,
         "a read's invoke must have value null"),
        (#"{"process": 0, "type": "invoke", "f": "cas", "key": "x", "value": 3, "time": 0}"#,
         "a cas value must be [expected, new]"),
        (#"{"process": 0, "type": "invoke", "f": "cas", "key": "x", "value": [1, 2, 3], "time": 0}"#,
         "a cas value must be [expected, new]"),
        (#"{"process": 0, "type": "invoke", "f": "write", "key": "x", "value": 1.5, "time": 0}"#,
         "invalid JSON at column 70: only integers are supported"),
        (#"{"process": 0, "type": "invoke", "f": "write", "key": "x", "value": {"a": 1}, "time": 0}"#,
         "a value must be null, a boolean, an integer or a string"),
        (#"{"process": 0, "type": "invoke", "f": "write", "key": "x", "value": 1}"#, #"missing "time""#),
    ])
    func malformedLineIsNamed(text: String, message: String) {
        let good = line(9, "invoke", "write", "1", 0)
        #expect(throws: HistoryFileError(line: 3, message: message)) {
            try HistoryFile.parse([good, "", text].joined(separator: "\n"))
        }
    }

    @Test(arguments: [
        ([line(0, "invoke", "write", "1", 0), line(0, "invoke", "write", "2", 5)],
         "process 0 invokes again while its operation from line 1 is pending"),
        ([line(0, "invoke", "write", "1", 0), line(1, "ok", "write", "1", 5)],
         "process 1 completes an operation it never invoked"),
        ([line(0, "invoke", "write", "1", 0), line(0, "ok", "read", "1", 5)],
         #"ok read on "x" does not match the write on "x" invoked on line 1"#),
        ([line(0, "invoke", "write", "1", 0), line(0, "ok", "write", "1", 5, key: "\"y\"")],
         #"ok write on "y" does not match the write on "x" invoked on line 1"#),
        ([line(0, "invoke", "write", "1", 0), line(0, "ok", "write", "2", 5)],
         "the completion's value differs from the one invoked on line 1"),
        ([line(0, "invoke", "write", "1", 10), line(0, "ok", "write", "1", 5)],
         "time goes backwards for process 0: 5 after 10"),
        ([line(0, "invoke", "read", "null", 0), line(0, "invoke", "cas", "[1, 2]", 5)],
         "process 0 invokes again while its operation from line 1 is pending"),
    ])
    func inconsistentEventsAreNamed(lines: [String], message: String) {
        #expect(throws: HistoryFileError(line: 2, message: message)) {
            try HistoryFile.parse(lines.joined(separator: "\n"))
        }
    }

    @Test func registerModelRefusesCompareAndSetAtItsLine() {
        let text = [line(0, "invoke", "write", "1", 0), line(0, "ok", "write", "1", 5), line(0, "invoke", "cas", "[1, 2]", 6)]
            .joined(separator: "\n")
        #expect(throws: HistoryFileError(line: 3, message: "cas is not an operation of the register model; use cas-register")) {
            try HistoryFile.parse(text, model: .register)
        }
    }
}

@Suite("Violation reports")
struct ReportTests {
    private func staleRead() throws -> Violation {
        var history = HistoryBuilder()
        history.write(0, 1, 1_000, 1_010)
        history.write(0, 2, 1_020, 1_030)
        history.write(2, 3, 1_035, nil)
        history.read(1, 1, 1_040, 1_050)
        guard case .notLinearizable(let violation) = Checker(model: .register).check(history.history) else {
            throw CheckFailed()
        }
        return violation
    }

    private struct CheckFailed: Error {}

    @Test func textNamesTheWindowAndTheCulprit() throws {
        let report = try staleRead().description
        #expect(report.contains("key \"x\": not linearizable."))
        #expect(report.contains("write 2"))
        #expect(report.contains("ordered #1"))
        #expect(report.contains("read → 1"))
        #expect(report.contains("<- culprit"))
        #expect(!report.contains("write 1 "))
    }

    @Test func timelineDrawsEveryWindowOperation() throws {
        let violation = try staleRead()
        let html = Timeline.html(for: violation)
        #expect(html.hasPrefix("<!DOCTYPE html>"))
        #expect(html.contains("<svg"))
        #expect(html.contains("read → 1 (culprit)"))
        #expect(html.contains("#1 write 2"))
        #expect(html.split(separator: "<rect", omittingEmptySubsequences: false).count - 1 == violation.window.count)
    }
}
