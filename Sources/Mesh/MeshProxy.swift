import HotUpgrade
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix

/// A running Divan Mesh: its listeners, clusters, health checks and admin endpoint.
///
/// Besides accepting connections it can adopt sockets made elsewhere (`adoptListener`, `adoptHTTPConnection`,
/// `adoptTCPTunnel`): the entry points the hot upgrade uses to rebuild connections handed over by an old process.
public final class MeshProxy: Sendable {
    public let config: MeshConfig
    public let metrics: MeshMetrics
    let group: EventLoopGroup
    let logger: Logger
    let clusters: [String: Cluster]
    let listenerContexts: [String: ListenerContext]
    let connections = ConnectionRegistry()
    let state = NIOLockedValueBox(RunState())

    struct RunState {
        var listenerChannels: [String: Channel] = [:]
        var adminChannel: Channel?
        var healthTasks: [RepeatedTask] = []
        var isReady = false
    }

    public init(config: MeshConfig, group: EventLoopGroup, logger: Logger, metrics: MeshMetrics? = nil) throws {
        self.config = config
        self.group = group
        self.logger = logger
        let metrics = metrics ?? MeshMetrics(config: config)
        self.metrics = metrics
        var clusters: [String: Cluster] = [:]
        for cluster in config.clusters {
            clusters[cluster.name] = try Cluster(config: cluster, metrics: metrics, logger: logger)
        }
        self.clusters = clusters
        var contexts: [String: ListenerContext] = [:]
        for listener in config.listeners {
            var listenerLogger = logger
            listenerLogger[metadataKey: "listener"] = "\(listener.name)"
            contexts[listener.name] = ListenerContext(
                config: listener, clusters: clusters, metrics: metrics.listeners[listener.name], logger: listenerLogger)
        }
        self.listenerContexts = contexts
    }

    /// Binds every listener and the admin endpoint not adopted from an old process, and starts health checks.
    public func start() async throws {
        for listener in config.listeners where state.withLockedValue({ $0.listenerChannels[listener.name] == nil }) {
            let address = try SocketAddress.makeAddressResolvingHost(listener.address.host, port: listener.address.port)
            let channel = try await serverBootstrap(for: listener).bind(to: address).get()
            state.withLockedValue { $0.listenerChannels[listener.name] = channel }
            logger.notice("listening", metadata: ["listener": "\(listener.name)", "address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        }
        if let admin = config.admin, state.withLockedValue({ $0.adminChannel == nil }) {
            let address = try SocketAddress.makeAddressResolvingHost(admin.host, port: admin.port)
            let channel = try await AdminServer.bind(proxy: self, group: group, address: address)
            state.withLockedValue { $0.adminChannel = channel }
            logger.notice("listening", metadata: ["listener": "\(Self.adminListenerName)", "address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        }
        startHealthChecks()
        state.withLockedValue { $0.isReady = true }
    }

    /// Binds a listener on a socket that is already bound and listening, such as one received from an old process.
    ///
    /// With `accepting: false` nothing is accepted until `startAccepting()`: while an old process still accepts
    /// from the same queue, two processes accepting race for every connection.
    public func adoptListener(named name: String, descriptor: CInt, accepting: Bool = true) async throws {
        guard let listener = listenerContexts[name]?.config else { throw MeshError.unknownListener(name) }
        let channel = try await serverBootstrap(for: listener).serverChannelOption(.autoRead, value: accepting)
            .withBoundSocket(descriptor).get()
        state.withLockedValue { $0.listenerChannels[name] = channel }
    }

    /// Serves an already connected client socket of an HTTP listener, as if `preRead` had just been read from it.
    ///
    /// `preRead` holds bytes the old process read but did not process (the start of the next request).
    public func adoptHTTPConnection(listener name: String, descriptor: CInt, preRead: ByteBuffer) async throws {
        try await httpConnectionAdoption(listener: name, descriptor: descriptor, preRead: preRead).get()
    }

    /// `adoptHTTPConnection` as a future: its steps follow one another on the connection's event loop, with no hop
    /// back to the caller in between.
    func httpConnectionAdoption(listener name: String, descriptor: CInt, preRead: ByteBuffer) -> EventLoopFuture<Void> {
        guard let listener = listenerContexts[name], listener.config.proto == .http else {
            return group.next().makeFailedFuture(MeshError.unknownListener(name))
        }
        // Nothing is read from the socket until the pre-read bytes went through the decoder, so the order holds.
        return ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.autoRead, value: false)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try self.configureHTTP(channel, listener: listener) }
            }
            .withConnectedSocket(descriptor)
            .flatMap { channel in
                // The registration's future completes before channelActive goes through the pipeline: queue behind it.
                channel.eventLoop.flatSubmit {
                    if preRead.readableBytes > 0 {
                        channel.pipeline.syncOperations.fireChannelRead(NIOAny(preRead))
                        channel.pipeline.syncOperations.fireChannelReadComplete()
                    }
                    return channel.setOption(.autoRead, value: true)
                }
            }
    }

    /// Serves an HTTP/2 client socket moved from an old process at a quiet point, in the state it was moved in.
    public func adoptHTTP2Connection(listener name: String, descriptor: CInt, state: HandoverConnection.HTTP2State) async throws {
        guard let listener = listenerContexts[name], listener.config.proto == .http else { throw MeshError.unknownListener(name) }
        guard state.sendWindow >= HTTP2ConnectionLedger.initialWindow else { throw MeshError.unresumableHTTP2State }
        // Nothing is read from the socket until the handler has its state and the pre-read bytes, so the order holds.
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.autoRead, value: false)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try Self.configureHTTP2(channel, listener: listener, resuming: state)
                    self.register(channel, listener: listener)
                }
            }
            .withConnectedSocket(descriptor).get()
        try await channel.eventLoop.submit {
            // autoRead first: NIO's stream channels take the parent's autoRead when they are created, and the pre-read
            // bytes may open streams. The socket is read only on a later turn of the loop, after the bytes below.
            try channel.syncOptions?.setOption(.autoRead, value: true)
            try channel.pipeline.syncOperations.handler(type: HTTP2HandoverGate.self).resumeAfterAdoption()
        }.get()
    }

    /// Rebuilds a TCP tunnel from its two connected sockets, with the bytes still owed in each direction.
    public func adoptTCPTunnel(_ snapshot: TCPTunnelSnapshot, clientDescriptor: CInt, upstreamDescriptor: CInt) async throws {
        try await tcpTunnelAdoption(snapshot, clientDescriptor: clientDescriptor, upstreamDescriptor: upstreamDescriptor).get()
    }

    /// `adoptTCPTunnel` as a future: its steps follow one another on one event loop, with no hop back to the caller
    /// in between. Each step is queued behind the previous registration's channelActive, which its future precedes.
    func tcpTunnelAdoption(_ snapshot: TCPTunnelSnapshot, clientDescriptor: CInt, upstreamDescriptor: CInt) -> EventLoopFuture<Void> {
        let loop = group.next()
        guard let listener = listenerContexts[snapshot.listener], listener.config.proto == .tcp else {
            return loop.makeFailedFuture(MeshError.unknownListener(snapshot.listener))
        }
        return loop.flatSubmit {
            let tunnelBox = NIOLoopBound(
                TCPTunnel(machine: TCPTunnelStateMachine(
                    adoptedWithClientInputOpen: snapshot.isClientInputOpen, upstreamInputOpen: snapshot.isUpstreamInputOpen)),
                eventLoop: loop)
            return ClientBootstrap(group: loop)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelOption(.autoRead, value: false)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let tunnel = tunnelBox.value
                        let handler = TunnelHandler(side: .upstream, tunnel: tunnel)
                        tunnel.upstream = handler
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .withConnectedSocket(upstreamDescriptor)
                .flatMap { _ in loop.flatSubmit {
                    ClientBootstrap(group: loop)
                        .channelOption(.allowRemoteHalfClosure, value: true)
                        .channelOption(.autoRead, value: false)
                        .channelInitializer { channel in
                            channel.eventLoop.makeCompletedFuture {
                                try self.configureTCPClient(channel, listener: listener, tunnel: tunnelBox.value)
                            }
                        }
                        .withConnectedSocket(clientDescriptor)
                } }
                .flatMap { _ in loop.submit {
                    let tunnel = tunnelBox.value
                    tunnel.upstream?.write(snapshot.pendingToUpstream)
                    tunnel.upstream?.flush()
                    tunnel.client?.write(snapshot.pendingToClient)
                    tunnel.client?.flush()
                    if snapshot.isClientInputOpen { tunnel.client?.startReading() }
                    if snapshot.isUpstreamInputOpen { tunnel.upstream?.startReading() }
                } }
        }
    }

    /// The bound address of a listener (useful with port 0).
    public func localAddress(ofListener name: String) -> SocketAddress? {
        state.withLockedValue { $0.listenerChannels[name]?.localAddress }
    }

    /// The bound address of the admin endpoint.
    public var adminAddress: SocketAddress? {
        state.withLockedValue { $0.adminChannel?.localAddress }
    }

    /// Whether the proxy has started and not begun shutting down.
    public var isReady: Bool { state.withLockedValue { $0.isReady } }

    /// The cluster runtime by name, for the admin endpoint and tests.
    public func cluster(named name: String) -> Cluster? { clusters[name] }

    /// Open client connections by listener and phase.
    public func connectionCounts() async -> [String: [String: Int]] {
        await connections.counts()
    }

    /// Stops accepting, lets in-flight requests finish for up to `drainTime`, then closes everything.
    public func shutdown(drainTime: Duration = .seconds(10)) async {
        let (listeners, admin, tasks) = state.withLockedValue { state in
            state.isReady = false
            defer {
                state.listenerChannels = [:]
                state.adminChannel = nil
                state.healthTasks = []
            }
            return (Array(state.listenerChannels.values), state.adminChannel, state.healthTasks)
        }
        for task in tasks { task.cancel() }
        for channel in listeners { try? await channel.close() }
        let deadline = ContinuousClock.now + drainTime
        while ContinuousClock.now < deadline, await connections.busyCount() > 0 {
            try? await Task.sleep(for: .milliseconds(20))
        }
        await connections.closeAll()
        for cluster in clusters.values { cluster.closeIdle() }
        try? await admin?.close()
        logger.notice("stopped")
    }

    // MARK: Pipelines

    private func serverBootstrap(for listener: ListenerConfig) -> ServerBootstrap {
        let context = listenerContexts[listener.name]!
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        switch listener.proto {
        case .http:
            return bootstrap.childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try self.configureHTTP(channel, listener: context) }
            }
        case .tcp:
            return bootstrap
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelOption(.autoRead, value: false)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try self.configureTCPClient(channel, listener: context, tunnel: nil)
                    }
                }
        }
    }

    /// Builds an HTTP client connection's pipeline; the same for accepted and adopted sockets.
    ///
    /// The first bytes pick the protocol: the HTTP/2 preface (h2c with prior knowledge) or HTTP/1.1, which a request
    /// may still switch to HTTP/2 (`Upgrade: h2c`, see `H2CUpgradeHandler`).
    func configureHTTP(_ channel: Channel, listener: ListenerContext) throws {
        let sniffer = ProtocolSniffer { channel, choice in
            switch choice {
            case .http1: try Self.configureHTTP1(channel, listener: listener)
            case .http2: try Self.configureHTTP2(channel, listener: listener)
            }
        }
        try channel.pipeline.syncOperations.addHandlers(HandoverGate(), sniffer)
        register(channel, listener: listener)
    }

    private func register(_ channel: Channel, listener: ListenerContext) {
        connections.add(channel, listener: listener.config.name, kind: .http)
        listener.metrics?.connectionsTotal.increment()
        listener.metrics?.activeConnections.increment()
        channel.closeFuture.whenComplete { _ in listener.metrics?.activeConnections.decrement() }
    }

    static func configureHTTP1(_ channel: Channel, listener: ListenerContext) throws {
        let sync = channel.pipeline.syncOperations
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderListSize = listener.config.limits.maxHeaderBytes
        limits.maxHeaderFieldSize = listener.config.limits.maxHeaderBytes
        limits.maxHeaderFieldCount = listener.config.limits.maxHeaderCount + 1
        try sync.addHandler(HTTPResponseEncoder())
        try sync.addHandler(
            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes, limitConfiguration: limits)),
            name: MeshPipelineNames.decoder)
        try sync.addHandler(HTTPServerPipelineHandler())
        try sync.addHandler(H2CUpgradeHandler(listener: listener))
        try sync.addHandler(HTTPProxyHandler(listener: listener), name: MeshPipelineNames.proxy)
    }

    /// HTTP/2 toward the client: each stream gets its own `HTTPProxyHandler`, whatever the cluster speaks upstream.
    ///
    /// `resuming` rebuilds a connection moved from an old process (`HTTP2HandoverGate.resumeAfterAdoption` then
    /// brings NIO's handler to its state).
    static func configureHTTP2(_ channel: Channel, listener: ListenerContext, resuming: HandoverConnection.HTTP2State? = nil) throws {
        try configureHTTP2Connection(channel, maxHeaderListSize: listener.config.limits.maxHeaderBytes, resuming: resuming) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                try stream.pipeline.syncOperations.addHandler(HTTPProxyHandler(listener: listener))
            }
        }
    }

    /// The connection part of `configureHTTP2`: the handover gate and NIO's HTTP/2 server handler.
    static func configureHTTP2Connection(
        _ channel: Channel, maxHeaderListSize: Int, resuming: HandoverConnection.HTTP2State?,
        streamInitializer: @escaping NIOChannelInitializer
    ) throws {
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: 256),
            HTTP2Setting(parameter: .maxHeaderListSize, value: maxHeaderListSize),
            // No dynamic table for the client's HPACK encoder: once the client has acknowledged this, a fresh decoder
            // in another process decodes it, which is what lets the hot upgrade move the connection.
            HTTP2Setting(parameter: .headerTableSize, value: 0),
        ]
        let gate = HTTP2HandoverGate(eventLoop: channel.eventLoop, resuming: resuming)
        try channel.pipeline.syncOperations.addHandler(gate)
        _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
            mode: .server, connectionConfiguration: connection, streamConfiguration: .init(), streamDelegate: gate.streamDelegate,
            inboundStreamInitializer: streamInitializer)
    }

    /// Builds a TCP listener's client pipeline and, for a new connection, dials the upstream before reading anything.
    func configureTCPClient(_ channel: Channel, listener: ListenerContext, tunnel adopted: TCPTunnel?) throws {
        let tunnel = adopted ?? TCPTunnel()
        let handler = TunnelHandler(side: .client, tunnel: tunnel)
        tunnel.client = handler
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(IdleStateHandler(allTimeout: TimeAmount(listener.config.idleTimeout)))
        try sync.addHandler(handler, name: MeshPipelineNames.tunnel)
        connections.add(channel, listener: listener.config.name, kind: .tcp)
        listener.metrics?.connectionsTotal.increment()
        listener.metrics?.activeConnections.increment()
        channel.closeFuture.whenComplete { _ in listener.metrics?.activeConnections.decrement() }
        guard adopted == nil else { return }
        guard let clusterName = listener.config.cluster, let cluster = listener.clusters[clusterName] else {
            channel.close(promise: nil)
            return
        }
        let loop = channel.eventLoop
        let bound = NIOLoopBound(tunnel, eventLoop: loop)
        cluster.connectTCP(on: loop).whenComplete { result in
            let tunnel = bound.value
            switch result {
            case .success(let lease):
                lease.channel.closeFuture.whenComplete { _ in cluster.release(lease, reusable: false, success: true, isHTTP: false) }
                // The client may not even be registered yet (the accept hops loops), so test for a close, not for activity.
                guard tunnel.machine.phase == .connecting else {
                    lease.channel.close(promise: nil)
                    return
                }
                do {
                    let upstream = TunnelHandler(side: .upstream, tunnel: tunnel)
                    try lease.channel.pipeline.syncOperations.addHandler(upstream)
                    tunnel.upstream = upstream
                    tunnel.upstreamConnected()
                } catch {
                    lease.channel.close(promise: nil)
                    tunnel.upstreamConnectFailed()
                }
            case .failure:
                tunnel.upstreamConnectFailed()
            }
        }
    }

    // MARK: Health checks

    private func startHealthChecks() {
        var tasks: [RepeatedTask] = []
        for cluster in clusters.values {
            guard let check = cluster.config.healthCheck else { continue }
            let loop = group.next()
            for index in cluster.config.endpoints.indices {
                let task = loop.scheduleRepeatedAsyncTask(initialDelay: .zero, delay: TimeAmount(check.interval)) { _ in
                    HealthProbe.run(
                        check: check, proto: cluster.config.proto, address: cluster.addresses[index], host: cluster.config.endpoints[index].description, on: loop)
                        .map { success in cluster.recordProbe(index, success: success) }
                }
                tasks.append(task)
            }
        }
        state.withLockedValue { $0.healthTasks = tasks }
    }
}

/// Errors of the proxy's own API.
public enum MeshError: Error, Sendable {
    case unknownListener(String)
    /// A listening socket's file descriptor could not be found for a handover.
    case listenerDescriptorNotFound(String)
    /// A moved HTTP/2 connection's send window is below a fresh handler's (the old process never sends such a state).
    case unresumableHTTP2State
}

/// Names of the handlers in client pipelines, so a handover can find and remove them.
public enum MeshPipelineNames {
    public static let decoder = "mesh.http.decoder"
    public static let proxy = "mesh.http.proxy"
    public static let tunnel = "mesh.tcp.tunnel"
}

/// What a TCP tunnel needs to continue in another process, besides its two sockets.
public struct TCPTunnelSnapshot: Sendable, Equatable {
    public var listener: String
    /// Bytes read from the client not yet written to the upstream.
    public var pendingToUpstream: ByteBuffer
    /// Bytes read from the upstream not yet written to the client.
    public var pendingToClient: ByteBuffer
    public var isClientInputOpen: Bool
    public var isUpstreamInputOpen: Bool

    public init(
        listener: String, pendingToUpstream: ByteBuffer = ByteBuffer(), pendingToClient: ByteBuffer = ByteBuffer(),
        isClientInputOpen: Bool = true, isUpstreamInputOpen: Bool = true
    ) {
        self.listener = listener
        self.pendingToUpstream = pendingToUpstream
        self.pendingToClient = pendingToClient
        self.isClientInputOpen = isClientInputOpen
        self.isUpstreamInputOpen = isUpstreamInputOpen
    }
}
