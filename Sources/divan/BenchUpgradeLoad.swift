import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Steady keep-alive HTTP/1.1 load over long-lived connections, for `divan bench upgrade`: every
/// connection sends one GET per interval (the connections spread evenly over it), reads the whole
/// response and records its latency. A connection the server closes or resets is opened again and
/// counted as not having survived; a refused connect is counted and retried.
final class UpgradeLoad: Sendable {
    /// What the load saw over the whole run.
    struct Outcome {
        var requests = 0
        var failed = 0
        var resets = 0
        var refused = 0
        /// (time, connection) of every reconnection, to tell which connections survived each reload.
        var reconnects: [(Date, Int)] = []
        /// (start, seconds) of every successful request.
        var latencies: [(Date, Double)] = []
    }

    private let port: Int
    private let connections: Int
    private let interval: Double
    private let group: MultiThreadedEventLoopGroup
    private let outcome = NIOLockedValueBox(Outcome())

    init(port: Int, connections: Int, interval: Double, threads: Int) {
        self.port = port
        self.connections = connections
        self.interval = interval
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
    }

    /// Runs until `end`, then closes every connection and returns what it saw.
    func run(until end: Date) async -> Outcome {
        await withTaskGroup(of: Void.self) { tasks in
            for index in 0..<connections {
                tasks.addTask { await self.drive(index, until: end) }
            }
        }
        try? await group.shutdownGracefully()
        return outcome.withLockedValue { $0 }
    }

    private func record(_ change: (inout Outcome) -> Void) { outcome.withLockedValue(change) }

    /// One connection's life: open, request on the beat, reopen whatever the server ended.
    private func drive(_ index: Int, until end: Date) async {
        try? await Task.sleep(for: .seconds(interval * Double(index) / Double(connections)))
        var channel: Channel? = nil
        while Date() < end {
            if channel == nil { channel = await connect(until: end) }
            guard let open = channel else { return }
            let started = Date()
            switch await exchange(on: open) {
            case .ok(let keepAlive):
                record {
                    $0.requests += 1
                    $0.latencies.append((started, Date().timeIntervalSince(started)))
                }
                if !keepAlive {
                    record { $0.reconnects.append((Date(), index)) }
                    open.close(promise: nil)
                    channel = nil
                }
            case .status:
                record { $0.failed += 1 }
            case .closed(let partial):
                // Closed before any byte of the response: an idle keep-alive connection the server
                // closed (a drain). With some bytes, a request was lost.
                record {
                    if partial { $0.failed += 1 }
                    $0.reconnects.append((Date(), index))
                }
                channel = nil
            case .reset:
                record {
                    $0.resets += 1
                    $0.reconnects.append((Date(), index))
                }
                channel = nil
            }
            let pause = interval - Date().timeIntervalSince(started)
            if pause > 0 { try? await Task.sleep(for: .seconds(pause)) }
        }
        try? await channel?.close()
    }

    private func connect(until end: Date) async -> Channel? {
        while Date() < end {
            do {
                return try await ClientBootstrap(group: group)
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(ResponseReader()) }
                    }
                    .connect(host: "127.0.0.1", port: port).get()
            } catch {
                record { $0.refused += 1 }
                try? await Task.sleep(for: .milliseconds(10))
            }
        }
        return nil
    }

    private func exchange(on channel: Channel) async -> ResponseReader.Result {
        let promise = channel.eventLoop.makePromise(of: ResponseReader.Result.self)
        let request = ByteBuffer(string: "GET /bench HTTP/1.1\r\nHost: bench\r\n\r\n")
        channel.eventLoop.execute {
            guard channel.isActive, let reader = try? channel.pipeline.syncOperations.handler(type: ResponseReader.self) else {
                promise.succeed(.closed(partial: false))
                return
            }
            reader.expect(promise)
            let boundReader = NIOLoopBound(reader, eventLoop: channel.eventLoop)
            channel.writeAndFlush(request).whenFailure { _ in boundReader.value.finish(.closed(partial: false)) }
        }
        return (try? await promise.futureResult.get()) ?? .closed(partial: false)
    }
}

/// Reads one small HTTP/1.1 response at a time (status line, headers, Content-Length body).
final class ResponseReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    enum Result: Sendable {
        case ok(keepAlive: Bool)
        case status
        case closed(partial: Bool)
        case reset
    }

    private var buffer = ByteBuffer()
    private var waiting: EventLoopPromise<Result>?

    func expect(_ promise: EventLoopPromise<Result>) {
        buffer.clear()
        waiting = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffer.writeBuffer(&bytes)
        let view = buffer.readableBytesView
        guard let headEnd = view.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
        let head = String(decoding: view[view.startIndex..<headEnd.lowerBound], as: UTF8.self).lowercased()
        let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
            .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
        guard view.distance(from: view.startIndex, to: headEnd.upperBound) + length <= view.count else { return }
        let result: Result = head.hasPrefix("http/1.1 200") ? .ok(keepAlive: !head.contains("connection: close")) : .status
        buffer.clear()
        finish(result)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.closed(partial: buffer.readableBytes > 0))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let error = error as? IOError, error.errnoCode == ECONNRESET {
            finish(.reset)
        } else {
            finish(.closed(partial: buffer.readableBytes > 0))
        }
        context.close(promise: nil)
    }

    func finish(_ result: Result) {
        let promise = waiting
        waiting = nil
        promise?.succeed(result)
    }
}
