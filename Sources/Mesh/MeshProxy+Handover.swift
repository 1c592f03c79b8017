#if canImport(Glibc)
import Glibc
#endif
import HotUpgrade
import NIOCore

/// The proxy as both sides of a hot upgrade: it gives its listeners and connections away (old process) and adopts
/// them (new process, or the old one taking back what a failed new process never acknowledged).
extension MeshProxy: HandoverDonor, HandoverRecipient {
    /// The admin endpoint's listening socket moves too, under this name (no listener may be called so: `@` is not
    /// allowed in config names).
    public static let adminListenerName = "@admin"

    public var listenerNames: Set<String> {
        Set(config.listeners.map(\.name)).union(config.admin == nil ? [] : [Self.adminListenerName])
    }

    public func duplicateListeners() async throws -> [HandoverListener] {
        let channels = state.withLockedValue { state in
            state.listenerChannels.map { ($0.key, $0.value) } + (state.adminChannel.map { [(Self.adminListenerName, $0)] } ?? [])
        }
        let table = SocketDescriptors.scan()
        var copies: [HandoverListener] = []
        for (name, channel) in channels {
            guard let key = SocketDescriptors.key(local: channel.localAddress, remote: nil), let fd = table[key],
                let copy = SocketDescriptors.duplicate(fd, matching: key)
            else {
                for copy in copies { close(copy.descriptor) }
                throw MeshError.listenerDescriptorNotFound(name)
            }
            copies.append(HandoverListener(name: name, descriptor: copy))
        }
        return copies
    }

    public func stopAccepting() async {
        let (listeners, admin) = state.withLockedValue { state in
            defer {
                state.listenerChannels = [:]
                state.adminChannel = nil
            }
            return (Array(state.listenerChannels.values), state.adminChannel)
        }
        // Stop calling accept first, and close only once the connections accepted last have been set up: NIO's
        // ServerBootstrap closes a child whose setup completes after its server channel closed, and that child's
        // unread request would be answered with a reset. The setup hops between loops, so give every loop a few turns.
        let servers = listeners + (admin.map { [$0] } ?? [])
        for channel in servers { try? await channel.setOption(.autoRead, value: false).get() }
        for _ in 0..<4 {
            for loop in group.makeIterator() { try? await loop.submit {}.get() }
        }
        for channel in servers { try? await channel.close() }
    }

    public func resumeAccepting(_ listeners: [HandoverListener]) async throws {
        // Connections asked to stop for the handover that failed go on here.
        for entry in connections.unmarkAll() {
            let channel = entry.channel
            let kind = entry.kind
            channel.eventLoop.execute {
                switch kind {
                case .http:
                    (try? channel.pipeline.syncOperations.handler(type: HandoverGate.self))?.unmark()
                    (try? channel.pipeline.syncOperations.handler(type: HTTP2HandoverGate.self))?.unmark()
                case .tcp: (try? channel.pipeline.syncOperations.handler(type: TunnelHandler.self))?.tunnel.thaw()
                }
            }
        }
        for listener in listeners {
            try await adopt(listener, accepting: true)
        }
    }

    public func adoptListener(_ listener: HandoverListener) async throws {
        try await adopt(listener, accepting: false)
    }

    private func adopt(_ listener: HandoverListener, accepting: Bool) async throws {
        if listener.name == Self.adminListenerName {
            let channel = try await AdminServer.adopt(proxy: self, group: group, descriptor: listener.descriptor, accepting: accepting)
            state.withLockedValue { $0.adminChannel = channel }
        } else {
            try await adoptListener(named: listener.name, descriptor: listener.descriptor, accepting: accepting)
        }
        logger.notice("holding an adopted listening socket", metadata: ["listener": "\(listener.name)", "accepting": "\(accepting)"])
    }

    public func startAccepting() async {
        let channels = state.withLockedValue { Array($0.listenerChannels.values) + ($0.adminChannel.map { [$0] } ?? []) }
        for channel in channels {
            try? await channel.setOption(.autoRead, value: true).get()
        }
    }

    public func captureConnections(markingUpTo limit: Int) async -> [HandoverConnection] {
        let (new, marked) = connections.mark(upTo: limit)
        for entry in new {
            let channel = entry.channel
            let kind = entry.kind
            channel.eventLoop.execute {
                switch kind {
                case .http: Self.markHTTP(channel)
                case .tcp: (try? channel.pipeline.syncOperations.handler(type: TunnelHandler.self))?.tunnel.freeze()
                }
            }
        }
        guard !marked.isEmpty else { return [] }
        let table = SocketDescriptors.scan()
        // All at once: the event loops are busy serving, and one hop per connection in turn adds up.
        let attempts = marked.map { entry in
            let channel = entry.channel
            let id = UInt64(UInt(bitPattern: ObjectIdentifier(channel).hashValue))
            return channel.eventLoop.submit { () -> HandoverConnection? in
                switch entry.kind {
                case .http: Self.captureHTTP(channel, id: id, listener: entry.listener, table: table)
                case .tcp: Self.captureTunnel(channel, id: id, listener: entry.listener, table: table)
                }
            }
        }
        // One wait for the lot: awaiting each attempt in turn would hop to its event loop and back once per connection.
        let results = (try? await EventLoopFuture.whenAllComplete(attempts, on: group.next()).get()) ?? []
        return results.compactMap { result in (try? result.get()) ?? nil }
    }

    /// Marks an HTTP connection: an HTTP/2 one at its HTTP/2 gate, any other at its `HandoverGate`; on its event loop.
    private static func markHTTP(_ channel: Channel) {
        let sync = channel.pipeline.syncOperations
        if let gate = try? sync.handler(type: HTTP2HandoverGate.self) {
            gate.mark()
        } else {
            (try? sync.handler(type: HandoverGate.self))?.mark()
        }
    }

    /// Captures an HTTP/1.1 connection held still by its gate, or an HTTP/2 one at a quiet point; on its event loop.
    private static func captureHTTP(
        _ channel: Channel, id: UInt64, listener: String, table: [SocketDescriptors.Key: CInt]
    ) -> HandoverConnection? {
        let sync = channel.pipeline.syncOperations
        if let gate = try? sync.handler(type: HTTP2HandoverGate.self) {
            return captureHTTP2(channel, gate: gate, id: id, listener: listener, table: table)
        }
        guard let gate = try? sync.handler(type: HandoverGate.self), gate.isFrozen else { return nil }
        if let proxy = try? sync.handler(type: HTTPProxyHandler.self), !proxy.machine.isAtSafePoint {
            // A pipelined request got in before the gate closed: serve it, and try again after its response.
            gate.thaw()
            return nil
        }
        guard gate.isFlushed, let copy = duplicate(channel, table: table) else { return nil }
        let preRead = gate.takeHeldBytes()
        channel.close(promise: nil)
        return HandoverConnection(id: id, listener: listener, state: .http(preRead: Array(preRead.readableBytesView)), descriptors: [copy])
    }

    /// Captures an HTTP/2 connection once its gate finds a quiet point; on its event loop.
    private static func captureHTTP2(
        _ channel: Channel, gate: HTTP2HandoverGate, id: UInt64, listener: String, table: [SocketDescriptors.Key: CInt]
    ) -> HandoverConnection? {
        let sync = channel.pipeline.syncOperations
        if let http1Gate = try? sync.handler(type: HandoverGate.self), http1Gate.isMarked {
            // Marked while still HTTP/1.1, upgraded to h2c since: it stops at its HTTP/2 gate now.
            http1Gate.unmark()
        }
        guard (try? sync.handler(type: H2CUpgradePrefaceHandler.self)) == nil else { return nil }
        gate.mark()
        // The copy first: once quiet, the gate has handed over its held bytes and must not go on.
        guard let copy = duplicate(channel, table: table) else { return nil }
        guard case .quiet(let state) = gate.captureStep() else {
            close(copy)
            return nil
        }
        channel.close(promise: nil)
        return HandoverConnection(id: id, listener: listener, state: .http2(state), descriptors: [copy])
    }

    /// Captures a TCP tunnel (both sockets) held still and flushed; on its event loop.
    private static func captureTunnel(
        _ channel: Channel, id: UInt64, listener: String, table: [SocketDescriptors.Key: CInt]
    ) -> HandoverConnection? {
        guard let handler = try? channel.pipeline.syncOperations.handler(type: TunnelHandler.self) else { return nil }
        let tunnel = handler.tunnel
        guard tunnel.isFrozen else {
            // Marked while still connecting: hold it still now that it may be open.
            tunnel.freeze()
            return nil
        }
        guard tunnel.isFlushed, let upstreamChannel = tunnel.upstream?.channel,
            let clientCopy = duplicate(channel, table: table)
        else { return nil }
        guard let upstreamCopy = duplicate(upstreamChannel, table: table) else {
            close(clientCopy)
            return nil
        }
        let state = HandoverConnection.State.tcp(
            toUpstream: Array(tunnel.heldToUpstream.readableBytesView), toClient: Array(tunnel.heldToClient.readableBytesView),
            isClientInputOpen: tunnel.machine.isClientInputOpen, isUpstreamInputOpen: tunnel.machine.isUpstreamInputOpen)
        channel.close(promise: nil)
        upstreamChannel.close(promise: nil)
        return HandoverConnection(id: id, listener: listener, state: state, descriptors: [clientCopy, upstreamCopy])
    }

    private static func duplicate(_ channel: Channel, table: [SocketDescriptors.Key: CInt]) -> CInt? {
        guard let key = SocketDescriptors.key(local: channel.localAddress, remote: channel.remoteAddress), let fd = table[key] else {
            return nil
        }
        return SocketDescriptors.duplicate(fd, matching: key)
    }

    public func heldConnectionCount() async -> Int {
        connections.all.count
    }

    public func adopt(_ connections: [HandoverConnection]) async -> [HandoverAdoptionFailure] {
        guard !connections.isEmpty else { return [] }
        // One wait for the lot: each adoption runs on its event loop, and awaiting each in turn would hop back and forth.
        let adoptions = connections.map(adoption(of:))
        let results: [Result<Void, any Error>]
        do {
            results = try await EventLoopFuture.whenAllComplete(adoptions, on: group.next()).get()
        } catch {
            results = Array(repeating: .failure(error), count: connections.count)
        }
        return zip(connections, results).compactMap { connection, result in
            guard case .failure(let error) = result else { return nil }
            return HandoverAdoptionFailure(connection: connection, reason: "\(error)")
        }
    }

    private func adoption(of connection: HandoverConnection) -> EventLoopFuture<Void> {
        switch connection.state {
        case .http(let preRead):
            return httpConnectionAdoption(listener: connection.listener, descriptor: connection.descriptors[0], preRead: ByteBuffer(bytes: preRead))
        case .http2(let state):
            // Not chained on the loop like the others: resumed in a loop task queued right behind its registration, some
            // connections never reached a quiet point at the next upgrade (UpgradeTests, HTTP/2 with many streams).
            return group.next().makeFutureWithTask {
                try await self.adoptHTTP2Connection(listener: connection.listener, descriptor: connection.descriptors[0], state: state)
            }
        case .tcp(let toUpstream, let toClient, let clientOpen, let upstreamOpen):
            let snapshot = TCPTunnelSnapshot(
                listener: connection.listener, pendingToUpstream: ByteBuffer(bytes: toUpstream), pendingToClient: ByteBuffer(bytes: toClient),
                isClientInputOpen: clientOpen, isUpstreamInputOpen: upstreamOpen)
            return tcpTunnelAdoption(snapshot, clientDescriptor: connection.descriptors[0], upstreamDescriptor: connection.descriptors[1])
        }
    }

    public func record(_ report: HandoverReport) {
        metrics.recordHandover(
            role: report.role.rawValue, outcome: report.outcome.rawValue, connections: report.connectionsMoved,
            bytes: report.bytesForwarded, duration: report.duration)
    }
}
