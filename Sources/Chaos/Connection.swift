import Foundation

/// A blocking loopback TCP connection with a deadline on every call. The harness's clients run on
/// their own threads, so blocking is what keeps them simple; the deadline is what keeps them honest.
final class Connection {
    /// Why a call on the connection failed, and whether the request can have reached the server.
    enum Failure: Error {
        /// Nothing was sent: the request certainly did not happen.
        case notConnected(String)
        /// The request may have been sent: its outcome is unknown.
        case lost(String)
        case timedOut
    }

    private let fd: Int32
    private var buffer: [UInt8] = []
    private var isBroken = false

    /// Connects to `127.0.0.1:port`, giving up after `timeout` seconds.
    init(port: Int, timeout: Double) throws(Failure) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw .notConnected("socket: errno \(errno)") }
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        Self.setTimeout(fd, SO_SNDTIMEO, timeout)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        // On Linux SO_SNDTIMEO also bounds connect(), which matters for a stopped node with a full backlog.
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        // No close here: the instance is fully initialized, so deinit closes the descriptor.
        guard connected == 0 else { throw .notConnected("connect to port \(port): \(String(cString: strerror(errno)))") }
    }

    deinit {
        close(fd)
    }

    /// Whether a call failed in a way that leaves the stream unusable (a reply may still arrive).
    var isUsable: Bool { !isBroken }

    /// Sends all of `bytes` within `timeout` seconds.
    func send(_ bytes: [UInt8], timeout: Double) throws(Failure) {
        Self.setTimeout(fd, SO_SNDTIMEO, timeout)
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count > 0 {
                sent += count
                continue
            }
            isBroken = true
            // Before the first byte left, the server cannot have seen the request.
            if sent == 0, count < 0, errno == ECONNRESET || errno == EPIPE { throw .notConnected("send: \(String(cString: strerror(errno)))") }
            throw count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? .timedOut : .lost("send: \(String(cString: strerror(errno)))")
        }
    }

    /// Reads more bytes into the buffer, waiting at most until `deadline`.
    private func fill(until deadline: ContinuousClock.Instant) throws(Failure) {
        let remaining = ContinuousClock.now.duration(to: deadline)
        guard remaining > .zero else {
            isBroken = true
            throw .timedOut
        }
        Self.setTimeout(fd, SO_RCVTIMEO, Double(remaining.components.seconds) + Double(remaining.components.attoseconds) / 1e18)
        var chunk = [UInt8](repeating: 0, count: 4096)
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count > 0 {
            buffer += chunk[..<count]
            return
        }
        isBroken = true
        if count < 0, errno == EAGAIN || errno == EWOULDBLOCK { throw .timedOut }
        throw .lost(count == 0 ? "the server closed the connection" : "recv: \(String(cString: strerror(errno)))")
    }

    /// The next line ending in CRLF, without it.
    func readLine(until deadline: ContinuousClock.Instant) throws(Failure) -> [UInt8] {
        while true {
            if let end = buffer.indices.dropLast().first(where: { buffer[$0] == 13 && buffer[$0 + 1] == 10 }) {
                let line = Array(buffer[..<end])
                buffer.removeFirst(end + 2)
                return line
            }
            try fill(until: deadline)
        }
    }

    /// Exactly `count` bytes.
    func read(count: Int, until deadline: ContinuousClock.Instant) throws(Failure) -> [UInt8] {
        while buffer.count < count { try fill(until: deadline) }
        let bytes = Array(buffer[..<count])
        buffer.removeFirst(count)
        return bytes
    }

    /// Everything until the server closes the connection.
    func readToEnd(until deadline: ContinuousClock.Instant) throws(Failure) -> [UInt8] {
        while true {
            do {
                try fill(until: deadline)
            } catch .lost(_) {
                return buffer
            }
        }
    }

    private static func setTimeout(_ fd: Int32, _ option: Int32, _ seconds: Double) {
        let clamped = max(seconds, 0.001)
        var value = timeval(tv_sec: Int(clamped), tv_usec: Int((clamped - Double(Int(clamped))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, option, &value, socklen_t(MemoryLayout<timeval>.size))
    }
}
