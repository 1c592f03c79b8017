import RaftCore

/// The receiving side of one accepted connection: handshake first, then batches.
///
/// Pure: the channel handler feeds it decoded frames and decoder errors and performs its actions.
struct InboundStateMachine {
    enum State: Equatable {
        case awaitingHandshake
        case established(peer: NodeID)
        case closed
    }

    enum Action: Equatable {
        case none
        /// The peer identified itself.
        case accept(peer: NodeID)
        /// Hand these messages to the receiver; `spoofed` counts those whose sender is not the
        /// handshake's node and were dropped.
        case deliver(from: NodeID, [GroupMessage], spoofed: Int)
        case close(reason: String)
    }

    private(set) var state: State = .awaitingHandshake

    mutating func received(_ frame: Frame) -> Action {
        switch (state, frame) {
        case (.awaitingHandshake, .handshake(let node)):
            guard node != noNode else {
                state = .closed
                return .close(reason: "handshake names node 0")
            }
            state = .established(peer: node)
            return .accept(peer: node)
        case (.awaitingHandshake, .batch):
            state = .closed
            return .close(reason: "batch before handshake")
        case (.established, .handshake):
            state = .closed
            return .close(reason: "second handshake")
        case (.established(let peer), .batch(let messages)):
            let genuine = messages.filter { $0.message.from == peer }
            return .deliver(from: peer, genuine, spoofed: messages.count - genuine.count)
        case (.closed, _):
            return .none
        }
    }

    mutating func decodingFailed(_ error: FrameError) -> Action {
        if state == .closed { return .none }
        state = .closed
        return .close(reason: error.description)
    }
}
