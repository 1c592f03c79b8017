import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A minimal client of a local node's HTTP API, for `divan up` and the tests over real processes.
public enum NodeHTTPClient {
    /// Sends one request to `127.0.0.1:port`; nil when the node does not answer within five seconds.
    public static func request(port: Int, _ method: String, _ path: String, body: String? = nil) async -> (status: Int, body: String)? {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        request.httpBody = body.map { Data($0.utf8) }
        request.timeoutInterval = 5
        guard let (data, response) = try? await URLSession.shared.data(for: request),
              let http = response as? HTTPURLResponse else { return nil }
        return (http.statusCode, String(decoding: data, as: UTF8.self))
    }
}
