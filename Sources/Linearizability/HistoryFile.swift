/// One line of a history file: a client invoking an operation on a key, or learning its outcome.
public struct HistoryEvent: Sendable, Hashable {
    /// Whether the line invokes an operation or completes it, and how.
    public enum Kind: String, Sendable, Hashable {
        case invoke
        /// It happened.
        case ok
        /// It definitely did not happen.
        case fail
        /// Its outcome is unknown: it may have happened, at any time after its invocation.
        case info
    }

    /// The operation a line is about.
    public enum Function: String, Sendable, Hashable {
        case read, write, cas
    }

    /// A line's `value`: one value, or for `cas` the pair `[expected, new]`.
    public enum Payload: Sendable, Hashable {
        case value(Value)
        case compareAndSet(expected: Value, new: Value)
    }

    public var process: Int
    public var kind: Kind
    public var function: Function
    public var key: String
    public var value: Payload
    /// Nanoseconds, from any fixed origin shared by all processes.
    public var time: Int64

    public init(process: Int, kind: Kind, function: Function, key: String, value: Payload, time: Int64) {
        self.process = process
        self.kind = kind
        self.function = function
        self.key = key
        self.value = value
        self.time = time
    }

    /// The event as one line of a history file, without the newline.
    public var jsonLine: String {
        let value: String
        switch self.value {
        case .value(let single): value = Self.json(single)
        case .compareAndSet(let expected, let new): value = "[\(Self.json(expected)), \(Self.json(new))]"
        }
        return """
            {"process": \(process), "type": "\(kind.rawValue)", "f": "\(function.rawValue)", \
            "key": \(Self.json(key)), "value": \(value), "time": \(time)}
            """
    }

    private static func json(_ value: Value) -> String {
        switch value {
        case .null: return "null"
        case .integer(let integer): return String(integer)
        case .bool(let bool): return String(bool)
        case .string(let string): return json(string)
        }
    }

    private static func json(_ string: String) -> String {
        var escaped = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": escaped += "\\\""
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            case "\r": escaped += "\\r"
            case "\t": escaped += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                escaped += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped + "\""
    }
}

/// A problem in a history file, and the line it is on.
public struct HistoryFileError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The 1-based line number.
    public var line: Int
    public var message: String

    public init(line: Int, message: String) {
        self.line = line
        self.message = message
    }

    public var description: String { "line \(line): \(message)" }
}

/// Reads histories in Divan's JSON Lines format (docs/linearizability.md).
public enum HistoryFile {
    /// Parses a whole file, pairing each process's invocations with their completions.
    ///
    /// Failed operations are dropped, as they definitely did not happen. Operations still pending at
    /// the end of the file have an unknown outcome, like `info` ones. Reads with an unknown outcome are
    /// dropped too: whatever they returned, no client saw it. With `model`, an operation the model
    /// does not define is an error on its line.
    public static func parse(_ text: String, model: RegisterModel? = nil) throws(HistoryFileError) -> History {
        var assembler = Assembler(model: model)
        var lineNumber = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            if line.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\r" }) { continue }
            try assembler.add(try event(from: line, line: lineNumber), line: lineNumber)
        }
        return assembler.finish()
    }

    /// Parses one line into an event; `line` only labels errors.
    public static func event(from text: Substring, line: Int) throws(HistoryFileError) -> HistoryEvent {
        func fail(_ message: String) -> HistoryFileError { HistoryFileError(line: line, message: message) }
        let json: JSON
        do {
            json = try JSONParser.parse(text)
        } catch {
            throw fail("invalid JSON at column \(error.column): \(error.message)")
        }
        guard case .object(let members) = json else { throw fail("expected a JSON object") }

        func integer(_ name: String) throws(HistoryFileError) -> Int64 {
            guard let member = members[name] else { throw fail("missing \"\(name)\"") }
            guard case .integer(let value) = member else { throw fail("\"\(name)\" must be an integer") }
            return value
        }
        func string(_ name: String) throws(HistoryFileError) -> String {
            guard let member = members[name] else { throw fail("missing \"\(name)\"") }
            guard case .string(let value) = member else { throw fail("\"\(name)\" must be a string") }
            return value
        }
        func scalar(_ json: JSON) throws(HistoryFileError) -> Value {
            switch json {
            case .null: return .null
            case .bool(let value): return .bool(value)
            case .string(let value): return .string(value)
            case .integer(let value):
                guard let value = Int(exactly: value) else { throw fail("value \(value) is out of range") }
                return .integer(value)
            case .array, .object:
                throw fail("a value must be null, a boolean, an integer or a string")
            }
        }

        let process = try integer("process")
        let typeName = try string("type")
        guard let kind = HistoryEvent.Kind(rawValue: typeName) else {
            throw fail("unknown type \"\(typeName)\"; expected invoke, ok, fail or info")
        }
        let functionName = try string("f")
        guard let function = HistoryEvent.Function(rawValue: functionName) else {
            throw fail("unknown f \"\(functionName)\"; expected read, write or cas")
        }
        let key: String
        switch members["key"] {
        case .string(let name): key = name
        case .integer(let number): key = String(number)
        case nil: throw fail("missing \"key\"")
        default: throw fail("\"key\" must be a string or an integer")
        }
        guard members.keys.contains("value") else { throw fail("missing \"value\"") }
        let value: HistoryEvent.Payload
        switch (function, members["value"] ?? .null) {
        case (.cas, .array(let pair)):
            guard pair.count == 2 else { throw fail("a cas value must be [expected, new]") }
            value = .compareAndSet(expected: try scalar(pair[0]), new: try scalar(pair[1]))
        case (.cas, let other) where kind == .invoke || other != .null:
            throw fail("a cas value must be [expected, new]")
        case (.read, let other) where kind == .invoke && other != .null:
            throw fail("a read's invoke must have value null")
        case (_, let other):
            value = .value(try scalar(other))
        }
        return HistoryEvent(
            process: Int(process), kind: kind, function: function, key: key, value: value,
            time: try integer("time"))
    }
}

/// Pairs invocations with completions, process by process, into operations.
private struct Assembler {
    private struct Pending {
        var event: HistoryEvent
        var line: Int
        var id: Int
    }

    let model: RegisterModel?
    private var pending: [Int: Pending] = [:]
    private var lastTime: [Int: Int64] = [:]
    private var operations: [ClientOperation] = []
    private var invocations = 0

    init(model: RegisterModel?) {
        self.model = model
    }

    mutating func add(_ event: HistoryEvent, line: Int) throws(HistoryFileError) {
        func fail(_ message: String) -> HistoryFileError { HistoryFileError(line: line, message: message) }
        if let last = lastTime[event.process], event.time < last {
            throw fail("time goes backwards for process \(event.process): \(event.time) after \(last)")
        }
        lastTime[event.process] = event.time
        guard event.kind != .invoke else {
            if let open = pending[event.process] {
                throw fail(
                    "process \(event.process) invokes again while its operation from line \(open.line) is pending")
            }
            if let model, event.function == .cas, model == .register {
                throw fail("cas is not an operation of the \(model.rawValue) model; use cas-register")
            }
            pending[event.process] = Pending(event: event, line: line, id: invocations)
            invocations += 1
            return
        }
        guard let open = pending.removeValue(forKey: event.process) else {
            throw fail("process \(event.process) completes an operation it never invoked")
        }
        guard open.event.function == event.function, open.event.key == event.key else {
            throw fail(
                "\(event.kind.rawValue) \(event.function.rawValue) on \"\(event.key)\" does not match the "
                    + "\(open.event.function.rawValue) on \"\(open.event.key)\" invoked on line \(open.line)")
        }
        if event.function != .read, event.value != .value(.null), event.value != open.event.value {
            throw fail("the completion's value differs from the one invoked on line \(open.line)")
        }
        let returnTime: Int64?
        switch event.kind {
        case .fail, .invoke: return
        case .info: returnTime = nil
        case .ok: returnTime = event.time
        }
        append(open, completion: event, returnTime: returnTime)
    }

    mutating func finish() -> History {
        for open in pending.values.sorted(by: { $0.id < $1.id }) {
            append(open, completion: nil, returnTime: nil)
        }
        pending.removeAll()
        return History(operations: operations.sorted { $0.id < $1.id })
    }

    private mutating func append(_ open: Pending, completion: HistoryEvent?, returnTime: Int64?) {
        let action: Action
        switch (open.event.value, open.event.function) {
        case (.compareAndSet(let expected, let new), _):
            action = .compareAndSet(expected: expected, new: new)
        case (.value(let value), .write):
            action = .write(value)
        case (_, _):
            guard let completion, returnTime != nil, case .value(let observed) = completion.value else { return }
            action = .read(observed: observed)
        }
        operations.append(
            ClientOperation(
                id: open.id, process: open.event.process, key: open.event.key, action: action,
                invokeTime: open.event.time, returnTime: returnTime, line: open.line))
    }
}
