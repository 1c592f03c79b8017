#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// An error from a socket call, with the call's name and errno.
public struct HandoverSocketError: Error, CustomStringConvertible, Equatable {
    public let call: String
    public let errno: Int32
    public var description: String { "\(call): \(String(cString: strerror(errno)))" }
}

/// One end of a connected upgrade socket (Unix stream), with blocking, deadline-bounded I/O.
///
/// Frames go out in one `sendmsg` each, their file descriptors attached (SCM_RIGHTS). The kernel never merges
/// bytes that carry descriptors with bytes that carry others, so descriptors arrive no later than the first byte
/// of their frame; the reader queues them and hands each frame the number it names. Blocking calls belong on a
/// thread pool, never on an event loop or the cooperative pool.
public final class HandoverSocket: @unchecked Sendable {
    // @unchecked: one handover session owns the socket and uses it from one task at a time.
    public let descriptor: CInt
    private var buffer: [UInt8] = []
    private var receivedDescriptors: [CInt] = []
    private var isClosed = false

    /// The most descriptors one message may carry (Linux's SCM_MAX_FD is 253).
    public static let maxDescriptorsPerMessage = 250

    init(descriptor: CInt, timeout: Duration) {
        self.descriptor = descriptor
        var value = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Connects to the upgrade socket at `path`.
    public static func connect(to path: FilePath, timeout: Duration) throws -> HandoverSocket {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HandoverSocketError(call: "socket", errno: errno) }
        var address = try unixAddress(path)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else {
            let error = HandoverSocketError(call: "connect \(path)", errno: errno)
            Glibc.close(fd)
            throw error
        }
        return HandoverSocket(descriptor: fd, timeout: timeout)
    }

    /// The peer's pid and uid, as the kernel recorded them at connect time (SO_PEERCRED).
    public func peerCredentials() throws -> (pid: Int32, uid: UInt32) {
        // `struct ucred` needs _GNU_SOURCE, which Swift's Glibc module does not define; the layout is fixed.
        var credentials = (pid: Int32(0), uid: UInt32(0), gid: UInt32(0))
        var length = socklen_t(MemoryLayout<(Int32, UInt32, UInt32)>.size)
        guard getsockopt(descriptor, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0 else {
            throw HandoverSocketError(call: "getsockopt(SO_PEERCRED)", errno: errno)
        }
        return (credentials.pid, credentials.uid)
    }

    /// Sends one message with its descriptors. The descriptors stay open here; the caller closes its copies.
    public func send(_ message: HandoverMessage) throws(HandoverFailure) {
        let frame = HandoverFrame.encode(message)
        let descriptors = message.descriptors
        precondition(descriptors.count <= Self.maxDescriptorsPerMessage, "split batches before sending")
        var sent = 0
        let controlSize = descriptors.isEmpty ? 0 : cmsgSpace(descriptors.count * MemoryLayout<CInt>.size)
        let control = UnsafeMutableRawPointer.allocate(byteCount: max(controlSize, 1), alignment: MemoryLayout<cmsghdr>.alignment)
        defer { control.deallocate() }
        if controlSize > 0 {
            memset(control, 0, controlSize)
            let header = control.bindMemory(to: cmsghdr.self, capacity: 1)
            header.pointee.cmsg_len = cmsgLength(descriptors.count * MemoryLayout<CInt>.size)
            header.pointee.cmsg_level = SOL_SOCKET
            header.pointee.cmsg_type = Int32(SCM_RIGHTS)
            let data = (control + cmsgAlign(MemoryLayout<cmsghdr>.size)).bindMemory(to: CInt.self, capacity: descriptors.count)
            for (index, fd) in descriptors.enumerated() { data[index] = fd }
        }
        while sent < frame.count {
            let result = frame.withUnsafeBytes { bytes -> Int in
                var iov = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress! + sent), iov_len: frame.count - sent)
                return withUnsafeMutablePointer(to: &iov) { iovPointer in
                    var header = msghdr()
                    header.msg_iov = iovPointer
                    header.msg_iovlen = 1
                    // Descriptors ride with the first byte of the frame only.
                    if sent == 0 && controlSize > 0 {
                        header.msg_control = control
                        header.msg_controllen = controlSize
                    }
                    return sendmsg(descriptor, &header, Int32(MSG_NOSIGNAL))
                }
            }
            if result < 0 {
                if errno == EINTR { continue }
                throw errno == EAGAIN ? .timedOut : .peerGone
            }
            sent += result
        }
    }

    /// Receives the next message, waiting at most the socket's timeout for each read.
    public func receive() throws(HandoverFailure) -> HandoverMessage {
        while true {
            if buffer.count >= HandoverFrame.headerSize {
                let length: Int
                do {
                    length = try HandoverFrame.payloadLength(header: buffer[...])
                } catch {
                    throw .protocolViolation(error.description)
                }
                let total = HandoverFrame.headerSize + length
                if buffer.count >= total {
                    defer { buffer.removeFirst(total) }
                    do {
                        return try HandoverFrame.decode(frame: buffer[..<total], descriptors: &receivedDescriptors)
                    } catch {
                        throw .protocolViolation(error.description)
                    }
                }
            }
            try readMore()
        }
    }

    private func readMore() throws(HandoverFailure) {
        let chunk = 64 * 1024
        let controlSize = cmsgSpace(Self.maxDescriptorsPerMessage * MemoryLayout<CInt>.size)
        let control = UnsafeMutableRawPointer.allocate(byteCount: controlSize, alignment: MemoryLayout<cmsghdr>.alignment)
        defer { control.deallocate() }
        var bytes = [UInt8](repeating: 0, count: chunk)
        var flags: Int32 = 0
        let count = bytes.withUnsafeMutableBytes { raw -> Int in
            var iov = iovec(iov_base: raw.baseAddress, iov_len: chunk)
            return withUnsafeMutablePointer(to: &iov) { iovPointer in
                var header = msghdr()
                header.msg_iov = iovPointer
                header.msg_iovlen = 1
                header.msg_control = control
                header.msg_controllen = controlSize
                var result: Int
                repeat {
                    result = recvmsg(descriptor, &header, Int32(MSG_CMSG_CLOEXEC))
                } while result < 0 && errno == EINTR
                flags = header.msg_flags
                if result >= 0 { collectDescriptors(control: control, length: Int(header.msg_controllen)) }
                return result
            }
        }
        if count < 0 { throw errno == EAGAIN || errno == EWOULDBLOCK ? .timedOut : .peerGone }
        if flags & Int32(MSG_CTRUNC) != 0 { throw .protocolViolation("file descriptors truncated") }
        if count == 0 { throw .peerGone }
        buffer += bytes[..<count]
    }

    private func collectDescriptors(control: UnsafeMutableRawPointer, length: Int) {
        var offset = 0
        let headerSize = MemoryLayout<cmsghdr>.size
        while offset + headerSize <= length {
            let header = (control + offset).bindMemory(to: cmsghdr.self, capacity: 1).pointee
            let messageLength = Int(header.cmsg_len)
            guard messageLength >= headerSize, offset + messageLength <= length else { break }
            if header.cmsg_level == SOL_SOCKET && header.cmsg_type == Int32(SCM_RIGHTS) {
                let dataLength = messageLength - cmsgAlign(headerSize)
                let count = dataLength / MemoryLayout<CInt>.size
                let data = (control + offset + cmsgAlign(headerSize)).bindMemory(to: CInt.self, capacity: count)
                for index in 0..<count { receivedDescriptors.append(data[index]) }
            }
            offset += cmsgAlign(messageLength)
        }
    }

    /// Closes the socket and any descriptors received but not claimed by a message.
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        for fd in receivedDescriptors { Glibc.close(fd) }
        receivedDescriptors = []
        Glibc.close(descriptor)
    }

    deinit { close() }
}

/// The listening end of the upgrade socket: a Unix socket file of mode 0600 in a directory of mode 0700.
public final class HandoverListenerSocket: Sendable {
    public let path: FilePath
    public let descriptor: CInt
    /// The socket file's inode, so that the process only ever removes its own file, never a successor's.
    private let inode: UInt

    /// Binds at `path`, replacing whatever socket file is there in one `rename`, so that a process that connects to
    /// the path finds either the old listener or this one, never nothing.
    public init(path: FilePath) throws {
        self.path = path
        try Self.prepareDirectory(path.removingLastComponent())
        let temporary = FilePath("\(path.string).\(getpid()).tmp")
        unlink(temporary.string)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HandoverSocketError(call: "socket", errno: errno) }
        do {
            var address = try unixAddress(temporary)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard bound == 0 else { throw HandoverSocketError(call: "bind \(temporary)", errno: errno) }
            guard chmod(temporary.string, 0o600) == 0 else { throw HandoverSocketError(call: "chmod", errno: errno) }
            guard listen(fd, 16) == 0 else { throw HandoverSocketError(call: "listen", errno: errno) }
            var info = stat()
            guard stat(temporary.string, &info) == 0 else { throw HandoverSocketError(call: "stat", errno: errno) }
            guard rename(temporary.string, path.string) == 0 else { throw HandoverSocketError(call: "rename to \(path)", errno: errno) }
            inode = UInt(info.st_ino)
            descriptor = fd
        } catch {
            Glibc.close(fd)
            unlink(temporary.string)
            throw error
        }
    }

    /// Creates the directory with mode 0700, or checks that an existing one is ours and closed to others.
    static func prepareDirectory(_ directory: FilePath) throws {
        var info = stat()
        if stat(directory.string, &info) != 0 {
            guard mkdir(directory.string, 0o700) == 0 || errno == EEXIST else {
                throw HandoverSocketError(call: "mkdir \(directory)", errno: errno)
            }
            guard stat(directory.string, &info) == 0 else { throw HandoverSocketError(call: "stat \(directory)", errno: errno) }
        }
        guard info.st_uid == getuid(), info.st_mode & 0o077 == 0 else {
            throw HandoverSocketError(call: "\(directory) must be owned by uid \(getuid()) with mode 0700", errno: EPERM)
        }
    }

    /// Waits up to `timeout` for a connection; `nil` if none came.
    public func accept(timeout: Duration, ioTimeout: Duration) throws -> HandoverSocket? {
        var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        let milliseconds = Int32(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        let ready = poll(&poller, 1, milliseconds)
        guard ready > 0 else { return nil }
        let fd = Glibc.accept(descriptor, nil, nil)
        guard fd >= 0 else {
            if errno == EAGAIN || errno == EINTR || errno == ECONNABORTED { return nil }
            throw HandoverSocketError(call: "accept", errno: errno)
        }
        // accept4 needs _GNU_SOURCE too; a successor spawned in between would at worst inherit this for a moment.
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return HandoverSocket(descriptor: fd, timeout: ioTimeout)
    }

    /// Stops listening and removes the socket file if it is still this one's.
    public func close() {
        var info = stat()
        if stat(path.string, &info) == 0 && UInt(info.st_ino) == inode {
            unlink(path.string)
        }
        Glibc.close(descriptor)
    }
}

private func unixAddress(_ path: FilePath) throws -> sockaddr_un {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.string.utf8)
    let capacity = MemoryLayout.size(ofValue: address.sun_path)
    guard bytes.count < capacity else { throw HandoverSocketError(call: "socket path longer than \(capacity - 1) bytes", errno: ENAMETOOLONG) }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        raw.copyBytes(from: bytes)
    }
    return address
}

// The CMSG_* macros are not imported into Swift; these are their definitions for Linux.
private func cmsgAlign(_ length: Int) -> Int {
    (length + MemoryLayout<Int>.size - 1) & ~(MemoryLayout<Int>.size - 1)
}

private func cmsgSpace(_ dataLength: Int) -> Int {
    cmsgAlign(MemoryLayout<cmsghdr>.size) + cmsgAlign(dataLength)
}

private func cmsgLength(_ dataLength: Int) -> Int {
    cmsgAlign(MemoryLayout<cmsghdr>.size) + dataLength
}
