import NIOHTTP1

/// The pure HTTP/1.1 proxy rules: routing, hop-by-hop headers, limits.
public enum HTTPRules {
    /// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1; `HTTP2-Settings` is one by RFC 7540
    /// §3.2.1), plus the ones a `Connection` header names.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "proxy-authenticate", "proxy-authorization", "http2-settings",
    ]

    /// The first route matching the request, or `nil` (the client gets a 404).
    public static func route(_ head: HTTPRequestHead, routes: [RouteConfig]) -> RouteConfig? {
        let host = head.headers.first(name: "host").map(hostWithoutPort)?.lowercased()
        let path = head.uri
        return routes.first { route in
            if let wanted = route.host, wanted != host { return false }
            if !path.hasPrefix(route.pathPrefix) { return false }
            for (name, value) in route.headers where !head.headers[name].contains(value) { return false }
            return true
        }
    }

    static func hostWithoutPort(_ host: String) -> String {
        if host.hasPrefix("[") { return String(host.prefix { $0 != "]" }.dropFirst()) }
        if let colon = host.lastIndex(of: ":") { return String(host[..<colon]) }
        return host
    }

    /// Removes hop-by-hop headers, including every header named in `Connection`.
    public static func removeHopByHop(_ headers: inout HTTPHeaders) {
        for value in headers["connection"] {
            for token in value.split(separator: ",") {
                headers.remove(name: String(token.trimmingSpaces()))
            }
        }
        for name in hopByHop where headers.contains(name: name) {
            headers.remove(name: name)
        }
    }

    /// The request head sent upstream: hop-by-hop headers gone, body framing kept, `X-Forwarded-For` appended.
    public static func upstreamRequestHead(_ head: HTTPRequestHead, clientIP: String?) -> HTTPRequestHead {
        var out = HTTPRequestHead(version: .http1_1, method: head.method, uri: head.uri)
        var headers = head.headers
        let isChunked = headers["transfer-encoding"].contains { $0.lowercased().contains("chunked") }
        removeHopByHop(&headers)
        // The proxy answers `Expect: 100-continue` itself once it has an upstream, so it is not forwarded.
        headers.remove(name: "expect")
        if isChunked {
            headers.add(name: "transfer-encoding", value: "chunked")
        }
        if let clientIP {
            if let previous = head.headers.first(name: "x-forwarded-for") {
                headers.replaceOrAdd(name: "x-forwarded-for", value: "\(previous), \(clientIP)")
            } else {
                headers.add(name: "x-forwarded-for", value: clientIP)
            }
        }
        if !headers.contains(name: "host") {
            headers.add(name: "host", value: "")
        }
        out.headers = headers
        return out
    }

    /// The response head sent to the client: hop-by-hop headers gone, framing kept, `Connection: close` when closing.
    public static func clientResponseHead(_ head: HTTPResponseHead, closeAfter: Bool, requestVersion: HTTPVersion) -> HTTPResponseHead {
        var headers = head.headers
        let isChunked = headers["transfer-encoding"].contains { $0.lowercased().contains("chunked") }
        removeHopByHop(&headers)
        if isChunked && requestVersion.isAtLeast11 {
            headers.add(name: "transfer-encoding", value: "chunked")
        }
        if closeAfter {
            headers.add(name: "connection", value: "close")
        } else if !requestVersion.isAtLeast11 {
            headers.add(name: "connection", value: "keep-alive")
        }
        return HTTPResponseHead(version: requestVersion.isAtLeast11 ? .http1_1 : requestVersion, status: head.status, headers: headers)
    }

    /// Whether the request asks to switch protocols (`Connection: upgrade` and an `Upgrade` field, or CONNECT).
    ///
    /// The HTTP/1.1 parser stops at the end of such a request, taking what follows for the new protocol; when the
    /// proxy answers it over HTTP/1.1 instead (anything but an h2c upgrade it accepts), nothing after it on the
    /// connection would ever be parsed, so the connection closes after the response.
    public static func isUpgradeRequest(_ head: HTTPRequestHead) -> Bool {
        head.method == .CONNECT
            || head.headers.contains(name: "upgrade") && head.headers["connection"].contains { $0.split(separator: ",").contains { $0.trimmingSpaces().lowercased() == "upgrade" } }
    }

    /// Whether a retry after a failed connect is safe (RFC 9110 §9.2.2).
    public static func isIdempotent(_ method: HTTPMethod) -> Bool {
        switch method {
        case .GET, .HEAD, .PUT, .DELETE, .OPTIONS, .TRACE: return true
        default: return false
        }
    }

    /// The 4xx a request head earns before any forwarding, or `nil` when it is within the listener's limits.
    public static func limitViolation(_ head: HTTPRequestHead, limits: HTTPLimits) -> HTTPResponseStatus? {
        if head.uri.utf8.count > limits.maxURIBytes { return .uriTooLong }
        if head.headers.count > limits.maxHeaderCount { return .requestHeaderFieldsTooLarge }
        var bytes = head.method.rawValue.utf8.count + head.uri.utf8.count + 12
        for (name, value) in head.headers {
            bytes += name.utf8.count + value.utf8.count + 4
        }
        if bytes > limits.maxHeaderBytes { return .requestHeaderFieldsTooLarge }
        let lengths = head.headers["content-length"]
        if lengths.count > 1 && Set(lengths).count > 1 { return .badRequest }
        if let lengthText = lengths.first {
            guard let length = Int(lengthText), length >= 0 else { return .badRequest }
            if length > limits.maxBodyBytes { return .payloadTooLarge }
        }
        if head.headers.contains(name: "transfer-encoding") && head.headers.contains(name: "content-length") {
            // Request smuggling guard (RFC 9112 §6.1): both framings at once is refused, not guessed.
            return .badRequest
        }
        return nil
    }
}

extension Substring {
    func trimmingSpaces() -> Substring {
        var text = self
        while text.first == " " || text.first == "\t" { text.removeFirst() }
        while text.last == " " || text.last == "\t" { text.removeLast() }
        return text
    }
}

extension HTTPVersion {
    /// HTTP/1.1 or later: keep-alive by default and chunked bodies allowed.
    var isAtLeast11: Bool { major > 1 || (major == 1 && minor >= 1) }
}
