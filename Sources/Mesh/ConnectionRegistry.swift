import NIOConcurrencyHelpers
import NIOCore

/// Every open client connection, so the admin endpoint can count them and a shutdown or handover can find them.
///
/// The hot path only adds and removes; phases are read from the connections' own handlers on their event loops.
final class ConnectionRegistry: Sendable {
    enum Kind: String, Sendable {
        case http
        case tcp
    }

    struct Entry: Sendable {
        let channel: Channel
        let listener: String
        let kind: Kind
    }

    private let entries = NIOLockedValueBox([ObjectIdentifier: Entry]())
    /// Connections asked to stop at their next safe point for a hot upgrade.
    private let marked = NIOLockedValueBox(Set<ObjectIdentifier>())

    func add(_ channel: Channel, listener: String, kind: Kind) {
        let id = ObjectIdentifier(channel)
        entries.withLockedValue { $0[id] = Entry(channel: channel, listener: listener, kind: kind) }
        channel.closeFuture.whenComplete { _ in
            _ = self.entries.withLockedValue { $0.removeValue(forKey: id) }
            _ = self.marked.withLockedValue { $0.remove(id) }
        }
    }

    var all: [Entry] { entries.withLockedValue { Array($0.values) } }

    /// Marks up to `limit` more connections for handover and returns every marked one, newly marked first.
    func mark(upTo limit: Int) -> (new: [Entry], all: [Entry]) {
        let current = entries.withLockedValue { $0 }
        return marked.withLockedValue { marked in
            var new: [Entry] = []
            for (id, entry) in current where new.count < limit && !marked.contains(id) {
                marked.insert(id)
                new.append(entry)
            }
            return (new, marked.compactMap { current[$0] })
        }
    }

    /// The phase of one connection, read on its event loop.
    func phase(of entry: Entry) async -> String {
        let channel = entry.channel
        let phase = try? await channel.eventLoop.submit { () -> String in
            switch entry.kind {
            case .http:
                let sync = channel.pipeline.syncOperations
                if let handler = try? sync.handler(type: HTTPProxyHandler.self) { return handler.machine.phase.rawValue }
                if (try? sync.handler(type: ProtocolSniffer.self)) != nil { return "idle" }
                return channel.isActive ? "http2" : "closing"
            case .tcp:
                let handler = try? channel.pipeline.syncOperations.handler(type: TunnelHandler.self)
                return handler?.tunnel.machine.phase.rawValue ?? "closed"
            }
        }.get()
        return phase ?? "closed"
    }

    /// Connections by listener, then by phase.
    func counts() async -> [String: [String: Int]] {
        var result: [String: [String: Int]] = [:]
        for entry in all {
            let phase = await phase(of: entry)
            result[entry.listener, default: [:]][phase, default: 0] += 1
        }
        return result
    }

    /// Connections with work in flight: an HTTP request, or any open tunnel.
    func busyCount() async -> Int {
        var busy = 0
        for entry in all {
            let phase = await phase(of: entry)
            if phase != "idle" && phase != "closed" && phase != "closing" { busy += 1 }
        }
        return busy
    }

    /// Forgets every mark (a handover was called off) and returns the connections that had one.
    func unmarkAll() -> [Entry] {
        let current = entries.withLockedValue { $0 }
        return marked.withLockedValue { marked in
            defer { marked = [] }
            return marked.compactMap { current[$0] }
        }
    }

    func closeAll() async {
        for entry in all {
            try? await entry.channel.close()
        }
    }
}
