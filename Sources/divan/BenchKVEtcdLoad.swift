import Foundation
import Histogram
import NIOCore
import NIOPosix

/// A load generator for etcd's v3 HTTP/JSON gateway (`/v3/kv/put`, `/v3/kv/range`) shaped like
/// redis-benchmark: one event-loop thread (redis-benchmark's default), keep-alive connections with one
/// request in flight each, random keys `key:NNNNNNNNNNNN` and fixed-size values.
///
/// etcd's own `benchmark` tool is not packaged in Debian, and etcd's gateway handles the requests of one
/// HTTP/1.1 connection one at a time, so redis-benchmark's `-c C -P P` becomes C × P connections here:
/// the same number of requests in flight.
struct EtcdLoad {
    /// What each request does.
    enum Operation: String {
        /// `/v3/kv/put` of a random key.
        case put
        /// `/v3/kv/range` of a random key: a linearizable read (etcd's default).
        case range
    }

    var port: Int
    var connections: Int
    var requests: Int
    var valueSize: Int
    var keyspace: Int

    /// Sends `requests` requests of `operation` and measures them.
    func run(_ operation: Operation) async throws -> LoadResult {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let result = try await measure(operation, on: group.next())
            try await group.shutdownGracefully()
            return result
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private func measure(_ operation: Operation, on loop: any EventLoop) async throws -> LoadResult {
        let (port, requests, valueSize, keyspace) = (port, requests, valueSize, keyspace)
        let state = try await loop.submit {
            NIOLoopBound(
                EtcdLoadState(
                    operation: operation, port: port, requests: requests, valueSize: valueSize, keyspace: keyspace,
                    finished: loop.makePromise()),
                eventLoop: loop)
        }.get()
        let bootstrap = ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(EtcdLoadHandler(state: state.value))
                }
            }
        var channels: [any Channel] = []
        for _ in 0..<connections { channels.append(try await bootstrap.connect(host: "127.0.0.1", port: port).get()) }
        let result = try await loop.flatSubmit {
            state.value.start()
            return state.value.finished.futureResult
        }.get()
        for channel in channels { try? await channel.close() }
        return result
    }
}

/// Throughput and latency of one load run.
struct LoadResult: Sendable {
    var requestsPerSecond: Double
    var p50Milliseconds: Double
    var p99Milliseconds: Double
    /// Responses other than 200 OK.
    var errors: Int
}

/// The run's shared counters, used only on its one event loop.
private final class EtcdLoadState {
    let path: String
    let header: String
    let operation: EtcdLoad.Operation
    let requests: Int
    let keyspace: Int
    let encodedValue: String
    let finished: EventLoopPromise<LoadResult>
    var handlers: [EtcdLoadHandler] = []
    var issued = 0
    var completed = 0
    var errors = 0
    var startedAt = NIODeadline.now()
    var latencies = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)

    init(operation: EtcdLoad.Operation, port: Int, requests: Int, valueSize: Int, keyspace: Int, finished: EventLoopPromise<LoadResult>) {
        self.operation = operation
        self.requests = requests
        self.keyspace = keyspace
        self.finished = finished
        path = "/v3/kv/\(operation.rawValue)"
        header = "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nContent-Type: application/json\r\n"
        encodedValue = Data(repeating: UInt8(ascii: "x"), count: valueSize).base64EncodedString()
    }

    func start() {
        startedAt = .now()
        for handler in handlers { handler.sendNext() }
        if requests == 0 { finish() }
    }

    /// The next request to send, or nil when all have been issued.
    func nextRequest() -> String? {
        guard issued < requests else { return nil }
        issued += 1
        let number = String(Int.random(in: 0..<keyspace))
        let key = "key:" + String(repeating: "0", count: max(0, 12 - number.count)) + number
        let encodedKey = Data(key.utf8).base64EncodedString()
        let body = operation == .put
            ? "{\"key\":\"\(encodedKey)\",\"value\":\"\(encodedValue)\"}"
            : "{\"key\":\"\(encodedKey)\"}"
        return header + "Content-Length: \(body.utf8.count)\r\n\r\n" + body
    }

    func complete(status: Int, nanoseconds: UInt64) {
        completed += 1
        if status != 200 { errors += 1 }
        _ = latencies.record(nanoseconds / 1_000)
        if completed == requests { finish() }
    }

    private func finish() {
        let seconds = Double((NIODeadline.now() - startedAt).nanoseconds) / 1e9
        finished.succeed(LoadResult(
            requestsPerSecond: Double(completed) / seconds,
            p50Milliseconds: Double(latencies.valueAtPercentile(50)) / 1_000,
            p99Milliseconds: Double(latencies.valueAtPercentile(99)) / 1_000, errors: errors))
    }

    func fail(_ error: any Error) { finished.fail(error) }
}

/// One keep-alive connection: sends a request, reads its response, sends the next.
private final class EtcdLoadHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let state: EtcdLoadState
    private var context: ChannelHandlerContext?
    private var inbox: [UInt8] = []
    private var sentAt = NIODeadline.now()
    private var isWaiting = false

    init(state: EtcdLoadState) { self.state = state }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        state.handlers.append(self)
    }

    func sendNext() {
        guard let context, let request = state.nextRequest() else { return }
        sentAt = .now()
        isWaiting = true
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: request)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        inbox.append(contentsOf: buffer.readableBytesView)
        while let response = HTTPResponseFrame.parse(inbox) {
            inbox.removeFirst(response.length)
            isWaiting = false
            state.complete(status: response.status, nanoseconds: UInt64((NIODeadline.now() - sentAt).nanoseconds))
            sendNext()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if isWaiting { state.fail(EtcdLoadError(message: "etcd closed a connection with a request in flight")) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        state.fail(error)
        context.close(promise: nil)
    }
}

/// The load run could not finish.
struct EtcdLoadError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// The extent of one HTTP/1.1 response at the front of a byte stream (Content-Length or chunked).
enum HTTPResponseFrame {
    /// The status and the byte length of the first complete response in `bytes`; nil when incomplete.
    static func parse(_ bytes: [UInt8]) -> (status: Int, length: Int)? {
        guard let headerEnd = find([13, 10, 13, 10], in: bytes, from: 0) else { return nil }
        let head = String(decoding: bytes[..<headerEnd], as: UTF8.self).lowercased()
        let lines = head.split(separator: "\r\n")
        guard let first = lines.first, first.count >= 12, let status = Int(first.dropFirst(9).prefix(3)) else { return nil }
        let bodyStart = headerEnd + 4
        for line in lines.dropFirst() where line.hasPrefix("content-length:") {
            guard let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) else { return nil }
            return bytes.count >= bodyStart + length ? (status, bodyStart + length) : nil
        }
        // Chunked: size line, data, CRLF, until the zero-size chunk and the final CRLF (no trailers).
        var position = bodyStart
        while let lineEnd = find([13, 10], in: bytes, from: position) {
            let sizeText = String(decoding: bytes[position..<lineEnd], as: UTF8.self)
            guard let size = Int(sizeText.split(separator: ";").first ?? "", radix: 16) else { return nil }
            let next = lineEnd + 2 + size + 2
            guard bytes.count >= next else { return nil }
            if size == 0 { return (status, next) }
            position = next
        }
        return nil
    }

    private static func find(_ pattern: [UInt8], in bytes: [UInt8], from start: Int) -> Int? {
        guard bytes.count >= pattern.count else { return nil }
        var index = start
        while index <= bytes.count - pattern.count {
            if bytes[index] == pattern[0] && bytes[index..<index + pattern.count].elementsEqual(pattern) { return index }
            index += 1
        }
        return nil
    }
}
