import Foundation
import RaftCore
import SystemPackage
import Testing

@testable import RaftStorage

/// A fresh directory under /tmp, removed when the value is released.
final class TemporaryDirectory: Sendable {
    let path: FilePath

    init(_ name: String = #function) {
        let base = FileManager.default.temporaryDirectory.path + "/divan-storage-tests"
        try? FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        let template = base + "/" + name.filter { $0.isLetter || $0.isNumber } + "-XXXXXX"
        var bytes = Array(template.utf8CString)
        let made = bytes.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = FilePath(String(cString: made!))
    }

    deinit { try? FileManager.default.removeItem(atPath: path.string) }

    func appending(_ name: String) -> FilePath { path.appending(name) }
}

/// A deterministic payload for (group, index, term), so any reader can check an entry it finds.
func payload(group: RaftGroupID, index: UInt64, term: UInt64, size: Int = 40) -> [UInt8] {
    var state = group &* 0x9E37_79B9_7F4A_7C15 ^ index &* 0xBF58_476D_1CE4_E5B9 ^ term
    return (0..<size).map { _ in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return UInt8(truncatingIfNeeded: state >> 56)
    }
}

func entry(group: RaftGroupID, index: UInt64, term: UInt64 = 1, size: Int = 40) -> Entry {
    Entry(term: term, index: index, payload: .normal(payload(group: group, index: index, term: term, size: size)))
}

func entries(group: RaftGroupID, _ range: ClosedRange<UInt64>, term: UInt64 = 1, size: Int = 40) -> [Entry] {
    range.map { entry(group: group, index: $0, term: term, size: size) }
}

/// Small segments and batches, so tests cross segment boundaries with little data.
func smallOptions(segmentSize: Int = 64 << 10, batch: Int = 8 << 10, cache: Int = 16) -> WriteAheadLogOptions {
    WriteAheadLogOptions(segmentSize: segmentSize, maximumBatchBytes: batch, cachedEntriesPerGroup: cache, log: { _ in })
}

func segmentFiles(_ directory: FilePath) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: directory.string).filter { $0.hasSuffix(".wal") }.sorted()
}

func readFile(_ path: FilePath) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: path.string)))
}

func writeFile(_ path: FilePath, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path.string))
}

/// The error `body` throws, as a `StorageError`; records an issue if it does not throw one.
func storageError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> StorageError? {
    do {
        try body()
        Issue.record("expected a StorageError, but nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as StorageError {
        return error
    } catch {
        Issue.record("expected a StorageError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}
