import Foundation

/// A loopback TCP port that was free a moment ago, chosen below the kernel's ephemeral port range.
/// The kernel hands out ports from that range to every outgoing connection and every bind to port 0,
/// so a port taken from it can be grabbed by someone else before the server meant to get it binds
/// it, or while a killed node is down before its restart on the same port (a chaos run failed to
/// start on "Address already in use" that way, beside other tests).
public func freeLoopbackPort() throws -> Int {
    let ephemeralStart = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))
        .flatMap { $0.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } } ?? 32_768
    if ephemeralStart > 10_001 {
        for _ in 0..<200 {
            let port = Int.random(in: 10_000..<ephemeralStart)
            if bindLoopback(port: port) != nil { return port }
        }
    }
    guard let port = bindLoopback(port: 0) else { throw LoopbackPortError(errno: errno) }
    return port
}

/// Binds a loopback TCP socket to `port` (0: any), closes it, and returns the port bound, or nil.
private func bindLoopback(port: Int) -> Int? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    guard bound == 0 else { return nil }
    withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(fd, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// No loopback port could be bound.
public struct LoopbackPortError: Error, CustomStringConvertible {
    public var errno: Int32
    public var description: String { "cannot bind a loopback port: errno \(errno)" }
}

/// `preferred` when it can be bound on loopback now, else a free port.
public func loopbackPort(preferring preferred: Int) throws -> Int {
    try bindLoopback(port: preferred) ?? freeLoopbackPort()
}
