import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import Raft
import RaftCore

/// The HTTP endpoint of `divan server`: the built-in replicated map, the group's status, and health.
///
/// - `GET /kv/KEY`: a linearizable read (ReadIndex on whatever role this node has);
/// - `PUT /kv/KEY` with the value as body, `DELETE /kv/KEY`: replicated writes through the leader;
/// - `GET /status`: role, term, leader, commit and applied indexes, followers (JSON);
/// - `GET /ready`: 200 once the node knows a leader;
/// - `GET /metrics`: the runtime's swift-metrics in Prometheus text format;
/// - `POST /membership` with lines `add-voter ID`, `add-learner ID`, `remove ID`: one membership
///   change (joint consensus when it changes more than one voter), proposed on the leader;
/// - `POST /snapshot`: snapshot the state machine now and compact the log it covers.
///
/// Failures answer 503 with a header `divan-outcome: definite` (it did not happen; retry anywhere) or
/// `divan-outcome: indefinite` (it may have happened), and for "not leader" a `divan-leader` hint.
public enum ClientAPI {
    /// A response, before it is written.
    public struct Response: Sendable {
        public var status: HTTPResponseStatus
        public var body: String
        public var headers: [(String, String)] = []
    }

    public static func bind(
        group: RaftGroup, map: ReplicatedMap, metrics: PrometheusCollectorRegistry, on loops: EventLoopGroup, host: String, port: Int
    ) async throws -> Channel {
        try await ServerBootstrap(group: loops)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(ClientAPIHandler(group: group, map: map, metrics: metrics))
                }
            }
            .bind(host: host, port: port).get()
    }

    public static func answer(
        method: HTTPMethod, path: String, body: String, group: RaftGroup, map: ReplicatedMap, metrics: PrometheusCollectorRegistry
    ) async -> Response {
        if path == "/status" { return Response(status: .ok, body: await statusJSON(group)) }
        if path == "/metrics" {
            var text: [UInt8] = []
            metrics.emit(into: &text)
            return Response(status: .ok, body: String(decoding: text, as: UTF8.self))
        }
        if path == "/ready" {
            return await group.status.leader == nil
                ? Response(status: .serviceUnavailable, body: "no leader\n") : Response(status: .ok, body: "ready\n")
        }
        if path == "/snapshot" {
            guard method == .POST else { return Response(status: .methodNotAllowed, body: "POST\n") }
            do {
                let index = try await group.takeSnapshot()
                return Response(status: .ok, body: index.map { "snapshot at \($0)\n" } ?? "nothing new to snapshot\n")
            } catch {
                return Response(status: .internalServerError, body: "\(error)\n")
            }
        }
        if path == "/membership" {
            guard method == .POST else { return Response(status: .methodNotAllowed, body: "POST\n") }
            do {
                let change = try membershipChange(from: body)
                try await group.changeMembership(change)
                return Response(status: .ok, body: "proposed\n")
            } catch let error as RaftError {
                return failure(error)
            } catch {
                return Response(status: .badRequest, body: "\(error)\n")
            }
        }
        guard path.hasPrefix("/kv/"), path.count > 4 else { return Response(status: .notFound, body: "not found\n") }
        let key = String(path.dropFirst(4))
        do {
            switch method {
            case .GET:
                _ = try await group.readIndex()
                guard let value = map.value(of: key) else { return Response(status: .notFound, body: "") }
                return Response(status: .ok, body: value)
            case .PUT:
                let previous = try await group.apply(ReplicatedMap.Command.put(key: key, value: body).encoded)
                return Response(status: .ok, body: String(decoding: previous, as: UTF8.self))
            case .DELETE:
                let previous = try await group.apply(ReplicatedMap.Command.delete(key: key).encoded)
                return Response(status: .ok, body: String(decoding: previous, as: UTF8.self))
            default:
                return Response(status: .methodNotAllowed, body: "GET, PUT or DELETE\n")
            }
        } catch let error as RaftError {
            return failure(error)
        } catch {
            return Response(status: .internalServerError, body: "\(error)\n")
        }
    }

    /// 503 with whether the request may have taken effect, and the leader when known.
    static func failure(_ error: RaftError) -> Response {
        var response = Response(status: .serviceUnavailable, body: "\(error)\n")
        switch error {
        case .definite(let failure):
            response.headers.append(("divan-outcome", "definite"))
            if case .notLeader(let hint?) = failure { response.headers.append(("divan-leader", "\(hint)")) }
        case .indefinite:
            response.headers.append(("divan-outcome", "indefinite"))
        }
        return response
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

    static func statusJSON(_ group: RaftGroup) async -> String {
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
            "failure": \(failure)}

            """
    }
}

/// Reads one request at a time and answers it off the event loop, in order.
final class ClientAPIHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let group: RaftGroup
    let map: ReplicatedMap
    let metrics: PrometheusCollectorRegistry
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []

    init(group: RaftGroup, map: ReplicatedMap, metrics: PrometheusCollectorRegistry) {
        self.group = group
        self.map = map
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
            let group = group, map = map, metrics = metrics
            let path = String(head.uri.prefix { $0 != "?" })
            let method = head.method
            let text = String(decoding: body, as: UTF8.self)
            let keepAlive = head.isKeepAlive
            // Stop reading until this answer is written, so answers leave in request order.
            channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
            Task {
                let response = await ClientAPI.answer(method: method, path: path, body: text, group: group, map: map, metrics: metrics)
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
