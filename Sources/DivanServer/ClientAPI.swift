import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import Raft
import RaftCore
import KVStore
import KVWire

/// The HTTP endpoint of `divan server`: Divan KV over HTTP, the node's status, and health.
///
/// - `GET /kv/KEY`: a linearizable read (ReadIndex on whatever role this node has);
/// - `PUT /kv/KEY` with the value as body, `DELETE /kv/KEY`: replicated writes, from any node;
/// - `GET /status`: the placement driver's group as this node sees it (role, term, leader, commit and
///   applied indexes, followers) and every region (JSON);
/// - `GET /ready`: 200 once every group held here knows a leader;
/// - `GET /metrics`: the runtime's swift-metrics in Prometheus text format;
/// - `POST /membership` with lines `add-voter ID`, `add-learner ID`, `remove ID`: changes the target
///   membership of every group; each group's leader moves its group there (joint consensus when
///   it changes more than one voter). 200 once the placement driver committed the target;
/// - `POST /snapshot`: snapshot every group held here now and compact the log each covers;
/// - `POST /transfer-leader` with a node id as body: every group this node leads hands its
///   leadership to that node (answers how many groups it asked).
///
/// Failures answer 503 with a header `divan-outcome: definite` (it did not happen; retry anywhere) or
/// `divan-outcome: indefinite` (it may have happened).
public enum ClientAPI {
    /// A response, before it is written.
    public struct Response: Sendable {
        public var status: HTTPResponseStatus
        public var body: String
        public var headers: [(String, String)] = []
    }

    public static func bind(
        store: Store, service: NodeKVService, metrics: PrometheusCollectorRegistry, on loops: EventLoopGroup, host: String, port: Int
    ) async throws -> Channel {
        try await ServerBootstrap(group: loops)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(ClientAPIHandler(store: store, service: service, metrics: metrics))
                }
            }
            .bind(host: host, port: port).get()
    }

    public static func answer(
        method: HTTPMethod, path: String, body: String, store: Store, service: NodeKVService, metrics: PrometheusCollectorRegistry
    ) async -> Response {
        if path == "/status" { return Response(status: .ok, body: await statusJSON(store)) }
        if path == "/metrics" {
            var text: [UInt8] = []
            metrics.emit(into: &text)
            return Response(status: .ok, body: String(decoding: text, as: UTF8.self))
        }
        if path == "/ready" {
            for group in store.groups where await group.status.leader == nil {
                return Response(status: .serviceUnavailable, body: "group \(group.group) has no leader\n")
            }
            return Response(status: .ok, body: "ready\n")
        }
        if path == "/snapshot" {
            guard method == .POST else { return Response(status: .methodNotAllowed, body: "POST\n") }
            var lines = ""
            for group in store.groups {
                do {
                    let index = try await group.takeSnapshot()
                    lines += "group \(group.group): " + (index.map { "snapshot at \($0)\n" } ?? "nothing new to snapshot\n")
                } catch {
                    return Response(status: .internalServerError, body: "group \(group.group): \(error)\n")
                }
            }
            return Response(status: .ok, body: lines)
        }
        if path == "/transfer-leader" {
            guard method == .POST else { return Response(status: .methodNotAllowed, body: "POST\n") }
            guard let word = body.split(whereSeparator: \.isWhitespace).first, let target = UInt64(word), target > 0 else {
                return Response(status: .badRequest, body: "the body must be a node id\n")
            }
            var asked = 0
            var refusals = ""
            for group in store.groups where await group.status.role == .leader {
                do {
                    try await group.transferLeadership(to: target)
                    asked += 1
                } catch {
                    refusals += "group \(group.group): \(error)\n"
                }
            }
            guard asked > 0 else {
                return Response(status: .serviceUnavailable, body: refusals.isEmpty ? "this node leads no group\n" : refusals)
            }
            return Response(status: .ok, body: "asked \(asked) groups\n" + refusals)
        }
        if path == "/membership" {
            guard method == .POST else { return Response(status: .methodNotAllowed, body: "POST\n") }
            do {
                let change = try membershipChange(from: body)
                guard let current = await store.placementGroup?.status.membership else {
                    return Response(status: .serviceUnavailable, body: "shutting down\n")
                }
                var (voters, learners) = store.targetMembership ?? (current.voters, current.learners)
                for step in change.steps {
                    voters.removeAll { $0 == step.node }
                    learners.removeAll { $0 == step.node }
                    switch step {
                    case .addVoter(let node, _): voters.append(node)
                    case .addLearner(let node, _): learners.append(node)
                    case .remove: break
                    }
                }
                try await store.changeMembership(voters: voters, learners: learners)
                return Response(status: .ok, body: "committed\n")
            } catch let error as MembershipRequestError {
                return Response(status: .badRequest, body: "\(error)\n")
            } catch let error as KVError {
                return failure(error)
            } catch {
                return Response(status: .serviceUnavailable, body: "\(error)\n", headers: [("divan-outcome", "definite")])
            }
        }
        guard path.hasPrefix("/kv/"), path.count > 4 else { return Response(status: .notFound, body: "not found\n") }
        let key = Array(path.dropFirst(4).utf8)
        do throws(KVError) {
            switch method {
            case .GET:
                guard case .value(let value?) = try await service.read(.get(key: key)) else { return Response(status: .notFound, body: "") }
                return Response(status: .ok, body: String(decoding: value, as: UTF8.self))
            case .PUT:
                let result = try await service.write(.set(key: key, value: Array(body.utf8), condition: .always, expiry: .none, returnPrevious: true))
                guard case .set(_, let previous) = result else { return Response(status: .ok, body: "") }
                return Response(status: .ok, body: previous.map { String(decoding: $0, as: UTF8.self) } ?? "")
            case .DELETE:
                guard case .value(let previous) = try await service.write(.getAndDelete(key: key)) else { return Response(status: .ok, body: "") }
                return Response(status: .ok, body: previous.map { String(decoding: $0, as: UTF8.self) } ?? "")
            default:
                return Response(status: .methodNotAllowed, body: "GET, PUT or DELETE\n")
            }
        } catch {
            return failure(error)
        }
    }

    /// 503 with whether the request may have taken effect.
    static func failure(_ error: KVError) -> Response {
        Response(status: .serviceUnavailable, body: "\(error)\n", headers: [("divan-outcome", error.isDefinite ? "definite" : "indefinite")])
    }

    /// A request body that names no valid change.
    struct MembershipRequestError: Error, CustomStringConvertible {
        var description: String
    }

    static func membershipChange(from body: String) throws -> ConfigurationChange {
        let steps = try body.split(whereSeparator: \.isNewline).filter { !$0.isEmpty }.map { line -> ConfigurationStep in
            let words = line.split(separator: " ")
            guard words.count == 2, let node = UInt64(words[1]), node > 0 else {
                throw MembershipRequestError(description: "'\(line)' is not 'add-voter|add-learner|remove ID'")
            }
            switch words[0] {
            case "add-voter": return .addVoter(node)
            case "add-learner": return .addLearner(node)
            case "remove": return .remove(node)
            default: throw MembershipRequestError(description: "unknown change '\(words[0])'")
            }
        }
        guard !steps.isEmpty else { throw MembershipRequestError(description: "no change given") }
        return ConfigurationChange(steps)
    }

    static func statusJSON(_ store: Store) async -> String {
        guard let group = store.placementGroup else { return "{}\n" }
        let status = await group.status
        let contacts = await group.timeSinceLastContact
        let followers = status.followers.keys.sorted().map { peer -> String in
            let follower = status.followers[peer]!
            let contact = contacts[peer].map { "\(Int($0 / .milliseconds(1)))" } ?? "null"
            return "\"\(peer)\": {\"match\": \(follower.match), \"state\": \"\(follower.state)\", \"online\": \(follower.isOnline), \"last_contact_ms\": \(contact)}"
        }
        let failure = await group.failure.map { "\"\($0)\"" } ?? "null"
        return """
            {"id": \(status.id), "role": "\(status.role.rawValue)", "term": \(status.term), \
            "leader": \(status.leader.map(String.init) ?? "null"), "commit": \(status.commit), \
            "applied": \(status.applied), "first_index": \(status.firstIndex), "voters": \(status.membership.voters), \
            "learners": \(status.membership.learners), "followers": {\(followers.joined(separator: ", "))}, \
            "failure": \(failure), "regions": [\(await regionsJSON(store))]}

            """
    }
}

extension ClientAPI {
    static func regionsJSON(_ store: Store) async -> String {
        await store.status().regions.map { region in
            let descriptor = region.region
            func key(_ bytes: [UInt8]?) -> String {
                bytes.map { "\"" + String(decoding: $0, as: UTF8.self).unicodeScalars.map { $0.isASCII && $0.value >= 32 && $0 != "\"" && $0 != "\\" ? String($0) : "?" }.joined() + "\"" } ?? "null"
            }
            return """
                {"id": \(descriptor.id), "start": \(key(descriptor.start)), "end": \(key(descriptor.end)), \
                "range_version": \(descriptor.rangeVersion), "role": "\(region.role)", \
                "leader": \(region.leader.map(String.init) ?? "null"), "term": \(region.term), "commit": \(region.commitIndex), \
                "applied": \(region.appliedIndex), "keys": \(region.keys), "bytes": \(region.bytes)}
                """
        }.joined(separator: ", ")
    }
}

/// Reads one request at a time and answers it off the event loop, in order.
final class ClientAPIHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let store: Store
    let service: NodeKVService
    let metrics: PrometheusCollectorRegistry
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []

    init(store: Store, service: NodeKVService, metrics: PrometheusCollectorRegistry) {
        self.store = store
        self.service = service
        self.metrics = metrics
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
            body = []
        case .body(var buffer):
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            guard let head else { return }
            let channel = context.channel
            let store = store, service = service, metrics = metrics
            let path = String(head.uri.prefix { $0 != "?" })
            let method = head.method
            let text = String(decoding: body, as: UTF8.self)
            let keepAlive = head.isKeepAlive
            // Stop reading until this answer is written, so answers leave in request order.
            channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
            Task {
                let response = await ClientAPI.answer(method: method, path: path, body: text, store: store, service: service, metrics: metrics)
                var headers = HTTPHeaders()
                headers.add(name: "content-type", value: "text/plain")
                headers.add(name: "content-length", value: "\(response.body.utf8.count)")
                for (name, value) in response.headers { headers.add(name: name, value: value) }
                if !keepAlive { headers.add(name: "connection", value: "close") }
                channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers)), promise: nil)
                channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: response.body))), promise: nil)
                let done = channel.eventLoop.makePromise(of: Void.self)
                channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: done)
                done.futureResult.whenComplete { _ in
                    if keepAlive {
                        channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
                        channel.read()
                    } else {
                        channel.close(promise: nil)
                    }
                }
            }
        }
    }
}
