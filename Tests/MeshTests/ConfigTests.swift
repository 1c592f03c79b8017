import Mesh
import Testing

@Suite struct ConfigTests {
    let valid = """
        admin:
          address: 127.0.0.1:9901
        listeners:
          - name: web
            address: 0.0.0.0:8080
            protocol: http
            idle_timeout: 30s
            request_timeout: 1500ms
            limits: { max_body_bytes: 1024 }
            routes:
              - match: { host: API.example.com, path_prefix: /v1, headers: { X-Env: prod } }
                cluster: api
              - cluster: web
          - name: db
            address: "[::1]:5432"
            protocol: tcp
            cluster: api
        clusters:
          - name: api
            endpoints: [10.0.0.1:80, 10.0.0.2:80]
            load_balancing: least_request
            health_check: { type: http, path: /healthz, interval: 2s }
            outlier_detection: { consecutive_failures: 3, ejection_time: 10s }
          - name: web
            endpoints: [localhost:8000]
            protocol: http2
        """

    @Test func parsesEveryField() throws {
        let config = try MeshConfig.parse(yaml: valid)
        #expect(config.admin == SocketAddressSpec(host: "127.0.0.1", port: 9901))
        #expect(config.listeners.count == 2)
        let web = config.listeners[0]
        #expect(web.idleTimeout == .seconds(30))
        #expect(web.requestTimeout == .milliseconds(1500))
        #expect(web.limits.maxBodyBytes == 1024)
        #expect(web.routes[0] == RouteConfig(host: "api.example.com", pathPrefix: "/v1", headers: ["x-env": "prod"], cluster: "api"))
        #expect(web.routes[1] == RouteConfig(cluster: "web"))
        #expect(config.listeners[1].address == SocketAddressSpec(host: "::1", port: 5432))
        #expect(config.listeners[1].proto == .tcp)
        let api = try #require(config.cluster(named: "api"))
        #expect(api.loadBalancing == .leastRequest)
        #expect(api.healthCheck == HealthCheckConfig(kind: .http, path: "/healthz", interval: .seconds(2)))
        #expect(api.outlierDetection?.consecutiveFailures == 3)
        #expect(api.proto == .http1, "HTTP/1.1 upstreams by default")
        #expect(config.cluster(named: "web")?.proto == .http2)
    }

    @Test func effectiveConfigRoundTrips() throws {
        let config = try MeshConfig.parse(yaml: valid)
        #expect(try MeshConfig.parse(yaml: config.yamlDescription) == config)
    }

    /// Each broken config, with the (line, field) every error must name.
    @Test(arguments: [
        ("listeners:\n  - name: a\n    address: nowhere\n    routes: [{cluster: c}]\nclusters:\n  - name: c\n    endpoints: [1.2.3.4:80]\n",
         [(3, "listeners[0].address")]),
        ("listeners:\n  - name: a\n    address: 1.2.3.4:80\n    routes: [{cluster: missing}]\n",
         [(4, "listeners[0].routes[0].cluster")]),
        ("listeners:\n  - name: a\n    address: 1.2.3.4:80\n    protocol: udp\n    colour: red\n    cluster: c\nclusters:\n  - name: c\n    endpoints: [1.2.3.4:80]\n    connect_timeout: soon\n",
         [(4, "listeners[0].protocol"), (5, "listeners[0].colour"), (10, "clusters[0].connect_timeout")]),
        ("listeners:\n  - name: t\n    address: 1.2.3.4:80\n    protocol: tcp\nclusters:\n  - name: c\n    endpoints: []\n",
         [(2, "listeners[0].cluster"), (7, "clusters[0].endpoints")]),
        ("listeners: [\n", [(2, "")]),
        ("listeners:\n  - name: a\n    address: 1.2.3.4:80\n    routes: [{cluster: c}]\nclusters:\n  - name: c\n    endpoints: [1.2.3.4:80]\n    protocol: h2c\n",
         [(8, "clusters[0].protocol")]),
        // "@admin" names the admin socket in a hot upgrade; "@" names are reserved.
        ("listeners:\n  - name: '@admin'\n    address: 1.2.3.4:80\n    routes: [{cluster: c}]\nclusters:\n  - name: c\n    endpoints: [1.2.3.4:80]\n",
         [(2, "listeners[0].name")]),
    ])
    func reportsLineAndField(yaml: String, expected: [(Int, String)]) {
        do {
            _ = try MeshConfig.parse(yaml: yaml)
            Issue.record("config was accepted")
        } catch {
            let got = error.errors.map { ($0.line, $0.field) }
            #expect(got.count == expected.count, "\(error)")
            for (line, field) in expected {
                #expect(got.contains { $0 == (line, field) }, "missing \(line) \(field) in \(error)")
            }
        }
    }
}
