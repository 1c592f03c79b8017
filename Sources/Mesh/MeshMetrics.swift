import Prometheus

/// The proxy's Prometheus metrics, made once per listener and cluster so the request path only increments.
public final class MeshMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry

    /// Per-listener instruments.
    struct ListenerInstruments: Sendable {
        /// Responses by status class: index 1...5 for 1xx...5xx.
        let responses: [Counter]
        let latency: DurationHistogram
        let activeConnections: Gauge
        let connectionsTotal: Counter
    }

    /// Per-cluster instruments.
    struct ClusterInstruments: Sendable {
        let upstreamRequests: Counter
        let connectFailures: Counter
        let overflow: Counter
        let retries: Counter
        /// 1 when the endpoint takes traffic, 0 when unhealthy or ejected; one gauge per endpoint.
        let endpointHealthy: [Gauge]
    }

    let listeners: [String: ListenerInstruments]
    let clusters: [String: ClusterInstruments]

    public init(config: MeshConfig, registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        let buckets: [Duration] = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
            .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
        ]
        var listeners: [String: ListenerInstruments] = [:]
        for listener in config.listeners {
            let labels = [("listener", listener.name)]
            listeners[listener.name] = ListenerInstruments(
                responses: (0...5).map { digit in
                    registry.makeCounter(
                        descriptor: Self.descriptor("mesh_http_responses", "total", "HTTP responses sent to clients, by status class"), labels: labels + [("code_class", "\(digit)xx")])
                },
                latency: registry.makeDurationHistogram(
                        descriptor: Self.descriptor("mesh_http_request_duration", "seconds", "From request head to response end"), labels: labels, buckets: buckets),
                activeConnections: registry.makeGauge(
                        descriptor: Self.descriptor("mesh_active", "connections", "Client connections open now"), labels: labels),
                connectionsTotal: registry.makeCounter(
                        descriptor: Self.descriptor("mesh_connections", "total", "Client connections accepted"), labels: labels)
            )
        }
        var clusters: [String: ClusterInstruments] = [:]
        for cluster in config.clusters {
            let labels = [("cluster", cluster.name)]
            clusters[cluster.name] = ClusterInstruments(
                upstreamRequests: registry.makeCounter(
                        descriptor: Self.descriptor("mesh_upstream_requests", "total", "Requests and tunnels sent upstream"), labels: labels),
                connectFailures: registry.makeCounter(
                        descriptor: Self.descriptor("mesh_upstream_connect_failures", "total", "Failed upstream connects"), labels: labels),
                overflow: registry.makeCounter(
                        descriptor: Self.descriptor("mesh_upstream_overflow", "total", "Requests refused by cluster limits"), labels: labels),
                retries: registry.makeCounter(
                        descriptor: Self.descriptor("mesh_upstream_retries", "total", "Retried upstream connects"), labels: labels),
                endpointHealthy: cluster.endpoints.map { endpoint in
                    let gauge = registry.makeGauge(
                        descriptor: Self.descriptor("mesh_upstream_endpoint", "healthy", "1 if the endpoint receives traffic"), labels: labels + [("endpoint", endpoint.description)])
                    gauge.set(Int64(1))
                    return gauge
                }
            )
        }
        self.listeners = listeners
        self.clusters = clusters
    }

    /// Counts one handover (either side): `mesh_handovers_total{role,outcome}`, connections moved, bytes that
    /// moved with them, and the last handover's duration.
    public func recordHandover(role: String, outcome: String, connections: Int, bytes: Int, duration: Duration) {
        let labels = [("role", role)]
        registry.makeCounter(descriptor: Self.descriptor("mesh_handovers", "total", "Hot-upgrade handovers, by role and outcome"), labels: labels + [("outcome", outcome)])
            .increment()
        registry.makeCounter(descriptor: Self.descriptor("mesh_handover_connections_moved", "total", "Connections moved by hot upgrades"), labels: labels)
            .increment(by: Int64(connections))
        registry.makeCounter(descriptor: Self.descriptor("mesh_handover_bytes_forwarded", "total", "Pre-read and owed bytes moved with connections"), labels: labels)
            .increment(by: Int64(bytes))
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        registry.makeGauge(descriptor: Self.descriptor("mesh_handover_last_duration", "seconds", "Duration of the last handover"), labels: labels)
            .set(seconds)
    }

    private static func descriptor(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: unit, helpText: help)
    }

    /// The text exposition format served at `/metrics`.
    public func render() -> [UInt8] {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }
}
