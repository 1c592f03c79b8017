/// The whole proxy configuration: listeners that route to clusters, plus the admin endpoint.
public struct MeshConfig: Sendable, Equatable {
    /// Where the admin endpoint listens; `nil` turns it off.
    public var admin: SocketAddressSpec?
    public var listeners: [ListenerConfig]
    public var clusters: [ClusterConfig]

    public init(admin: SocketAddressSpec?, listeners: [ListenerConfig], clusters: [ClusterConfig]) {
        self.admin = admin
        self.listeners = listeners
        self.clusters = clusters
    }

    /// Looks up a cluster by name.
    public func cluster(named name: String) -> ClusterConfig? {
        clusters.first { $0.name == name }
    }
}

/// A host and port as written in the config (`127.0.0.1:8080`); port 0 asks the OS for one.
public struct SocketAddressSpec: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// The wire protocol a listener speaks.
public enum ListenerProtocol: String, Sendable, Equatable, CaseIterable {
    case tcp
    case http
}

/// One listening socket and what it does with the connections it accepts.
public struct ListenerConfig: Sendable, Equatable {
    public var name: String
    public var address: SocketAddressSpec
    public var proto: ListenerProtocol
    /// For `tcp` listeners: the cluster every connection goes to.
    public var cluster: String?
    /// For `http` listeners: routes tried in order; the first match wins.
    public var routes: [RouteConfig]
    /// A connection with no traffic either way for this long is closed.
    public var idleTimeout: Duration
    /// From a request's head to the end of its response; past it the client gets a 504.
    public var requestTimeout: Duration
    public var limits: HTTPLimits

    public init(
        name: String, address: SocketAddressSpec, proto: ListenerProtocol, cluster: String? = nil,
        routes: [RouteConfig] = [], idleTimeout: Duration = .seconds(60), requestTimeout: Duration = .seconds(30),
        limits: HTTPLimits = HTTPLimits()
    ) {
        self.name = name
        self.address = address
        self.proto = proto
        self.cluster = cluster
        self.routes = routes
        self.idleTimeout = idleTimeout
        self.requestTimeout = requestTimeout
        self.limits = limits
    }
}

/// Request size limits of an HTTP listener; breaking one earns the matching 4xx.
public struct HTTPLimits: Sendable, Equatable {
    /// Request line plus all header lines (431 past it; 414 when the URI alone is too long).
    public var maxHeaderBytes: Int = 64 * 1024
    /// Number of header fields (431 past it).
    public var maxHeaderCount: Int = 100
    /// Request body (413 past it).
    public var maxBodyBytes: Int = 100 * 1024 * 1024
    /// Request target length (414 past it).
    public var maxURIBytes: Int = 8 * 1024

    public init() {}
}

/// A rule that sends matching HTTP requests to a cluster.
public struct RouteConfig: Sendable, Equatable {
    /// Host to match, without port; `nil` matches any host.
    public var host: String?
    public var pathPrefix: String
    /// Header name (lowercased) to exact value, all of which must match.
    public var headers: [String: String]
    public var cluster: String

    public init(host: String? = nil, pathPrefix: String = "/", headers: [String: String] = [:], cluster: String) {
        self.host = host
        self.pathPrefix = pathPrefix
        self.headers = headers
        self.cluster = cluster
    }
}

/// How a cluster picks an endpoint for each request or connection.
public enum LoadBalancingPolicy: String, Sendable, Equatable, CaseIterable {
    case roundRobin = "round_robin"
    case leastRequest = "least_request"
    case random
}

/// The HTTP version the proxy speaks to a cluster's endpoints.
public enum UpstreamProtocol: String, Sendable, Equatable, CaseIterable {
    /// HTTP/1.1: a pool of keep-alive connections per endpoint, one request at a time on each.
    case http1
    /// HTTP/2 with prior knowledge (h2c): a few multiplexed connections per endpoint, a stream per request.
    case http2
}

/// A set of interchangeable upstream endpoints.
public struct ClusterConfig: Sendable, Equatable {
    public var name: String
    public var endpoints: [SocketAddressSpec]
    /// How HTTP requests reach the endpoints (TCP listeners relay bytes whatever this says).
    public var proto: UpstreamProtocol
    public var loadBalancing: LoadBalancingPolicy
    public var connectTimeout: Duration
    /// Upstream connections open at once (pooled or busy); past it new requests get a 503.
    public var maxConnections: Int
    /// Requests in flight to this cluster at once; past it new requests get a 503.
    public var maxPendingRequests: Int
    /// Extra attempts for an idempotent request whose connection could not be made.
    public var retries: Int
    /// Idle pooled HTTP/1.1 connections kept per endpoint and event loop.
    public var maxIdleConnectionsPerEndpoint: Int
    public var healthCheck: HealthCheckConfig?
    public var outlierDetection: OutlierDetectionConfig?

    public init(
        name: String, endpoints: [SocketAddressSpec], proto: UpstreamProtocol = .http1, loadBalancing: LoadBalancingPolicy = .roundRobin,
        connectTimeout: Duration = .seconds(2), maxConnections: Int = 10_000, maxPendingRequests: Int = 10_000,
        retries: Int = 1, maxIdleConnectionsPerEndpoint: Int = 64, healthCheck: HealthCheckConfig? = nil,
        outlierDetection: OutlierDetectionConfig? = nil
    ) {
        self.name = name
        self.endpoints = endpoints
        self.proto = proto
        self.loadBalancing = loadBalancing
        self.connectTimeout = connectTimeout
        self.maxConnections = maxConnections
        self.maxPendingRequests = maxPendingRequests
        self.retries = retries
        self.maxIdleConnectionsPerEndpoint = maxIdleConnectionsPerEndpoint
        self.healthCheck = healthCheck
        self.outlierDetection = outlierDetection
    }
}

/// An active probe of every endpoint of a cluster.
public struct HealthCheckConfig: Sendable, Equatable {
    /// What a probe does.
    public enum Kind: String, Sendable, Equatable, CaseIterable {
        /// Connects and closes.
        case tcp
        /// Sends `GET path` and expects a 2xx.
        case http
    }

    public var kind: Kind
    public var path: String
    public var interval: Duration
    public var timeout: Duration
    /// Failed probes in a row that mark an endpoint unhealthy.
    public var unhealthyThreshold: Int
    /// Passed probes in a row that mark it healthy again.
    public var healthyThreshold: Int

    public init(
        kind: Kind, path: String = "/", interval: Duration = .seconds(5), timeout: Duration = .seconds(1),
        unhealthyThreshold: Int = 2, healthyThreshold: Int = 1
    ) {
        self.kind = kind
        self.path = path
        self.interval = interval
        self.timeout = timeout
        self.unhealthyThreshold = unhealthyThreshold
        self.healthyThreshold = healthyThreshold
    }
}

/// Passive health: endpoints that keep failing real traffic are ejected for a while.
public struct OutlierDetectionConfig: Sendable, Equatable {
    public var consecutiveFailures: Int
    public var ejectionTime: Duration
    /// At most this share of a cluster's endpoints is ejected at once, so a cluster-wide outage still gets traffic.
    public var maxEjectionPercent: Int

    public init(consecutiveFailures: Int = 5, ejectionTime: Duration = .seconds(30), maxEjectionPercent: Int = 50) {
        self.consecutiveFailures = consecutiveFailures
        self.ejectionTime = ejectionTime
        self.maxEjectionPercent = maxEjectionPercent
    }
}
