import NIOCore

/// HTTP/2 toward the endpoints of a `protocol: http2` cluster: streams placed by `HTTP2ConnectionPool`, on
/// connections opened as needed and replaced when they die.
extension Cluster: HTTP2UpstreamEvents {
    func attemptHTTP2(on loop: EventLoop, excluding: Set<Int>, attemptsLeft: Int) -> EventLoopFuture<Lease> {
        enum Choice {
            case stream(HTTP2UpstreamConnection, isNew: Bool)
            case none
            case overloaded
        }
        let now = ContinuousClock.now
        let choice = state.withLockedValue { state -> Choice in
            guard let endpoint = state.balancer.pick(now: now, excluding: excluding) else { return .none }
            let mayOpen = state.openConnections < config.maxConnections
            switch state.http2.reserveStream(endpoint: endpoint, loop: ObjectIdentifier(loop), mayOpen: mayOpen) {
            case .existing(let id):
                state.balancer.requestStarted(endpoint)
                return .stream(state.http2Connections[id]!, isNew: false)
            case .open(let id):
                state.openConnections += 1
                state.balancer.requestStarted(endpoint)
                let connection = HTTP2UpstreamConnection(id: id, endpoint: endpoint, eventLoop: loop)
                state.http2Connections[id] = connection
                return .stream(connection, isNew: true)
            case .full:
                return .overloaded
            }
        }
        switch choice {
        case .none:
            return loop.makeFailedFuture(excluding.isEmpty ? AcquireError.noEndpoint : AcquireError.connectFailed)
        case .overloaded:
            metrics?.overflow.increment()
            return loop.makeFailedFuture(AcquireError.overloaded)
        case .stream(let connection, let isNew):
            if isNew {
                connection.connect(to: addresses[connection.endpoint], timeout: TimeAmount(config.connectTimeout), events: self)
            }
            return connection.openStream().map { stream in
                // The reservation ends with the stream, however it ends (clean close, reset, connection lost).
                stream.closeFuture.whenComplete { _ in self.http2StreamEnded(on: connection) }
                return Lease(channel: stream, endpoint: connection.endpoint)
            }.flatMapError { error in
                self.http2StreamEnded(on: connection)
                self.state.withLockedValue { $0.balancer.requestFinished(connection.endpoint) }
                self.logger.debug("upstream stream failed", metadata: ["endpoint": "\(self.config.endpoints[connection.endpoint])", "error": "\(error)"])
                guard attemptsLeft > 0 else { return loop.makeFailedFuture(AcquireError.connectFailed) }
                self.metrics?.retries.increment()
                return self.attemptHTTP2(on: loop, excluding: excluding.union([connection.endpoint]), attemptsLeft: attemptsLeft - 1)
            }
        }
    }

    private func http2StreamEnded(on connection: HTTP2UpstreamConnection) {
        if state.withLockedValue({ $0.http2.streamClosed(connection.id) }) {
            connection.close()
        }
    }

    func http2SettingsReceived(_ connection: HTTP2UpstreamConnection, maxConcurrentStreams: Int) {
        state.withLockedValue { $0.http2.settingsReceived(connection.id, maxConcurrentStreams: maxConcurrentStreams) }
    }

    func http2GoAwayReceived(_ connection: HTTP2UpstreamConnection) {
        if state.withLockedValue({ $0.http2.goAwayReceived(connection.id) }) {
            connection.close()
        }
    }

    func http2ConnectionClosed(_ connection: HTTP2UpstreamConnection, neverReady: Bool) {
        state.withLockedValue { state in
            state.http2.connectionClosed(connection.id)
            state.http2Connections[connection.id] = nil
            state.openConnections -= 1
        }
        guard neverReady else { return }
        metrics?.connectFailures.increment()
        recordOutcome(connection.endpoint, success: false)
        logger.debug("upstream HTTP/2 connection failed", metadata: ["endpoint": "\(config.endpoints[connection.endpoint])"])
    }
}
