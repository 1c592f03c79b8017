import Foundation
import RaftCore
import SystemPackage
import Testing

@testable import RaftStorage

@Suite struct WriteAheadLogTests {
    @Test func appendsReadBackAndSurviveRestart() async throws {
        let dir = TemporaryDirectory()
        do {
            let log = try WriteAheadLog(directory: dir.path, options: smallOptions())
            try await log.append(group: 1, entries: entries(group: 1, 1...50), hardState: HardState(term: 1, vote: 2, commit: 10))
            try await log.append(group: 2, entries: entries(group: 2, 1...5))
            #expect(try log.entries(group: 1, in: 1..<51) == entries(group: 1, 1...50))
            #expect(log.state(of: 1)?.lastIndex == 50)
            log.close()
        }
        let log = try WriteAheadLog(directory: dir.path, options: smallOptions())
        #expect(log.recovery.tornTail == nil)
        #expect(try log.entries(group: 1, in: 1..<51) == entries(group: 1, 1...50))
        #expect(try log.entries(group: 2, in: 2..<4) == entries(group: 2, 2...3))
        #expect(log.state(of: 1) == GroupLogState(
            firstIndex: 1, lastIndex: 50, lastTerm: 1, snapshotIndex: 0, snapshotTerm: 0,
            hardState: HardState(term: 1, vote: 2, commit: 10)))
        #expect(try log.entries(group: 1, in: 1..<51, maximumBytes: 200).count == 3)
    }

    /// A follower catching up can be handed more entries in one Ready than one batch holds (the
    /// one-hour chaos run stopped a region's group on "a write of 4509339 bytes exceeds the maximum
    /// batch"): the log writes them in several batches, with the hard state in the last.
    @Test func aWriteLargerThanOneBatchGoesInSeveral() async throws {
        let dir = TemporaryDirectory()
        let many = entries(group: 1, 1...600, size: 100)
        let hardState = HardState(term: 1, vote: 2, commit: 600)
        do {
            let log = try WriteAheadLog(directory: dir.path, options: smallOptions())
            try await log.write([LogWrite(group: 1, entries: many, hardState: hardState), LogWrite(group: 2, entries: entries(group: 2, 1...3))])
            #expect(try log.entries(group: 1, in: 1..<601) == many)
            log.close()
        }
        let log = try WriteAheadLog(directory: dir.path, options: smallOptions())
        #expect(try log.entries(group: 1, in: 1..<601) == many)
        #expect(try log.entries(group: 2, in: 1..<4) == entries(group: 2, 1...3))
        #expect(log.state(of: 1)?.hardState == hardState)
        let batches = WALCore.batches(of: [LogWrite(group: 1, entries: many, hardState: hardState)], budget: 4 << 10)
        #expect(batches.count > 10)
        #expect(batches.dropLast().allSatisfy { $0.allSatisfy { $0.hardState == nil } })
        #expect(batches.last?.last?.hardState == hardState)
        #expect(batches.flatMap { $0.flatMap(\.entries) } == many)
    }

    /// A commit index that moved alone is written without an fdatasync of its own: the next durable
    /// write syncs it, deferred bytes never add up to more than a batch unsynced, and close syncs the rest.
    @Test func deferredWritesRideOnTheNextSync() async throws {
        let dir = TemporaryDirectory()
        let last = HardState(term: 1, vote: 2, commit: 400)
        do {
            let log = try WriteAheadLog(directory: dir.path, options: smallOptions(batch: 2 << 10))
            try await log.append(group: 1, entries: entries(group: 1, 1...5))
            let synced = log.statistics.syncs
            try await log.enqueue([LogWrite(group: 1, hardState: HardState(term: 1, vote: 2, commit: 5))], sync: .deferred).wait()
            #expect(log.statistics.syncs == synced)
            #expect(log.state(of: 1)?.hardState?.commit == 5)
            try await log.append(group: 1, entries: entries(group: 1, 6...6))
            #expect(log.statistics.syncs == synced + 1)
            // About 20 bytes each: 400 of them pass the 2 KiB batch limit a few times.
            for commit in UInt64(1)...400 {
                try await log.enqueue([LogWrite(group: 2, hardState: HardState(term: 1, vote: 2, commit: commit))], sync: .deferred).wait()
            }
            let forced = log.statistics.syncs - synced - 1
            #expect((1...10).contains(forced), "deferred writes synced \(forced) times")
            try await log.enqueue([LogWrite(group: 1, hardState: last)], sync: .deferred).wait()
            log.close()
        }
        let log = try WriteAheadLog(directory: dir.path, options: smallOptions(batch: 2 << 10))
        #expect(log.recovery.tornTail == nil)
        #expect(log.state(of: 1)?.hardState == last)
        #expect(log.state(of: 2)?.hardState?.commit == 400)
    }

    /// Deferred records are synced before the writer moves on to a new segment: recovery accepts a
    /// torn tail only in the last segment. Two 1.5 KB entries and a deferred hard state fill most of a
    /// 4 KiB segment, so the third entry starts the next one: one sync for the deferred record, one
    /// for the entry.
    @Test func deferredWritesAreSyncedBeforeANewSegment() async throws {
        let dir = TemporaryDirectory()
        let log = try WriteAheadLog(directory: dir.path, options: smallOptions(segmentSize: 4 << 10, batch: 2 << 10))
        try await log.append(group: 1, entries: entries(group: 1, 1...1, size: 1500))
        try await log.append(group: 1, entries: entries(group: 1, 2...2, size: 1500))
        try await log.enqueue([LogWrite(group: 1, hardState: HardState(term: 1, vote: 2, commit: 2))], sync: .deferred).wait()
        let segments = try segmentFiles(dir.path).count
        let synced = log.statistics.syncs
        try await log.append(group: 1, entries: entries(group: 1, 3...3, size: 1500))
        #expect(try segmentFiles(dir.path).count == segments + 1)
        #expect(log.statistics.syncs == synced + 2)
        log.close()
    }

    @Test func newEntriesReplaceTheSuffix() async throws {
        let dir = TemporaryDirectory()
        do {
            let log = try WriteAheadLog(directory: dir.path, options: smallOptions())
            try await log.append(group: 1, entries: entries(group: 1, 1...10))
            try await log.append(group: 1, entries: entries(group: 1, 5...7, term: 2))
            #expect(log.state(of: 1)?.lastIndex == 7)
            #expect(try log.entries(group: 1, in: 1..<8) == entries(group: 1, 1...4) + entries(group: 1, 5...7, term: 2))
            let gap = await #expect(throws: StorageError.self) { try await log.append(group: 1, entries: entries(group: 1, 9...9)) }
            #expect(gap?.description.contains("gap") == true)
            log.close()
        }
        let log = try WriteAheadLog(directory: dir.path, options: smallOptions())
        #expect(try log.entries(group: 1, in: 1..<8) == entries(group: 1, 1...4) + entries(group: 1, 5...7, term: 2))
        #expect(throws: StorageError.self) { try log.entries(group: 1, in: 1..<9) }
    }

    @Test func snapshotReplacesTheLogAndCompactionDropsAPrefix() async throws {
        let dir = TemporaryDirectory()
        let membership = Membership(voters: [1, 2, 3])
        do {
            let log = try WriteAheadLog(directory: dir.path, options: smallOptions())
            try await log.append(group: 1, entries: entries(group: 1, 1...20))
            try await log.compact(group: 1, through: 8)
            #expect(log.state(of: 1)?.firstIndex == 9)
            #expect(log.term(group: 1, at: 8) == 1)
            #expect(throws: StorageError.compacted(group: 1, index: 8, firstIndex: 9)) { try log.entries(group: 1, in: 8..<10) }
            try await log.append(group: 2, entries: entries(group: 2, 1...30))
            try await log.applySnapshot(group: 2, metadata: SnapshotMetadata(index: 25, term: 3, membership: membership))
            #expect(log.state(of: 2)?.lastIndex == 25)
            #expect(log.state(of: 2)?.lastTerm == 3)
            try await log.append(group: 2, entries: entries(group: 2, 26...27, term: 3))
            log.close()
        }
        let log = try WriteAheadLog(directory: dir.path, options: smallOptions())
        #expect(log.state(of: 1)?.firstIndex == 9)
        #expect(try log.entries(group: 1, in: 9..<21) == entries(group: 1, 9...20))
        #expect(log.state(of: 2) == GroupLogState(
            firstIndex: 26, lastIndex: 27, lastTerm: 3, snapshotIndex: 25, snapshotTerm: 3, hardState: nil))
    }

    /// Many tasks over many groups: every append is durable on return, and group commit merges them.
    @Test func manyGroupsAppendConcurrently() async throws {
        let dir = TemporaryDirectory()
        let groups: [RaftGroupID] = Array(1...64)
        let rounds: UInt64 = 20
        do {
            let log = try WriteAheadLog(directory: dir.path, options: smallOptions(segmentSize: 256 << 10))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for group in groups {
                    tasks.addTask {
                        for round in 0..<rounds {
                            let first = round * 3 + 1
                            try await log.append(
                                group: group, entries: entries(group: group, first...first + 2),
                                hardState: HardState(term: 1, vote: group, commit: first))
                        }
                    }
                }
                try await tasks.waitForAll()
            }
            let statistics = log.statistics
            #expect(statistics.writes == groups.count * Int(rounds))
            #expect(statistics.syncs < statistics.writes, "group commit merged no writes: \(statistics)")
            log.close()
        }
        let log = try WriteAheadLog(directory: dir.path, options: smallOptions(segmentSize: 256 << 10))
        for group in groups {
            #expect(try log.entries(group: group, in: 1..<(rounds * 3 + 1)) == entries(group: group, 1...rounds * 3))
            #expect(log.state(of: group)?.hardState == HardState(term: 1, vote: group, commit: (rounds - 1) * 3 + 1))
        }
    }

    @Test func restartWithThousandsOfGroups() async throws {
        let dir = TemporaryDirectory()
        let count: RaftGroupID = 5000
        var expected: [RaftGroupID: GroupLogState] = [:]
        do {
            let log = try WriteAheadLog(directory: dir.path, options: WriteAheadLogOptions(log: { _ in }))
            for chunk in stride(from: RaftGroupID(1), through: count, by: 500) {
                let writes = (chunk..<chunk + 500).map { group in
                    LogWrite(group: group, entries: entries(group: group, 1...3, size: 20), hardState: HardState(term: 1, vote: 1, commit: 2))
                }
                try await log.write(writes)
            }
            try await log.compact(group: 7, through: 2)
            expected = log.groupStates()
            log.close()
        }
        let log = try WriteAheadLog(directory: dir.path, options: WriteAheadLogOptions(log: { _ in }))
        #expect(log.recovery.groups == Int(count))
        #expect(log.groupStates() == expected)
        #expect(try log.entries(group: count, in: 1..<4) == entries(group: count, 1...3, size: 20))
        try await log.append(group: count, entries: [entry(group: count, index: 4)])
    }

    /// Compaction makes old segments dead; purge deletes them, copying the little that is live
    /// (an idle group's entries, hard states) forward; a restart sees the same log.
    @Test func purgeDeletesDeadSegmentsAndRewritesLiveData() async throws {
        let dir = TemporaryDirectory()
        let options = smallOptions(segmentSize: 32 << 10, batch: 4 << 10)
        var before: [RaftGroupID: GroupLogState] = [:]
        do {
            let log = try WriteAheadLog(directory: dir.path, options: options)
            try await log.append(group: 99, entries: entries(group: 99, 1...3), hardState: HardState(term: 1, vote: 99, commit: 1))
            for first in stride(from: UInt64(1), to: 2000, by: 10) {
                for group: RaftGroupID in 1...3 {
                    try await log.append(group: group, entries: entries(group: group, first...first + 9), hardState: HardState(term: 1, commit: first))
                }
            }
            let segmentsBefore = try segmentFiles(dir.path).count
            #expect(segmentsBefore > 10)
            for group: RaftGroupID in 1...3 { try await log.compact(group: group, through: 1950) }
            let report = try await log.purge()
            #expect(report.deletedSegments.count >= segmentsBefore - 3, "\(report)")
            #expect(report.rewrittenEntries >= 3)
            #expect(try segmentFiles(dir.path).count <= segmentsBefore - report.deletedSegments.count + 1)
            #expect(try log.entries(group: 99, in: 1..<4) == entries(group: 99, 1...3))
            try await log.append(group: 99, entries: [entry(group: 99, index: 4)])
            before = log.groupStates()
            log.close()
        }
        let log = try WriteAheadLog(directory: dir.path, options: options)
        #expect(log.groupStates() == before)
        #expect(try log.entries(group: 99, in: 1..<5) == entries(group: 99, 1...4))
        #expect(try log.entries(group: 2, in: 1951..<2001) == entries(group: 2, 1951...2000))
        #expect(log.state(of: 99)?.hardState == HardState(term: 1, vote: 99, commit: 1))
    }

    /// A group's old entries are copied to the head of the log after its newer ones: recovery
    /// meets the newer entries first and must leave room for the copies.
    @Test func rewrittenEntriesMayFollowNewerOnes() async throws {
        let dir = TemporaryDirectory()
        let options = smallOptions(segmentSize: 16 << 10, batch: 4 << 10)
        do {
            let log = try WriteAheadLog(directory: dir.path, options: options)
            try await log.append(group: 1, entries: entries(group: 1, 1...10))
            for first in stride(from: UInt64(1), to: 1000, by: 20) {
                try await log.append(group: 2, entries: entries(group: 2, first...first + 19))
            }
            try await log.append(group: 1, entries: entries(group: 1, 11...20))
            for first in stride(from: UInt64(1001), to: 1200, by: 20) {
                try await log.append(group: 2, entries: entries(group: 2, first...first + 19))
            }
            // Group 2's newest entries stay live, so the segment holding group 1's entries 11...20
            // survives the purge while the older ones (with 1...10) are deleted.
            try await log.compact(group: 2, through: 1000)
            let report = try await log.purge()
            #expect(report.rewrittenEntries >= 10, "\(report)")
            log.close()
        }
        let log = try WriteAheadLog(directory: dir.path, options: options)
        #expect(try log.entries(group: 1, in: 1..<21) == entries(group: 1, 1...20))
    }

    /// Purges run while many groups append, truncate and compact; the log read back after a
    /// restart is the log the writers built.
    @Test func purgesConcurrentWithWritersKeepEveryLog() async throws {
        let dir = TemporaryDirectory()
        var options = smallOptions(segmentSize: 16 << 10, batch: 4 << 10)
        options.purgeLiveRatio = 0.5
        var before: [RaftGroupID: GroupLogState] = [:]
        do {
            let log = try WriteAheadLog(directory: dir.path, options: options)
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for group: RaftGroupID in 1...12 {
                    tasks.addTask {
                        var last: UInt64 = 0
                        for round in 0..<60 {
                            // Every seventh round overwrites the last two entries with a newer term.
                            let first = round % 7 == 6 && last > 2 ? last - 1 : last + 1
                            let term: UInt64 = round % 7 == 6 ? 2 : 1
                            try await log.append(group: group, entries: entries(group: group, first...first + 4, term: term))
                            last = first + 4
                            // Two groups in three compact as they go; the others keep everything, pinning old segments.
                            if group % 3 != 0 && round % 10 == 9 { try await log.compact(group: group, through: last - 3) }
                        }
                    }
                }
                tasks.addTask {
                    for _ in 0..<20 { try await log.purge() }
                }
                try await tasks.waitForAll()
            }
            try await log.purge()
            #expect(try segmentFiles(dir.path).first != SegmentFormat.fileName(sequence: 1), "no segment was purged")
            before = log.groupStates()
            for group: RaftGroupID in 1...12 {
                let state = before[group]!
                #expect(try log.entries(group: group, in: state.firstIndex..<state.lastIndex + 1).count == Int(state.lastIndex - state.firstIndex + 1))
            }
            log.close()
        }
        let log = try WriteAheadLog(directory: dir.path, options: options)
        #expect(log.groupStates() == before)
        for group: RaftGroupID in 1...12 {
            let state = before[group]!
            let read = try log.entries(group: group, in: state.firstIndex..<state.lastIndex + 1)
            #expect(read.map(\.index) == Array(state.firstIndex...state.lastIndex))
            for entry in read {
                #expect(entry == RaftStorageTests.entry(group: group, index: entry.index, term: entry.term))
            }
        }
    }

    /// A purge twice over, with a truncation between: rewritten entries that arrive in the log
    /// after later ones still rebuild the right log.
    @Test func repeatedPurgesKeepTruncationsRight() async throws {
        let dir = TemporaryDirectory()
        let options = WriteAheadLogOptions(
            segmentSize: 16 << 10, maximumBatchBytes: 4 << 10, cachedEntriesPerGroup: 4, purgeLiveRatio: 0.6, log: { _ in })
        var before: [RaftGroupID: GroupLogState] = [:]
        do {
            let log = try WriteAheadLog(directory: dir.path, options: options)
            try await log.append(group: 5, entries: entries(group: 5, 1...30))
            for first in stride(from: UInt64(1), to: 600, by: 20) {
                try await log.append(group: 1, entries: entries(group: 1, first...first + 19))
                try await log.compact(group: 1, through: first)
            }
            try await log.purge()
            try await log.append(group: 5, entries: entries(group: 5, 20...25, term: 2))
            for first in stride(from: UInt64(601), to: 1200, by: 20) {
                try await log.append(group: 1, entries: entries(group: 1, first...first + 19))
                try await log.compact(group: 1, through: first)
            }
            try await log.purge()
            before = log.groupStates()
            log.close()
        }
        let log = try WriteAheadLog(directory: dir.path, options: options)
        #expect(log.groupStates() == before)
        #expect(try log.entries(group: 5, in: 1..<26) == entries(group: 5, 1...19) + entries(group: 5, 20...25, term: 2))
    }
}
