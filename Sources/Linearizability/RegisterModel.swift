/// The sequential specification each key is checked against: a register, with or without
/// compare-and-set. A KV map is one such register per key, initially `null`.
public enum RegisterModel: String, Sendable, Hashable, CaseIterable {
    /// Reads and writes.
    case register
    /// Reads, writes and compare-and-set.
    case casRegister = "cas-register"

    /// A register's value before any write.
    public var initialState: Value { .null }

    /// Whether the model defines `action` at all; the checker refuses a history with other actions.
    public func supports(_ action: Action) -> Bool {
        switch action {
        case .read, .write: return true
        case .compareAndSet: return self == .casRegister
        }
    }

    /// The state after `action` runs alone on `state`, or nil when a sequential register could not
    /// have given that answer.
    ///
    /// A compare-and-set whose outcome is unknown is only ever placed where it succeeds: placing it
    /// where it fails changes nothing, which is the same as leaving it out, and the checker may always
    /// leave out an operation with an unknown outcome.
    public func step(_ state: Value, _ action: Action) -> Value? {
        switch action {
        case .read(let observed):
            return observed == state ? state : nil
        case .write(let value):
            return value
        case .compareAndSet(let expected, let new):
            return self == .casRegister && expected == state ? new : nil
        }
    }
}
