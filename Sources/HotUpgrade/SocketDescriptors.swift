#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// Finds the file descriptor behind a SwiftNIO channel, which NIO does not expose, by its addresses.
///
/// A TCP socket is named uniquely by its local and remote address while it is open (a listening socket by its
/// local address alone), so one scan of `/proc/self/fd` maps every channel of a batch to its descriptor. A number
/// can be reused between the scan and its use, so `duplicate` checks the addresses again on the copy it makes.
public enum SocketDescriptors {
    /// A socket's addresses as text; `remote` is empty for a listening socket.
    public struct Key: Hashable, Sendable {
        public let local: String
        public let remote: String
    }

    public static func key(local: SocketAddress?, remote: SocketAddress?) -> Key? {
        guard let local, let localText = text(local) else { return nil }
        return Key(local: localText, remote: remote.flatMap(text) ?? "")
    }

    /// Every open TCP socket of this process by its addresses.
    public static func scan() -> [Key: CInt] {
        var table: [Key: CInt] = [:]
        guard let directory = opendir("/proc/self/fd") else { return table }
        defer { closedir(directory) }
        let own = dirfd(directory)
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let fd = CInt(name), fd != own, let key = key(of: fd) else { continue }
            table[key] = fd
        }
        return table
    }

    /// A duplicate of `fd` (close-on-exec), if `fd` is still the socket named by `key`; the caller owns it.
    public static func duplicate(_ fd: CInt, matching key: Key) -> CInt? {
        let copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0 else { return nil }
        guard self.key(of: copy) == key else {
            close(copy)
            return nil
        }
        return copy
    }

    static func key(of fd: CInt) -> Key? {
        var local = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0, let localText = text(local) else { return nil }
        var remote = sockaddr_storage()
        length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let connected = withUnsafeMutablePointer(to: &remote) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
        }
        return Key(local: localText, remote: connected == 0 ? text(remote) ?? "" : "")
    }

    private static func text(_ address: SocketAddress) -> String? {
        guard let ip = address.ipAddress, let port = address.port else { return nil }
        return "\(ip)|\(port)"
    }

    private static func text(_ storage: sockaddr_storage) -> String? {
        var storage = storage
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { address -> String? in
                    var raw = address.pointee.sin_addr
                    guard inet_ntop(AF_INET, &raw, &buffer, socklen_t(buffer.count)) != nil else { return nil }
                    return "\(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))|\(UInt16(bigEndian: address.pointee.sin_port))"
                }
            }
        case AF_INET6:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { address -> String? in
                    var raw = address.pointee.sin6_addr
                    guard inet_ntop(AF_INET6, &raw, &buffer, socklen_t(buffer.count)) != nil else { return nil }
                    return "\(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))|\(UInt16(bigEndian: address.pointee.sin6_port))"
                }
            }
        default:
            return nil
        }
    }
}
