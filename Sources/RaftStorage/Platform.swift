import Glibc
import SystemPackage

/// A mutex and condition variable guarding one value: the shared state of the WAL and its writer
/// thread. `@unchecked Sendable` is sound because `value` is only touched while `mutex` is held.
final class ConditionLock<Value>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var value: Value

    init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }

    /// Waits, with the lock held, until `isReady` holds; then runs `body` under the same lock.
    func withLock<R, E: Error>(waitingUntil isReady: (Value) -> Bool, _ body: (inout Value) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while !isReady(value) { pthread_cond_wait(condition, mutex) }
        return try body(&value)
    }

    func broadcast() { pthread_cond_broadcast(condition) }
}

/// Starts a detached OS thread. The WAL's writer runs on one so that fdatasync never blocks an
/// event loop or a Swift concurrency thread.
func startThread(_ body: @escaping @Sendable () -> Void) {
    final class Box: @unchecked Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(&thread, nil, { raw in
        let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
        box.body()
        return nil
    }, box)
    precondition(result == 0, "pthread_create failed with \(result)")
    pthread_detach(thread)
}

/// The calling thread's `errno` after a failed system call.
func lastErrno() -> Errno { Errno(rawValue: errno) }

extension Array where Element == UInt8 {
    /// `withUnsafeBytes` for a body that throws `StorageError`, keeping the error's type.
    func withStorageBytes<R>(_ body: (UnsafeRawBufferPointer) throws(StorageError) -> R) throws(StorageError) -> R {
        let result: Result<R, StorageError> = withUnsafeBytes { raw in
            do throws(StorageError) { return .success(try body(raw)) } catch { return .failure(error) }
        }
        return try result.get()
    }
}

/// Thin, throwing wrappers over the file system calls storage needs, each naming the path in its error.
enum FileSystem {
    static func io(_ operation: String, _ path: FilePath, _ errno: Errno) -> StorageError {
        .io(operation: operation, path: path.string, errno: errno)
    }

    static func open(_ path: FilePath, create: Bool = false, readOnly: Bool = false) throws(StorageError) -> FileDescriptor {
        do {
            return try FileDescriptor.open(
                path, readOnly ? .readOnly : .readWrite, options: create ? [.create] : [],
                permissions: create ? [.ownerReadWrite, .groupRead, .otherRead] : nil, retryOnInterrupt: true)
        } catch {
            throw io("open", path, error as? Errno ?? .ioError)
        }
    }

    static func createDirectory(_ path: FilePath) throws(StorageError) {
        let result = path.withPlatformString { mkdir($0, 0o755) }
        if result != 0 && lastErrno() != .fileExists { throw io("mkdir", path, lastErrno()) }
    }

    static func fileExists(_ path: FilePath) -> Bool {
        var info = stat()
        return path.withPlatformString { stat($0, &info) } == 0
    }

    static func isDirectory(_ path: FilePath) -> Bool {
        var info = stat()
        return path.withPlatformString { stat($0, &info) } == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    /// The names in a directory, without "." and "..".
    static func list(_ path: FilePath) throws(StorageError) -> [String] {
        guard let dir = path.withPlatformString({ opendir($0) }) else { throw io("opendir", path, lastErrno()) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Makes a directory's entries (creations, renames, deletions) durable.
    static func syncDirectory(_ path: FilePath) throws(StorageError) {
        let fd = try open(path, readOnly: true)
        defer { try? fd.close() }
        if fsync(fd.rawValue) != 0 { throw io("fsync directory", path, lastErrno()) }
    }

    static func dataSync(_ fd: FileDescriptor, _ path: FilePath) throws(StorageError) {
        if fdatasync(fd.rawValue) != 0 { throw io("fdatasync", path, lastErrno()) }
    }

    static func fullSync(_ fd: FileDescriptor, _ path: FilePath) throws(StorageError) {
        if fsync(fd.rawValue) != 0 { throw io("fsync", path, lastErrno()) }
    }

    /// Reserves `size` bytes so later writes neither allocate blocks nor change the file size, which
    /// keeps fdatasync from having to flush metadata. Falls back to a sparse file where the file
    /// system cannot preallocate.
    static func preallocate(_ fd: FileDescriptor, size: Int, _ path: FilePath) throws(StorageError) {
        let result = posix_fallocate(fd.rawValue, 0, off_t(size))
        if result == 0 { return }
        if result == EOPNOTSUPP || result == EINVAL {
            if ftruncate(fd.rawValue, off_t(size)) != 0 { throw io("ftruncate", path, lastErrno()) }
            return
        }
        throw io("fallocate", path, Errno(rawValue: result))
    }

    static func size(_ fd: FileDescriptor, _ path: FilePath) throws(StorageError) -> Int {
        var info = stat()
        if fstat(fd.rawValue, &info) != 0 { throw io("fstat", path, lastErrno()) }
        return Int(info.st_size)
    }

    static func truncate(_ fd: FileDescriptor, size: Int, _ path: FilePath) throws(StorageError) {
        if ftruncate(fd.rawValue, off_t(size)) != 0 { throw io("ftruncate", path, lastErrno()) }
    }

    static func read(_ fd: FileDescriptor, at offset: Int, count: Int, _ path: FilePath) throws(StorageError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        do {
            try buffer.withUnsafeMutableBytes { raw in
                while done < count {
                    let n = try fd.read(
                        fromAbsoluteOffset: Int64(offset + done),
                        into: UnsafeMutableRawBufferPointer(rebasing: raw[done...]), retryOnInterrupt: true)
                    if n == 0 { break }
                    done += n
                }
            }
        } catch {
            throw io("read", path, error as? Errno ?? .ioError)
        }
        if done < count { buffer.removeSubrange(done...) }
        return buffer
    }

    static func write(_ fd: FileDescriptor, at offset: Int, _ bytes: UnsafeRawBufferPointer, _ path: FilePath) throws(StorageError) {
        do {
            _ = try fd.writeAll(toAbsoluteOffset: Int64(offset), bytes)
        } catch {
            throw io("write", path, error as? Errno ?? .ioError)
        }
    }

    static func rename(_ from: FilePath, to: FilePath) throws(StorageError) {
        let result = from.withPlatformString { a in to.withPlatformString { b in Glibc.rename(a, b) } }
        if result != 0 { throw io("rename to \(to.string)", from, lastErrno()) }
    }

    static func remove(_ path: FilePath) throws(StorageError) {
        if path.withPlatformString({ unlink($0) }) != 0 && lastErrno() != .noSuchFileOrDirectory {
            throw io("unlink", path, lastErrno())
        }
    }

    /// Removes a directory and everything in it (snapshot directories hold only plain files).
    static func removeTree(_ path: FilePath) throws(StorageError) {
        guard isDirectory(path) else { return try remove(path) }
        for name in try list(path) { try removeTree(path.appending(name)) }
        if path.withPlatformString({ rmdir($0) }) != 0 && lastErrno() != .noSuchFileOrDirectory {
            throw io("rmdir", path, lastErrno())
        }
    }

    /// A read-only memory map of a whole file: recovery scans segments in place instead of copying
    /// them into a buffer. Unmapped when released.
    final class MappedFile {
        let bytes: UnsafeRawBufferPointer

        init(_ descriptor: FileDescriptor, size: Int, _ path: FilePath) throws(StorageError) {
            guard size > 0 else {
                bytes = UnsafeRawBufferPointer(start: nil, count: 0)
                return
            }
            let address = mmap(nil, size, PROT_READ, MAP_SHARED, descriptor.rawValue, 0)
            guard let address, address != MAP_FAILED else { throw io("mmap", path, lastErrno()) }
            _ = madvise(address, size, MADV_SEQUENTIAL)
            bytes = UnsafeRawBufferPointer(start: address, count: size)
        }

        deinit {
            if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
        }
    }

    /// A monotonic clock reading in nanoseconds, for durations in reports.
    static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}
