/// The state of one L4 tunnel (a client connection and its upstream), as a pure value.
///
/// Each direction closes on its own (half-close): an EOF from one side becomes a write shutdown on the other,
/// and the tunnel ends when both directions are done or either side fails.
public struct TCPTunnelStateMachine: Sendable, Equatable {
    /// One end of the tunnel.
    public enum Side: String, Sendable, Equatable {
        case client
        case upstream

        var other: Side { self == .client ? .upstream : .client }
    }

    /// Where the tunnel is in its life.
    public enum Phase: String, Sendable, Equatable {
        /// Accepted; the upstream is being dialled. Client reads are held, so at most one read's bytes wait.
        case connecting
        /// Bytes flow; one direction may already be closed.
        case open
        case closed
    }

    /// What the shell must do.
    public enum Action: Sendable, Equatable {
        /// Write the client bytes that arrived while connecting to the upstream.
        case forwardEarlyBytes
        /// Start reading both sides.
        case startReading
        /// Flush what was written to `side`, then shut down its write half.
        case shutdownOutput(Side)
        /// Close both connections.
        case closeBoth
    }

    public private(set) var phase: Phase = .connecting
    /// Whether bytes may still arrive from the client / from the upstream.
    public private(set) var isClientInputOpen = true
    public private(set) var isUpstreamInputOpen = true

    public init() {}

    /// Rebuilds a tunnel captured in another process, with each direction as it was.
    public init(adoptedWithClientInputOpen clientOpen: Bool, upstreamInputOpen upstreamOpen: Bool) {
        phase = .open
        isClientInputOpen = clientOpen
        isUpstreamInputOpen = upstreamOpen
    }

    /// The upstream is connected: send what the client already sent, pass on an early EOF, and start reading.
    public mutating func upstreamConnected() -> [Action] {
        guard phase == .connecting else { return [] }
        phase = .open
        return isClientInputOpen ? [.forwardEarlyBytes, .startReading] : [.forwardEarlyBytes, .shutdownOutput(.upstream), .startReading]
    }

    public mutating func upstreamConnectFailed() -> [Action] {
        close()
    }

    /// `side` sent EOF: pass it on as a write shutdown toward the other side.
    public mutating func inputClosed(_ side: Side) -> [Action] {
        if phase == .connecting && side == .client {
            isClientInputOpen = false
            return []
        }
        guard phase == .open else { return phase == .closed ? [] : close() }
        switch side {
        case .client: isClientInputOpen = false
        case .upstream: isUpstreamInputOpen = false
        }
        if !isClientInputOpen && !isUpstreamInputOpen {
            // The last shutdown must flush before the close, so both are requested in order.
            phase = .closed
            return [.shutdownOutput(side.other), .closeBoth]
        }
        return [.shutdownOutput(side.other)]
    }

    /// `side` closed or failed outright.
    public mutating func connectionClosed(_ side: Side) -> [Action] {
        close()
    }

    public mutating func idleTimeout() -> [Action] {
        close()
    }

    /// Whether the tunnel may be captured for handover (the shell also waits for pending writes to drain).
    public var isAtSafePoint: Bool { phase == .open }

    private mutating func close() -> [Action] {
        guard phase != .closed else { return [] }
        phase = .closed
        return [.closeBoth]
    }
}
