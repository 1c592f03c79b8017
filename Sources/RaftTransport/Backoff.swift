import NIOCore

/// Capped exponential backoff for reconnecting to a peer.
public struct Backoff: Sendable, Hashable {
    /// The delay after the first failure.
    public var initial: TimeAmount
    /// The cap, so a peer that comes back is found again within this long.
    public var maximum: TimeAmount

    public init(initial: TimeAmount = .milliseconds(50), maximum: TimeAmount = .seconds(2)) {
        precondition(initial.nanoseconds > 0 && maximum >= initial, "backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
    }

    /// The delay before retry number `attempt + 1`: initial × 2^attempt, capped.
    public func delay(attempt: Int) -> TimeAmount {
        let shift = min(attempt, 32)
        let (scaled, overflow) = initial.nanoseconds.multipliedReportingOverflow(by: Int64(1) << shift)
        return overflow ? maximum : min(.nanoseconds(scaled), maximum)
    }
}
