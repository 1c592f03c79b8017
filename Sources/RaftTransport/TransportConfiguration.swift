import NIOCore
import RaftCore

/// Settings of a `TCPTransport`.
public struct TransportConfiguration: Sendable {
    /// This process's node id, sent in the handshake of every outgoing connection.
    public var node: NodeID
    /// Address to listen on for peers.
    public var host: String
    /// Port to listen on; 0 lets the operating system choose (read it back from `start()`).
    public var port: Int
    /// The largest frame sent or accepted, header included. A peer sending a larger one is disconnected.
    public var maximumFrameSize: Int
    /// Messages held per peer while a frame waits to be written or a connection to open.
    public var maximumQueuedMessagesPerPeer: Int
    /// Reconnect delays.
    public var backoff: Backoff
    /// How long one connection attempt may take before it counts as failed.
    public var connectTimeout: TimeAmount

    public init(
        node: NodeID, host: String = "127.0.0.1", port: Int = 0,
        maximumFrameSize: Int = FrameFormat.defaultMaximumFrameSize,
        maximumQueuedMessagesPerPeer: Int = 4096, backoff: Backoff = Backoff(),
        connectTimeout: TimeAmount = .seconds(1)
    ) {
        precondition(node != noNode, "node id 0 means no node")
        precondition(maximumFrameSize > FrameFormat.headerSize + 1, "maximumFrameSize leaves no room for a body")
        precondition(maximumQueuedMessagesPerPeer > 0, "maximumQueuedMessagesPerPeer must be positive")
        precondition(connectTimeout.nanoseconds > 0, "connectTimeout must be positive")
        self.node = node
        self.host = host
        self.port = port
        self.maximumFrameSize = maximumFrameSize
        self.maximumQueuedMessagesPerPeer = maximumQueuedMessagesPerPeer
        self.backoff = backoff
        self.connectTimeout = connectTimeout
    }
}

/// Counters of a `TCPTransport` since it started; a snapshot, read with `TCPTransport.statistics`.
public struct TransportStatistics: Sendable, Hashable {
    /// Batch frames written (handshakes not counted).
    public var framesSent = 0
    public var messagesSent = 0
    /// Batch frames received and decoded (handshakes not counted).
    public var framesReceived = 0
    /// Messages handed to the receiver.
    public var messagesDelivered = 0
    /// Messages the receiver did not know the group of.
    public var unknownGroupMessages = 0
    /// Messages whose sender was not the node named in the connection's handshake.
    public var unknownSenderMessages = 0
    /// Messages sent to a node with no address.
    public var unknownPeerMessages = 0
    /// Messages dropped because a peer's queue was full.
    public var queueOverflowDrops = 0
    /// Messages dropped because their peer became unreachable.
    public var unreachableDrops = 0
    /// Messages too large for any frame.
    public var oversizedMessageDrops = 0
    /// Incoming connections closed for a bad frame or a protocol violation.
    public var connectionsClosedForErrors = 0
    /// Failed connection attempts and lost connections, each reported as "peer unreachable".
    public var unreachableReports = 0
    /// Outgoing connections established.
    public var connectionsEstablished = 0

    public init() {}
}

/// What the receiver made of a message.
public enum DeliveryResult: Sendable, Hashable {
    case delivered
    /// No such group on this node: the transport drops the message and counts it.
    case unknownGroup
}
