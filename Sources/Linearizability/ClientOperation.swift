/// A value a register holds, reads or writes: what a JSON history can carry for one key.
public enum Value: Sendable, Hashable, CustomStringConvertible {
    /// The value of a key that was never written.
    case null
    case integer(Int)
    case string(String)
    case bool(Bool)

    public var description: String {
        switch self {
        case .null: return "null"
        case .integer(let value): return String(value)
        case .string(let value): return "\"\(value)\""
        case .bool(let value): return String(value)
        }
    }
}

/// What a client asked of one key, with the answer when the answer is part of the request's meaning.
public enum Action: Sendable, Hashable, CustomStringConvertible {
    /// A read, with the value it returned.
    case read(observed: Value)
    case write(Value)
    /// A compare-and-set that replaces `expected` with `new`. Only its successes reach the checker:
    /// a definite failure did not happen, so the history drops it.
    case compareAndSet(expected: Value, new: Value)

    public var description: String {
        switch self {
        case .read(let observed): return "read → \(observed)"
        case .write(let value): return "write \(value)"
        case .compareAndSet(let expected, let new): return "cas \(expected) → \(new)"
        }
    }
}

/// One client operation on one key: when it was invoked, when it returned, and what it did.
public struct ClientOperation: Sendable, Hashable, Identifiable {
    /// The operation's position in its history; unique within that history.
    public var id: Int
    public var process: Int
    public var key: String
    public var action: Action
    /// The invocation time, in nanoseconds.
    public var invokeTime: Int64
    /// The return time in nanoseconds, or nil when the outcome is unknown (`info`): the operation may
    /// then take effect at any time after its invocation, or never.
    public var returnTime: Int64?
    /// The line of the history file that invoked it, when it came from a file.
    public var line: Int?

    public init(
        id: Int, process: Int, key: String, action: Action,
        invokeTime: Int64, returnTime: Int64?, line: Int? = nil
    ) {
        self.id = id
        self.process = process
        self.key = key
        self.action = action
        self.invokeTime = invokeTime
        self.returnTime = returnTime
        self.line = line
    }

    /// Whether the client learned the outcome. An operation with an unknown outcome must not be
    /// forced into the linearization: it may never have taken effect.
    public var isOutcomeKnown: Bool { returnTime != nil }
}

/// A concurrent history: the completed and unknown-outcome operations of all clients, on any keys.
public struct History: Sendable, Hashable {
    public var operations: [ClientOperation]

    public init(operations: [ClientOperation]) {
        self.operations = operations
    }

    /// The history split by key. Linearizability is local (Herlihy and Wing's P-compositionality), so a
    /// KV history is linearizable exactly when each key's sub-history is.
    public func partitionedByKey() -> [(key: String, operations: [ClientOperation])] {
        var byKey: [String: [ClientOperation]] = [:]
        for operation in operations {
            byKey[operation.key, default: []].append(operation)
        }
        return byKey.sorted { $0.key < $1.key }.map { (key: $0.key, operations: $0.value) }
    }
}
