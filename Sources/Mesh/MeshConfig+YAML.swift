import Yams

/// A configuration problem, located at the line and field that caused it.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// 1-based line in the YAML file, or 0 when the problem has no single place.
    public var line: Int
    /// The dotted path of the field, like `clusters[1].endpoints[0]`.
    public var field: String
    public var message: String

    public init(line: Int, field: String, message: String) {
        self.line = line
        self.field = field
        self.message = message
    }

    public var description: String { "line \(line): \(field): \(message)" }
}

/// Every problem found in one config file; validation never stops at the first.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [ConfigError]

    public var description: String { errors.map(\.description).joined(separator: "\n") }
}

extension MeshConfig {
    /// Parses and validates a YAML config, reporting every problem with its line and field.
    public static func parse(yaml: String) throws(ConfigErrors) -> MeshConfig {
        var reader = ConfigReader()
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: yaml) else {
                throw ConfigErrors(errors: [ConfigError(line: 1, field: "", message: "the file is empty")])
            }
            root = node
        } catch let errors as ConfigErrors {
            throw errors
        } catch let error as YamlError {
            throw ConfigErrors(errors: [ConfigError(line: error.line, field: "", message: "invalid YAML: \(error)")])
        } catch {
            throw ConfigErrors(errors: [ConfigError(line: 0, field: "", message: "invalid YAML: \(error)")])
        }
        let config = reader.readConfig(root)
        if reader.errors.isEmpty, let config {
            return config
        }
        throw ConfigErrors(errors: reader.errors)
    }
}

extension YamlError {
    fileprivate var line: Int {
        switch self {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return mark.line
        default:
            return 0
        }
    }
}

/// Walks the YAML node tree, collecting errors instead of stopping at the first.
private struct ConfigReader {
    var errors: [ConfigError] = []

    mutating func fail(_ node: Node?, _ field: String, _ message: String) {
        errors.append(ConfigError(line: node?.mark?.line ?? 0, field: field, message: message))
    }

    /// Checks that `node` is a mapping with only `allowed` keys.
    mutating func mapping(_ node: Node, _ field: String, allowed: Set<String>) -> Node.Mapping? {
        guard let mapping = node.mapping else {
            fail(node, field, "expected a mapping")
            return nil
        }
        for (key, _) in mapping {
            guard let name = key.string, allowed.contains(name) else {
                let known = allowed.sorted().joined(separator: ", ")
                fail(key, field.isEmpty ? "\(key.string ?? "?")" : "\(field).\(key.string ?? "?")", "unknown field (known: \(known))")
                continue
            }
        }
        return mapping
    }

    mutating func string(_ mapping: Node.Mapping, _ key: String, _ field: String, required: Bool = false) -> String? {
        guard let node = mapping[key] else {
            if required { fail(mapping.mark.map { Node.scalar(.init("", .implicit, .plain, $0)) }, path(field, key), "is required") }
            return nil
        }
        guard let scalar = node.scalar else {
            fail(node, path(field, key), "expected a string")
            return nil
        }
        return scalar.string
    }

    mutating func int(_ mapping: Node.Mapping, _ key: String, _ field: String, default value: Int, min: Int = 0) -> Int {
        guard let node = mapping[key] else { return value }
        guard let number = node.int else {
            fail(node, path(field, key), "expected an integer")
            return value
        }
        if number < min {
            fail(node, path(field, key), "must be at least \(min)")
        }
        return number
    }

    mutating func duration(_ mapping: Node.Mapping, _ key: String, _ field: String, default value: Duration) -> Duration {
        guard let node = mapping[key] else { return value }
        guard let text = node.scalar?.string, let parsed = parseDuration(text) else {
            fail(node, path(field, key), "expected a duration like 500ms, 2s or 1m")
            return value
        }
        return parsed
    }

    mutating func address(_ node: Node, _ field: String) -> SocketAddressSpec? {
        guard let text = node.scalar?.string else {
            fail(node, field, "expected an address like 127.0.0.1:8080")
            return nil
        }
        guard let spec = parseAddress(text) else {
            fail(node, field, "'\(text)' is not host:port with a port in 0...65535")
            return nil
        }
        return spec
    }

    func path(_ parent: String, _ key: String) -> String { parent.isEmpty ? key : "\(parent).\(key)" }

    mutating func readConfig(_ root: Node) -> MeshConfig? {
        guard let top = mapping(root, "", allowed: ["admin", "listeners", "clusters"]) else { return nil }
        var admin: SocketAddressSpec?
        if let node = top["admin"] {
            if let adminMap = mapping(node, "admin", allowed: ["address"]) {
                if let addressNode = adminMap["address"] {
                    admin = address(addressNode, "admin.address")
                } else {
                    fail(node, "admin.address", "is required")
                }
            }
        }
        var clusters: [ClusterConfig] = []
        var clusterLines: [String: Int] = [:]
        if let node = top["clusters"] {
            if let items = node.sequence {
                for (index, item) in items.enumerated() {
                    if let cluster = readCluster(item, "clusters[\(index)]") {
                        if clusterLines[cluster.name] != nil {
                            fail(item, "clusters[\(index)].name", "duplicate cluster name '\(cluster.name)'")
                        }
                        clusterLines[cluster.name] = item.mark?.line ?? 0
                        clusters.append(cluster)
                    }
                }
            } else {
                fail(node, "clusters", "expected a list")
            }
        }
        var listeners: [ListenerConfig] = []
        var listenerNames: Set<String> = []
        if let node = top["listeners"] {
            if let items = node.sequence {
                if items.isEmpty { fail(node, "listeners", "needs at least one listener") }
                for (index, item) in items.enumerated() {
                    let field = "listeners[\(index)]"
                    checkClusterReferences(item, field, known: clusterLines)
                    guard let listener = readListener(item, field) else { continue }
                    if !listenerNames.insert(listener.name).inserted {
                        fail(item, "\(field).name", "duplicate listener name '\(listener.name)'")
                    }
                    if listener.name.hasPrefix("@") {
                        // The hot upgrade hands the admin socket over as "@admin"; names with "@" are reserved.
                        fail(item, "\(field).name", "listener names may not start with '@'")
                    }
                    listeners.append(listener)
                }
            } else {
                fail(node, "listeners", "expected a list")
            }
        } else {
            fail(root, "listeners", "is required")
        }
        return MeshConfig(admin: admin, listeners: listeners, clusters: clusters)
    }

    /// Checks that every cluster a listener names exists, even when other fields of the listener are broken.
    mutating func checkClusterReferences(_ node: Node, _ field: String, known: [String: Int]) {
        guard let map = node.mapping else { return }
        if let clusterNode = map["cluster"], let name = clusterNode.string, known[name] == nil {
            fail(clusterNode, "\(field).cluster", "no cluster named '\(name)'")
        }
        for (index, route) in (map["routes"]?.sequence ?? []).enumerated() {
            if let clusterNode = route.mapping?["cluster"], let name = clusterNode.string, known[name] == nil {
                fail(clusterNode, "\(field).routes[\(index)].cluster", "no cluster named '\(name)'")
            }
        }
    }

    mutating func readListener(_ node: Node, _ field: String) -> ListenerConfig? {
        let allowed: Set<String> = [
            "name", "address", "protocol", "cluster", "routes", "idle_timeout", "request_timeout", "limits",
        ]
        guard let map = mapping(node, field, allowed: allowed) else { return nil }
        let name = string(map, "name", field, required: true)
        var addressSpec: SocketAddressSpec?
        if let addressNode = map["address"] {
            addressSpec = address(addressNode, path(field, "address"))
        } else {
            fail(node, path(field, "address"), "is required")
        }
        var proto: ListenerProtocol? = .http
        if let text = string(map, "protocol", field) {
            proto = ListenerProtocol(rawValue: text)
            if proto == nil { fail(map["protocol"], path(field, "protocol"), "must be one of tcp, http") }
        }
        let cluster = string(map, "cluster", field)
        var routes: [RouteConfig] = []
        if let routesNode = map["routes"] {
            if let items = routesNode.sequence {
                for (index, item) in items.enumerated() {
                    if let route = readRoute(item, "\(field).routes[\(index)]") { routes.append(route) }
                }
            } else {
                fail(routesNode, path(field, "routes"), "expected a list")
            }
        }
        switch proto {
        case .tcp:
            if cluster == nil { fail(node, path(field, "cluster"), "a tcp listener needs a cluster") }
            if map["routes"] != nil { fail(map["routes"], path(field, "routes"), "a tcp listener has no routes; use cluster") }
        case .http:
            if cluster != nil { fail(map["cluster"], path(field, "cluster"), "an http listener routes with routes, not cluster") }
            if routes.isEmpty && map["routes"] == nil { fail(node, path(field, "routes"), "an http listener needs routes") }
        case nil:
            break
        }
        var limits = HTTPLimits()
        if let limitsNode = map["limits"] {
            let limitsField = path(field, "limits")
            let names: Set<String> = ["max_header_bytes", "max_header_count", "max_body_bytes", "max_uri_bytes"]
            if let limitsMap = mapping(limitsNode, limitsField, allowed: names) {
                limits.maxHeaderBytes = int(limitsMap, "max_header_bytes", limitsField, default: limits.maxHeaderBytes, min: 256)
                limits.maxHeaderCount = int(limitsMap, "max_header_count", limitsField, default: limits.maxHeaderCount, min: 1)
                limits.maxBodyBytes = int(limitsMap, "max_body_bytes", limitsField, default: limits.maxBodyBytes, min: 0)
                limits.maxURIBytes = int(limitsMap, "max_uri_bytes", limitsField, default: limits.maxURIBytes, min: 1)
            }
        }
        let idle = duration(map, "idle_timeout", field, default: .seconds(60))
        let request = duration(map, "request_timeout", field, default: .seconds(30))
        guard let name, let addressSpec, let proto else { return nil }
        return ListenerConfig(
            name: name, address: addressSpec, proto: proto, cluster: cluster, routes: routes,
            idleTimeout: idle, requestTimeout: request, limits: limits
        )
    }

    mutating func readRoute(_ node: Node, _ field: String) -> RouteConfig? {
        guard let map = mapping(node, field, allowed: ["match", "cluster"]) else { return nil }
        let cluster = string(map, "cluster", field, required: true)
        var route = RouteConfig(cluster: cluster ?? "")
        if let matchNode = map["match"] {
            let matchField = path(field, "match")
            if let match = mapping(matchNode, matchField, allowed: ["host", "path_prefix", "headers"]) {
                route.host = string(match, "host", matchField)?.lowercased()
                if let prefix = string(match, "path_prefix", matchField) {
                    if prefix.hasPrefix("/") {
                        route.pathPrefix = prefix
                    } else {
                        fail(match["path_prefix"], path(matchField, "path_prefix"), "must start with /")
                    }
                }
                if let headersNode = match["headers"] {
                    if let headers = headersNode.mapping {
                        for (key, value) in headers {
                            guard let name = key.string, let text = value.scalar?.string else {
                                fail(value, path(matchField, "headers"), "expected header: value pairs")
                                continue
                            }
                            route.headers[name.lowercased()] = text
                        }
                    } else {
                        fail(headersNode, path(matchField, "headers"), "expected a mapping")
                    }
                }
            }
        }
        return cluster == nil ? nil : route
    }

    mutating func readCluster(_ node: Node, _ field: String) -> ClusterConfig? {
        let allowed: Set<String> = [
            "name", "endpoints", "protocol", "load_balancing", "connect_timeout", "max_connections", "max_pending_requests",
            "retries", "max_idle_connections_per_endpoint", "health_check", "outlier_detection",
        ]
        guard let map = mapping(node, field, allowed: allowed) else { return nil }
        let name = string(map, "name", field, required: true)
        var endpoints: [SocketAddressSpec] = []
        if let endpointsNode = map["endpoints"] {
            if let items = endpointsNode.sequence, !items.isEmpty {
                for (index, item) in items.enumerated() {
                    if let spec = address(item, "\(field).endpoints[\(index)]") {
                        if spec.port == 0 { fail(item, "\(field).endpoints[\(index)]", "an endpoint needs a real port") }
                        endpoints.append(spec)
                    }
                }
            } else {
                fail(endpointsNode, path(field, "endpoints"), "expected a non-empty list of host:port")
            }
        } else {
            fail(node, path(field, "endpoints"), "is required")
        }
        var cluster = ClusterConfig(name: name ?? "", endpoints: endpoints)
        if let text = string(map, "protocol", field) {
            if let proto = UpstreamProtocol(rawValue: text) {
                cluster.proto = proto
            } else {
                let names = UpstreamProtocol.allCases.map(\.rawValue).joined(separator: ", ")
                fail(map["protocol"], path(field, "protocol"), "must be one of \(names)")
            }
        }
        if let text = string(map, "load_balancing", field) {
            if let policy = LoadBalancingPolicy(rawValue: text) {
                cluster.loadBalancing = policy
            } else {
                let names = LoadBalancingPolicy.allCases.map(\.rawValue).joined(separator: ", ")
                fail(map["load_balancing"], path(field, "load_balancing"), "must be one of \(names)")
            }
        }
        cluster.connectTimeout = duration(map, "connect_timeout", field, default: cluster.connectTimeout)
        cluster.maxConnections = int(map, "max_connections", field, default: cluster.maxConnections, min: 1)
        cluster.maxPendingRequests = int(map, "max_pending_requests", field, default: cluster.maxPendingRequests, min: 1)
        cluster.retries = int(map, "retries", field, default: cluster.retries, min: 0)
        cluster.maxIdleConnectionsPerEndpoint = int(
            map, "max_idle_connections_per_endpoint", field, default: cluster.maxIdleConnectionsPerEndpoint, min: 0)
        if let healthNode = map["health_check"] {
            cluster.healthCheck = readHealthCheck(healthNode, path(field, "health_check"))
        }
        if let outlierNode = map["outlier_detection"] {
            let outlierField = path(field, "outlier_detection")
            let names: Set<String> = ["consecutive_failures", "ejection_time", "max_ejection_percent"]
            if let outlier = mapping(outlierNode, outlierField, allowed: names) {
                var config = OutlierDetectionConfig()
                config.consecutiveFailures = int(outlier, "consecutive_failures", outlierField, default: config.consecutiveFailures, min: 1)
                config.ejectionTime = duration(outlier, "ejection_time", outlierField, default: config.ejectionTime)
                config.maxEjectionPercent = int(outlier, "max_ejection_percent", outlierField, default: config.maxEjectionPercent, min: 0)
                if config.maxEjectionPercent > 100 {
                    fail(outlier["max_ejection_percent"], path(outlierField, "max_ejection_percent"), "must be at most 100")
                }
                cluster.outlierDetection = config
            }
        }
        return name == nil ? nil : cluster
    }

    mutating func readHealthCheck(_ node: Node, _ field: String) -> HealthCheckConfig? {
        let allowed: Set<String> = ["type", "path", "interval", "timeout", "unhealthy_threshold", "healthy_threshold"]
        guard let map = mapping(node, field, allowed: allowed) else { return nil }
        var kind = HealthCheckConfig.Kind.tcp
        if let text = string(map, "type", field, required: true) {
            if let parsed = HealthCheckConfig.Kind(rawValue: text) {
                kind = parsed
            } else {
                fail(map["type"], path(field, "type"), "must be one of tcp, http")
            }
        }
        var check = HealthCheckConfig(kind: kind)
        if let text = string(map, "path", field) {
            if text.hasPrefix("/") { check.path = text } else { fail(map["path"], path(field, "path"), "must start with /") }
        }
        check.interval = duration(map, "interval", field, default: check.interval)
        check.timeout = duration(map, "timeout", field, default: check.timeout)
        check.unhealthyThreshold = int(map, "unhealthy_threshold", field, default: check.unhealthyThreshold, min: 1)
        check.healthyThreshold = int(map, "healthy_threshold", field, default: check.healthyThreshold, min: 1)
        return check
    }
}

/// Parses `250ms`, `2s`, `1m`, `1h` (and `1.5s`) into a duration.
func parseDuration(_ text: String) -> Duration? {
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
    for (suffix, scale) in units where text.hasSuffix(suffix) {
        guard let value = Double(text.dropLast(suffix.count)), value >= 0 else { return nil }
        return .milliseconds(Int64((value * scale * 1000).rounded()))
    }
    return nil
}

/// Parses `host:port` or `[v6]:port`.
func parseAddress(_ text: String) -> SocketAddressSpec? {
    let host: Substring
    let portText: Substring
    if text.hasPrefix("[") {
        guard let close = text.firstIndex(of: "]") else { return nil }
        host = text[text.index(after: text.startIndex)..<close]
        let rest = text[text.index(after: close)...]
        guard rest.hasPrefix(":") else { return nil }
        portText = rest.dropFirst()
    } else {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        host = text[..<colon]
        portText = text[text.index(after: colon)...]
    }
    guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else { return nil }
    return SocketAddressSpec(host: String(host), port: port)
}
