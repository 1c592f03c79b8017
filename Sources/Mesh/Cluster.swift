import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// The runtime of one cluster: resolved endpoints, the balancer, limits and the upstream connection pool
/// (HTTP/1.1 keep-alive connections, or multiplexed HTTP/2 connections with a stream per request).
public final class Cluster: Sendable {
    /// Why no upstream connection could be had.
    public enum AcquireError: Error, Sendable {
        case noEndpoint
        case overloaded
        case connectFailed
    }

    /// An upstream connection (or, for an HTTP/2 cluster, a stream) lent to one request or tunnel.
    public struct Lease: Sendable {
        public let channel: Channel
        public let endpoint: Int
    }

    struct PoolState {
        var balancer: LoadBalancer
        /// Idle keep-alive connections by endpoint.
        var idle: [[Channel]]
        var openConnections = 0
        var pendingRequests = 0
        var http2 = HTTP2ConnectionPool()
        var http2Connections: [HTTP2ConnectionPool.ConnectionID: HTTP2UpstreamConnection] = [:]
    }

    public let config: ClusterConfig
    let addresses: [SocketAddress]
    let state: NIOLockedValueBox<PoolState>
    let metrics: MeshMetrics.ClusterInstruments?
    let logger: Logger

    public init(config: ClusterConfig, metrics: MeshMetrics?, logger: Logger, seed: UInt64 = .random(in: 0...UInt64.max)) throws {
        self.config = config
        self.addresses = try config.endpoints.map { try SocketAddress.makeAddressResolvingHost($0.host, port: $0.port) }
        self.state = NIOLockedValueBox(
            PoolState(
                balancer: LoadBalancer(
                    endpointCount: config.endpoints.count, policy: config.loadBalancing,
                    healthCheck: config.healthCheck, outlierDetection: config.outlierDetection, seed: seed),
                idle: Array(repeating: [], count: config.endpoints.count)
            ))
        self.metrics = metrics?.clusters[config.name]
        var logger = logger
        logger[metadataKey: "cluster"] = "\(config.name)"
        self.logger = logger
    }

    /// A snapshot of the balancer, for `/connections` and tests.
    public var balancerState: LoadBalancer { state.withLockedValue { $0.balancer } }

    /// Acquires an upstream for one HTTP request on `loop`: a pooled HTTP/1.1 connection when possible, else a new
    /// one; or, for an HTTP/2 cluster, a new stream on a connection with room, opening a connection when none has.
    /// Connect failures are retried on other endpoints when `mayRetry`; each attempt counts for outlier detection.
    func acquireHTTP(on loop: EventLoop, mayRetry: Bool) -> EventLoopFuture<Lease> {
        let admitted = state.withLockedValue { state -> Bool in
            guard state.pendingRequests < config.maxPendingRequests else { return false }
            state.pendingRequests += 1
            return true
        }
        guard admitted else {
            metrics?.overflow.increment()
            return loop.makeFailedFuture(AcquireError.overloaded)
        }
        metrics?.upstreamRequests.increment()
        let attemptsLeft = mayRetry ? config.retries : 0
        let future =
            config.proto == .http2
            ? attemptHTTP2(on: loop, excluding: [], attemptsLeft: attemptsLeft)
            : attempt(on: loop, excluding: [], attemptsLeft: attemptsLeft, http: true)
        future.whenFailure { _ in self.state.withLockedValue { $0.pendingRequests -= 1 } }
        return future
    }

    /// Opens a new upstream TCP connection for a tunnel; the caller installs its handlers.
    func connectTCP(on loop: EventLoop) -> EventLoopFuture<Lease> {
        metrics?.upstreamRequests.increment()
        return attempt(on: loop, excluding: [], attemptsLeft: config.retries, http: false)
    }

    private func attempt(on loop: EventLoop, excluding: Set<Int>, attemptsLeft: Int, http: Bool) -> EventLoopFuture<Lease> {
        enum Choice {
            case pooled(Channel, Int)
            case connect(Int)
            case none
            case overloaded
        }
        let now = ContinuousClock.now
        let choice = state.withLockedValue { state -> Choice in
            guard let endpoint = state.balancer.pick(now: now, excluding: excluding) else { return .none }
            if http {
                while let index = state.idle[endpoint].lastIndex(where: { $0.eventLoop === loop }) {
                    let channel = state.idle[endpoint].remove(at: index)
                    if channel.isActive {
                        state.balancer.requestStarted(endpoint)
                        return .pooled(channel, endpoint)
                    }
                }
            }
            guard state.openConnections < config.maxConnections else { return .overloaded }
            state.openConnections += 1
            state.balancer.requestStarted(endpoint)
            return .connect(endpoint)
        }
        switch choice {
        case .none:
            return loop.makeFailedFuture(excluding.isEmpty ? AcquireError.noEndpoint : AcquireError.connectFailed)
        case .overloaded:
            metrics?.overflow.increment()
            return loop.makeFailedFuture(AcquireError.overloaded)
        case .pooled(let channel, let endpoint):
            return loop.makeSucceededFuture(Lease(channel: channel, endpoint: endpoint))
        case .connect(let endpoint):
            let bootstrap = ClientBootstrap(group: loop)
                .connectTimeout(TimeAmount(config.connectTimeout))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(.autoRead, value: http)
                .channelOption(.allowRemoteHalfClosure, value: !http)
                .channelInitializer { channel in
                    guard http else { return channel.eventLoop.makeSucceededVoidFuture() }
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(UpstreamHTTPHandler())
                    }
                }
            return bootstrap.connect(to: addresses[endpoint]).map { channel in
                channel.closeFuture.whenComplete { _ in self.state.withLockedValue { $0.openConnections -= 1 } }
                return Lease(channel: channel, endpoint: endpoint)
            }.flatMapError { error in
                self.metrics?.connectFailures.increment()
                self.state.withLockedValue { state in
                    state.openConnections -= 1
                    state.balancer.requestFinished(endpoint)
                }
                self.recordOutcome(endpoint, success: false)
                self.logger.debug("upstream connect failed", metadata: ["endpoint": "\(self.config.endpoints[endpoint])", "error": "\(error)"])
                guard attemptsLeft > 0 else { return loop.makeFailedFuture(AcquireError.connectFailed) }
                self.metrics?.retries.increment()
                return self.attempt(on: loop, excluding: excluding.union([endpoint]), attemptsLeft: attemptsLeft - 1, http: http)
            }
        }
    }

    /// Ends a request on a lease; a reusable HTTP/1.1 connection goes back to the pool, any other is closed.
    ///
    /// An HTTP/2 stream is never reused: one whose exchange ended cleanly (`reusable`) closes by itself, any other is
    /// reset (RST_STREAM), which leaves the connection and its other streams alone.
    func release(_ lease: Lease, reusable: Bool, success: Bool, isHTTP: Bool = true) {
        let isStream = isHTTP && config.proto == .http2
        let keep = state.withLockedValue { state -> Bool in
            state.balancer.requestFinished(lease.endpoint)
            if isHTTP { state.pendingRequests -= 1 }
            guard !isStream, reusable, lease.channel.isActive,
                state.idle[lease.endpoint].count < config.maxIdleConnectionsPerEndpoint
            else { return false }
            state.idle[lease.endpoint].append(lease.channel)
            return true
        }
        recordOutcome(lease.endpoint, success: success)
        if isStream {
            if !reusable { lease.channel.close(promise: nil) }
        } else if keep {
            lease.channel.closeFuture.whenComplete { _ in
                self.state.withLockedValue { state in
                    state.idle[lease.endpoint].removeAll { $0 === lease.channel }
                }
            }
        } else {
            lease.channel.close(promise: nil)
        }
    }

    func recordOutcome(_ endpoint: Int, success: Bool) {
        let event = state.withLockedValue { $0.balancer.recordOutcome(endpoint, success: success, now: .now) }
        if let event { report(event) }
    }

    func recordProbe(_ endpoint: Int, success: Bool) {
        let event = state.withLockedValue { $0.balancer.recordProbe(endpoint, success: success) }
        if let event { report(event) }
        let returned = state.withLockedValue { $0.balancer.returnEjected(now: .now) }
        for event in returned { report(event) }
    }

    private func report(_ event: LoadBalancer.Event) {
        switch event {
        case .becameUnhealthy(let index), .ejected(let index):
            metrics?.endpointHealthy[index].set(Int64(0))
            logger.warning("endpoint out of rotation", metadata: ["endpoint": "\(config.endpoints[index])", "event": "\(event)"])
        case .becameHealthy(let index), .returned(let index):
            let available = state.withLockedValue { $0.balancer.isAvailable(index, now: .now) }
            metrics?.endpointHealthy[index].set(Int64(available ? 1 : 0))
            logger.notice("endpoint back in rotation", metadata: ["endpoint": "\(config.endpoints[index])", "event": "\(event)"])
        }
    }

    /// Ends a lease that was acquired but never used (its request went away meanwhile).
    func releaseUnused(_ lease: Lease) {
        // A pooled HTTP/1.1 connection can serve the next request; a stream, once opened, serves nobody else.
        release(lease, reusable: config.proto == .http1 && lease.channel.isActive, success: true)
    }

    /// Closes every pooled HTTP/1.1 connection and every HTTP/2 connection.
    func closeIdle() {
        let (channels, http2) = state.withLockedValue { state -> ([Channel], [HTTP2UpstreamConnection]) in
            let all = state.idle.flatMap { $0 }
            state.idle = Array(repeating: [], count: state.idle.count)
            return (all, Array(state.http2Connections.values))
        }
        for channel in channels { channel.close(promise: nil) }
        for connection in http2 { connection.close() }
    }
}
