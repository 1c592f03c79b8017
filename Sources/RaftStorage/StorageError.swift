import SystemPackage

/// Why a storage operation failed, and what the caller can do about it.
public enum StorageError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A system call failed. Nothing that was waiting on this write was acknowledged.
    case io(operation: String, path: String, errno: Errno)
    /// The bytes on disk are not what Divan wrote. The node must not start from this log: it never
    /// guesses. Discarding the log and rejoining from peers is the way out (a flag for that may come later).
    case corruption(file: String, offset: Int, expected: String)
    /// An earlier write failed, so the log refuses every write until the process restarts.
    case failed(cause: String)
    /// The request contradicts the log (for example, entries that leave a gap).
    case invalidRequest(group: UInt64, reason: String)
    /// The entries asked for are no longer in the log: they were compacted into a snapshot.
    case compacted(group: UInt64, index: UInt64, firstIndex: UInt64)
    /// The entries asked for are past the end of the log.
    case unavailable(group: UInt64, index: UInt64, lastIndex: UInt64)
    /// The log or store was closed.
    case closed

    /// The file the error is about, if any.
    public var path: String {
        switch self {
        case .io(_, let path, _): return path
        case .corruption(let file, _, _): return file
        default: return ""
        }
    }

    public var description: String {
        switch self {
        case .io(let operation, let path, let errno):
            return "\(operation) failed on \(path): \(errno) (errno \(errno.rawValue))"
        case .corruption(let file, let offset, let expected):
            return "corrupt storage: \(file) at offset \(offset): expected \(expected). Refusing to start from a "
                + "guessed log; discard this node's data and rejoin it from its peers."
        case .failed(let cause):
            return "the write-ahead log refuses writes after an earlier failure: \(cause)"
        case .invalidRequest(let group, let reason):
            return "group \(group): \(reason)"
        case .compacted(let group, let index, let firstIndex):
            return "group \(group): entry \(index) was compacted; the log starts at \(firstIndex)"
        case .unavailable(let group, let index, let lastIndex):
            return "group \(group): entry \(index) is past the last index \(lastIndex)"
        case .closed:
            return "the storage was closed"
        }
    }
}
