import Foundation
import RaftCore
import SystemPackage
import Testing

@testable import RaftStorage

@Suite struct SnapshotStoreTests {
    static let metadata = SnapshotMetadata(index: 120, term: 4, membership: Membership(voters: [1, 2, 3], learners: [9]))

    static func content(_ name: String, size: Int) -> [UInt8] {
        payload(group: UInt64(name.utf8.count), index: UInt64(size), term: 1, size: size)
    }

    private func writeSnapshot(_ store: SnapshotStore, _ metadata: SnapshotMetadata = metadata) throws -> StoredSnapshot {
        let writer = try store.create(metadata: metadata)
        for (name, size) in [("data.sst", 300_000), ("index", 10)] {
            let bytes = Self.content(name, size: size)
            var offset = 0
            while offset < bytes.count {
                let chunk = Array(bytes[offset..<min(bytes.count, offset + 65_536)])
                try writer.write(file: name, at: UInt64(offset), chunk)
                offset += chunk.count
            }
        }
        return try writer.finish()
    }

    @Test func writtenSnapshotsLoadVerified() throws {
        let dir = TemporaryDirectory()
        let store = try SnapshotStore(directory: dir.path)
        let stored = try writeSnapshot(store)
        #expect(stored.manifest.metadata == Self.metadata)
        #expect(stored.manifest.files.map(\.name) == ["data.sst", "index"])
        let latest = try SnapshotStore(directory: dir.path).latest()
        #expect(latest == stored)
        #expect(try latest!.reader.read(file: "index", at: 0, maximumLength: 100) == Self.content("index", size: 10))
    }

    @Test func aFlippedBitInASnapshotFileIsNamed() throws {
        let dir = TemporaryDirectory()
        let store = try SnapshotStore(directory: dir.path)
        let stored = try writeSnapshot(store)
        let path = stored.directory.appending("data.sst")
        var bytes = try readFile(path)
        bytes[150_000] ^= 0x20
        try writeFile(path, bytes)
        let error = storageError { _ = try store.latest() }
        guard case .corruption(let file, _, let expected)? = error else {
            Issue.record("expected corruption, got \(String(describing: error))")
            return
        }
        #expect(file == path.string)
        #expect(expected.contains("CRC32C"))
    }

    @Test func aFlippedBitInTheManifestIsNamed() throws {
        let dir = TemporaryDirectory()
        let store = try SnapshotStore(directory: dir.path)
        let stored = try writeSnapshot(store)
        let path = stored.directory.appending("MANIFEST")
        var bytes = try readFile(path)
        bytes[12] ^= 0x01
        try writeFile(path, bytes)
        let error = storageError { _ = try store.latest() }
        guard case .corruption(let file, _, _)? = error else {
            Issue.record("expected corruption, got \(String(describing: error))")
            return
        }
        #expect(file == path.string)
    }

    @Test func onlyTheLastSnapshotsAreKept() throws {
        let dir = TemporaryDirectory()
        let store = try SnapshotStore(directory: dir.path, retain: 2)
        for index: UInt64 in [10, 20, 30, 40] {
            _ = try writeSnapshot(store, SnapshotMetadata(index: index, term: 1, membership: Self.metadata.membership))
        }
        #expect(try store.list().map(\.metadata.index) == [30, 40])
        #expect(try store.latest()?.manifest.metadata.index == 40)
    }

    /// A transfer in chunks, interrupted (the receiving store reopened), resumes from the offsets
    /// on disk and is verified against the sender's manifest on completion.
    @Test func receivingResumesAndVerifies() throws {
        let senderDir = TemporaryDirectory("sender")
        let receiverDir = TemporaryDirectory("receiver")
        let sent = try writeSnapshot(try SnapshotStore(directory: senderDir.path))
        let reader = sent.reader
        do {
            let writer = try SnapshotStore(directory: receiverDir.path).receive(sent.manifest)
            let chunk = try reader.read(file: "data.sst", at: 0, maximumLength: 100_000)
            try writer.write(file: "data.sst", at: 0, chunk)
        }
        let writer = try SnapshotStore(directory: receiverDir.path).receive(sent.manifest)
        #expect(try writer.resumeOffset(of: "data.sst") == 100_000)
        #expect(throws: StorageError.self) { try writer.write(file: "data.sst", at: 0, [1]) }
        for file in sent.manifest.files {
            var offset = try writer.resumeOffset(of: file.name)
            while true {
                let chunk = try reader.read(file: file.name, at: offset, maximumLength: 70_000)
                if chunk.isEmpty { break }
                try writer.write(file: file.name, at: offset, chunk)
                offset += UInt64(chunk.count)
            }
        }
        let received = try writer.finish()
        #expect(received.manifest == sent.manifest)
        #expect(try SnapshotStore(directory: receiverDir.path).latest()?.manifest == sent.manifest)
    }

    @Test func aCorruptReceivedSnapshotIsRejectedAndDiscarded() throws {
        let senderDir = TemporaryDirectory("sender")
        let receiverDir = TemporaryDirectory("receiver")
        let sent = try writeSnapshot(try SnapshotStore(directory: senderDir.path))
        let store = try SnapshotStore(directory: receiverDir.path)
        let writer = try store.receive(sent.manifest)
        for file in sent.manifest.files {
            var bytes = try sent.reader.read(file: file.name, at: 0, maximumLength: Int(file.size))
            if file.name == "index" { bytes[3] ^= 0xFF }
            try writer.write(file: file.name, at: 0, bytes)
        }
        let error = storageError { _ = try writer.finish() }
        #expect(error?.description.contains("index") == true)
        #expect(try store.latest() == nil)
        #expect(try writer.resumeOffset(of: "data.sst") == 0)
    }
}
