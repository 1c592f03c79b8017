extension MeshConfig {
    /// The effective configuration, defaults filled in, in the same YAML format the file uses.
    public var yamlDescription: String {
        var out: [String] = []
        if let admin { out += ["admin:", "  address: \(quoted(admin.description))"] }
        out.append("listeners:")
        for listener in listeners {
            out += [
                "  - name: \(quoted(listener.name))", "    address: \(quoted(listener.address.description))", "    protocol: \(listener.proto.rawValue)",
                "    idle_timeout: \(render(listener.idleTimeout))", "    request_timeout: \(render(listener.requestTimeout))",
            ]
            if let cluster = listener.cluster { out.append("    cluster: \(quoted(cluster))") }
            if listener.proto == .http {
                out += [
                    "    limits:", "      max_header_bytes: \(listener.limits.maxHeaderBytes)",
                    "      max_header_count: \(listener.limits.maxHeaderCount)",
                    "      max_body_bytes: \(listener.limits.maxBodyBytes)", "      max_uri_bytes: \(listener.limits.maxURIBytes)",
                    "    routes:",
                ]
                for route in listener.routes {
                    out += ["      - cluster: \(quoted(route.cluster))", "        match:", "          path_prefix: \(quoted(route.pathPrefix))"]
                    if let host = route.host { out.append("          host: \(quoted(host))") }
                    if !route.headers.isEmpty {
                        out.append("          headers:")
                        for name in route.headers.keys.sorted() { out.append("            \(name): \(quoted(route.headers[name]!))") }
                    }
                }
            }
        }
        out.append("clusters:")
        for cluster in clusters {
            out += [
                "  - name: \(quoted(cluster.name))", "    endpoints: [\(cluster.endpoints.map { quoted($0.description) }.joined(separator: ", "))]",
                "    protocol: \(cluster.proto.rawValue)",
                "    load_balancing: \(cluster.loadBalancing.rawValue)", "    connect_timeout: \(render(cluster.connectTimeout))",
                "    max_connections: \(cluster.maxConnections)", "    max_pending_requests: \(cluster.maxPendingRequests)",
                "    retries: \(cluster.retries)", "    max_idle_connections_per_endpoint: \(cluster.maxIdleConnectionsPerEndpoint)",
            ]
            if let check = cluster.healthCheck {
                out += [
                    "    health_check:", "      type: \(check.kind.rawValue)", "      path: \(quoted(check.path))",
                    "      interval: \(render(check.interval))", "      timeout: \(render(check.timeout))",
                    "      unhealthy_threshold: \(check.unhealthyThreshold)", "      healthy_threshold: \(check.healthyThreshold)",
                ]
            }
            if let outlier = cluster.outlierDetection {
                out += [
                    "    outlier_detection:", "      consecutive_failures: \(outlier.consecutiveFailures)",
                    "      ejection_time: \(render(outlier.ejectionTime))", "      max_ejection_percent: \(outlier.maxEjectionPercent)",
                ]
            }
        }
        return out.joined(separator: "\n") + "\n"
    }

    private func render(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let milliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000)s" : "\(milliseconds)ms"
    }

    private func quoted(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}
