import Checksum
import RaftCore
import SystemPackage

/// What a snapshot holds: its Raft metadata and every file with its size and CRC32C. It is written
/// last, so a snapshot directory with a valid manifest is complete.
public struct SnapshotManifest: Sendable, Hashable {
    /// One file of a snapshot.
    public struct File: Sendable, Hashable {
        public var name: String
        public var size: UInt64
        public var checksum: UInt32

        public init(name: String, size: UInt64, checksum: UInt32) {
            self.name = name
            self.size = size
            self.checksum = checksum
        }
    }

    public var metadata: SnapshotMetadata
    public var files: [File]

    public init(metadata: SnapshotMetadata, files: [File]) {
        self.metadata = metadata
        self.files = files
    }

    static let magic: [UInt8] = Array("DIVANSNP".utf8)
    static let version: UInt32 = 1
}

extension SnapshotManifest: BinaryCodable {
    /// Magic, version, metadata, files, then a CRC32C of everything before it.
    public func encode(to writer: inout ByteWriter) {
        let start = writer.count
        writer.writeRaw(Self.magic)
        writer.write(Self.version)
        metadata.encode(to: &writer)
        writer.writeVarint(UInt64(files.count))
        for file in files {
            writer.writeLengthPrefixed(Array(file.name.utf8))
            writer.writeVarint(file.size)
            writer.write(file.checksum)
        }
        writer.write(CRC32C.checksum(writer.bytes[start...]))
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        let start = reader.offset
        let magic = try reader.readRaw(8, "manifest magic")
        guard magic.elementsEqual(Self.magic) else { throw CodecError(offset: start, expected: "manifest magic \"DIVANSNP\"") }
        let versionOffset = reader.offset
        let version = try reader.readUInt32("manifest version")
        guard version == Self.version else {
            throw CodecError(offset: versionOffset, expected: "manifest format version \(Self.version), found \(version)")
        }
        let metadata = try SnapshotMetadata(from: &reader)
        let count = try reader.readCount("snapshot files", minimumElementSize: 6)
        var files: [File] = []
        for _ in 0..<count {
            let name = String(decoding: try reader.readLengthPrefixed("file name"), as: UTF8.self)
            let size = try reader.readVarint("file size")
            files.append(File(name: name, size: size, checksum: try reader.readUInt32("file checksum")))
        }
        let computed = CRC32C.checksum(reader.bytesRead(since: start))
        let checksumOffset = reader.offset
        let stored = try reader.readUInt32("manifest checksum")
        guard stored == computed else {
            throw CodecError(offset: checksumOffset, expected: "manifest CRC32C \(computed), found \(stored)")
        }
        self.init(metadata: metadata, files: files)
    }
}

/// A complete, verified snapshot on disk.
public struct StoredSnapshot: Sendable, Hashable {
    public var manifest: SnapshotManifest
    public var directory: FilePath

    /// Reads the snapshot's files in chunks, for sending to a follower.
    public var reader: SnapshotReader { SnapshotReader(directory: directory, manifest: manifest) }
}

/// Reads a snapshot's files in chunks from any offset, so a transfer can resume where it stopped
/// and a large snapshot never sits in memory.
public struct SnapshotReader: Sendable {
    public let directory: FilePath
    public let manifest: SnapshotManifest

    /// Up to `maximumLength` bytes of `file` from `offset`; empty at the end of the file.
    public func read(file name: String, at offset: UInt64, maximumLength: Int) throws(StorageError) -> [UInt8] {
        guard let file = manifest.files.first(where: { $0.name == name }) else {
            throw StorageError.invalidRequest(group: 0, reason: "snapshot has no file named \(name)")
        }
        guard offset < file.size else { return [] }
        let path = directory.appending(name)
        let descriptor = try FileSystem.open(path, readOnly: true)
        defer { try? descriptor.close() }
        return try FileSystem.read(descriptor, at: Int(offset), count: min(maximumLength, Int(file.size - offset)), path)
    }
}

/// Writes a snapshot's files in chunks into a temporary directory; `finish` verifies, syncs and
/// renames it into place. Used both to create a snapshot locally and to receive one from a leader.
public final class SnapshotWriter: Sendable {
    let store: SnapshotStore
    public let metadata: SnapshotMetadata
    /// For a received snapshot: the sender's manifest, which the written files must match.
    public let expected: SnapshotManifest?
    public let directory: FilePath

    init(store: SnapshotStore, metadata: SnapshotMetadata, expected: SnapshotManifest?, directory: FilePath) {
        self.store = store
        self.metadata = metadata
        self.expected = expected
        self.directory = directory
    }

    /// How many bytes of `file` are already written: where a resumed transfer continues.
    public func resumeOffset(of name: String) throws(StorageError) -> UInt64 {
        let path = directory.appending(try SnapshotStore.checkedName(name))
        guard FileSystem.fileExists(path) else { return 0 }
        let descriptor = try FileSystem.open(path, readOnly: true)
        defer { try? descriptor.close() }
        return UInt64(try FileSystem.size(descriptor, path))
    }

    /// Writes a chunk of `file` at `offset`, which must be where the file currently ends
    /// (`resumeOffset(of:)`), so that chunks can neither leave a gap nor overlap.
    public func write(file name: String, at offset: UInt64, _ bytes: [UInt8]) throws(StorageError) {
        let path = directory.appending(try SnapshotStore.checkedName(name))
        if let expected, !expected.files.contains(where: { $0.name == name }) {
            throw StorageError.invalidRequest(group: 0, reason: "snapshot file \(name) is not in the sender's manifest")
        }
        let current = try resumeOffset(of: name)
        guard offset == current else {
            throw StorageError.invalidRequest(group: 0, reason: "chunk of \(name) at offset \(offset), but the file ends at \(current)")
        }
        let descriptor = try FileSystem.open(path, create: true)
        defer { try? descriptor.close() }
        try bytes.withStorageBytes { raw throws(StorageError) in try FileSystem.write(descriptor, at: Int(offset), raw, path) }
    }

    /// Checks every file (against the sender's manifest when receiving), syncs the files and the
    /// directory, writes the manifest, and renames the directory into place. Older snapshots beyond
    /// the store's retention are deleted.
    public func finish() throws(StorageError) -> StoredSnapshot {
        try store.finish(self)
    }

    /// Throws away what was written.
    public func abort() throws(StorageError) {
        try FileSystem.removeTree(directory)
    }
}

/// Keeps a group's snapshots as directories (`snapshot-<index>-<term>`), each with a manifest
/// written after its files are synced, and the last `retain` of them.
public final class SnapshotStore: Sendable {
    public let directory: FilePath
    public let retain: Int
    static let manifestName = "MANIFEST"

    /// Opens the store, removing half-created snapshots a crash left behind. Half-received ones stay,
    /// so a transfer can resume, unless a newer snapshot made them useless.
    public init(directory: FilePath, retain: Int = 2) throws(StorageError) {
        self.directory = directory
        self.retain = max(1, retain)
        try FileSystem.createDirectory(directory)
        let newest = try snapshotNames().last.flatMap(Self.position)?.index ?? 0
        for name in try FileSystem.list(directory) {
            let isStale = name.hasPrefix("creating-")
                || (name.hasPrefix("receiving-") && (Self.position(name)?.index ?? 0) <= newest)
            if isStale { try FileSystem.removeTree(directory.appending(name)) }
        }
    }

    /// Starts writing a snapshot taken locally.
    public func create(metadata: SnapshotMetadata) throws(StorageError) -> SnapshotWriter {
        let temporary = directory.appending("creating-" + Self.suffix(metadata) + "-\(FileSystem.monotonicNanoseconds())")
        try FileSystem.removeTree(temporary)
        try FileSystem.createDirectory(temporary)
        return SnapshotWriter(store: self, metadata: metadata, expected: nil, directory: temporary)
    }

    /// Starts (or resumes) receiving a snapshot whose manifest the sender sent first.
    public func receive(_ manifest: SnapshotManifest) throws(StorageError) -> SnapshotWriter {
        for file in manifest.files { _ = try Self.checkedName(file.name) }
        let temporary = directory.appending("receiving-" + Self.suffix(manifest.metadata))
        try FileSystem.createDirectory(temporary)
        return SnapshotWriter(store: self, metadata: manifest.metadata, expected: manifest, directory: temporary)
    }

    /// The newest snapshot, verified; nil if there is none.
    public func latest() throws(StorageError) -> StoredSnapshot? {
        guard let name = try snapshotNames().last else { return nil }
        return try load(directory.appending(name))
    }

    /// The complete snapshot at `index` and `term`, from its manifest alone, or nil if the store
    /// does not hold it. Its files are not read: they were verified when written, and a receiver
    /// verifies them again, so a leader can serve chunks without rereading the whole snapshot.
    public func snapshot(index: UInt64, term: UInt64) throws(StorageError) -> StoredSnapshot? {
        let path = directory.appending("snapshot-" + Self.hex16(index) + "-" + Self.hex16(term))
        guard FileSystem.fileExists(path.appending(Self.manifestName)) else { return nil }
        return StoredSnapshot(manifest: try readManifest(path), directory: path)
    }

    /// Every stored snapshot's metadata, oldest first (read from manifests, files not verified).
    public func list() throws(StorageError) -> [SnapshotManifest] {
        var manifests: [SnapshotManifest] = []
        for name in try snapshotNames() { manifests.append(try readManifest(directory.appending(name))) }
        return manifests
    }

    /// Loads a snapshot and verifies every file's size and CRC32C against its manifest.
    public func load(_ path: FilePath) throws(StorageError) -> StoredSnapshot {
        let manifest = try readManifest(path)
        try Self.verify(directory: path, against: manifest.files)
        return StoredSnapshot(manifest: manifest, directory: path)
    }

    // MARK: Internals

    func finish(_ writer: SnapshotWriter) throws(StorageError) -> StoredSnapshot {
        let names = try FileSystem.list(writer.directory).filter { $0 != Self.manifestName }
        var files: [SnapshotManifest.File] = []
        for name in names {
            let path = writer.directory.appending(name)
            let descriptor = try FileSystem.open(path)
            defer { try? descriptor.close() }
            try FileSystem.fullSync(descriptor, path)
            let (size, checksum) = try Self.checksum(descriptor, path)
            files.append(SnapshotManifest.File(name: name, size: size, checksum: checksum))
        }
        if let expected = writer.expected {
            do throws(StorageError) {
                try Self.verify(directory: writer.directory, against: expected.files)
            } catch {
                // A resumed transfer must start over from a clean directory rather than append to bad bytes.
                try writer.abort()
                throw error
            }
            files = expected.files
        }
        let manifest = SnapshotManifest(metadata: writer.metadata, files: files)
        let manifestPath = writer.directory.appending(Self.manifestName)
        let descriptor = try FileSystem.open(manifestPath, create: true)
        defer { try? descriptor.close() }
        try FileSystem.truncate(descriptor, size: 0, manifestPath)
        try manifest.encodedBytes().withStorageBytes { raw throws(StorageError) in
            try FileSystem.write(descriptor, at: 0, raw, manifestPath)
        }
        try FileSystem.fullSync(descriptor, manifestPath)
        try FileSystem.syncDirectory(writer.directory)
        let final = directory.appending("snapshot-" + Self.suffix(writer.metadata))
        try FileSystem.removeTree(final)
        try FileSystem.rename(writer.directory, to: final)
        try FileSystem.syncDirectory(directory)
        try prune()
        return StoredSnapshot(manifest: manifest, directory: final)
    }

    private func prune() throws(StorageError) {
        let names = try snapshotNames()
        for name in names.dropLast(retain) { try FileSystem.removeTree(directory.appending(name)) }
        if names.count > retain { try FileSystem.syncDirectory(directory) }
    }

    private func readManifest(_ snapshot: FilePath) throws(StorageError) -> SnapshotManifest {
        let path = snapshot.appending(Self.manifestName)
        let descriptor = try FileSystem.open(path, readOnly: true)
        defer { try? descriptor.close() }
        let bytes = try FileSystem.read(descriptor, at: 0, count: try FileSystem.size(descriptor, path), path)
        do {
            return try SnapshotManifest(decoding: bytes)
        } catch {
            throw StorageError.corruption(file: path.string, offset: error.offset, expected: error.expected)
        }
    }

    static func verify(directory: FilePath, against files: [SnapshotManifest.File]) throws(StorageError) {
        for file in files {
            let path = directory.appending(file.name)
            guard FileSystem.fileExists(path) else {
                throw StorageError.corruption(file: path.string, offset: 0, expected: "a snapshot file of \(file.size) bytes; it is missing")
            }
            let descriptor = try FileSystem.open(path, readOnly: true)
            defer { try? descriptor.close() }
            let (size, checksum) = try checksum(descriptor, path)
            guard size == file.size else {
                throw StorageError.corruption(file: path.string, offset: Int(min(size, file.size)), expected: "\(file.size) bytes, found \(size)")
            }
            guard checksum == file.checksum else {
                throw StorageError.corruption(
                    file: path.string, offset: 0,
                    expected: "CRC32C \(SegmentFormat.hex(file.checksum)) over the file, found \(SegmentFormat.hex(checksum))")
            }
        }
    }

    private static func checksum(_ descriptor: FileDescriptor, _ path: FilePath) throws(StorageError) -> (UInt64, UInt32) {
        var crc = CRC32C()
        var offset = 0
        while true {
            let chunk = try FileSystem.read(descriptor, at: offset, count: 1 << 20, path)
            if chunk.isEmpty { break }
            crc.update(chunk)
            offset += chunk.count
        }
        return (UInt64(offset), crc.value)
    }

    static func checkedName(_ name: String) throws(StorageError) -> String {
        guard !name.isEmpty, name != ".", name != "..", name != manifestName, !name.contains("/"), !name.contains("\0") else {
            throw StorageError.invalidRequest(group: 0, reason: "\"\(name)\" is not a valid snapshot file name")
        }
        return name
    }

    private static func suffix(_ metadata: SnapshotMetadata) -> String {
        hex16(metadata.index) + "-" + hex16(metadata.term)
    }

    private static func hex16(_ value: UInt64) -> String {
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// The index and term encoded in a snapshot (or temporary) directory's name.
    static func position(_ name: String) -> (index: UInt64, term: UInt64)? {
        let parts = name.split(separator: "-")
        guard parts.count >= 3, let index = UInt64(parts[1], radix: 16), let term = UInt64(parts[2], radix: 16) else { return nil }
        return (index, term)
    }

    /// Complete snapshot directories, oldest first.
    private func snapshotNames() throws(StorageError) -> [String] {
        try FileSystem.list(directory).filter { $0.hasPrefix("snapshot-") && Self.position($0) != nil }
            .sorted { Self.position($0)! < Self.position($1)! }
    }
}
