import DivanServer
import Foundation
import Testing

/// Five `divan server` processes: three founders and two that join. Under a steady write load the
/// group grows from 3 to 5 voters (joint consensus) and shrinks back; no acknowledged write is lost.
@Suite(.serialized) struct MembershipProcessTests {
    @Test func growingToFiveVotersAndBackLosesNoAcknowledgedWrite() async throws {
        let servers = try Servers()
        for id in 1...3 { try servers.start(id, joining: false) }
        for id in 4...5 { try servers.start(id, joining: true) }
        try await servers.waitUntil { await servers.leader() != nil }

        var acknowledged: [String: String] = [:]
        var next = 0
        func writeSome(_ count: Int) async {
            for _ in 0..<count {
                next += 1
                guard let leader = await servers.leader(),
                      let (status, _) = await servers.request(leader, "PUT", "/kv/k\(next)", body: "v\(next)"),
                      status == 200 else { continue }
                acknowledged["k\(next)"] = "v\(next)"
            }
        }

        await writeSome(20)
        let leader = try #require(await servers.leader())
        let grow = await servers.request(leader, "POST", "/membership", body: "add-voter 4\nadd-voter 5\n")
        #expect(grow?.0 == 200, "\(String(describing: grow))")
        await writeSome(20)
        try await servers.waitUntil { await servers.voters(on: 4) == "[1, 2, 3, 4, 5]" }

        await writeSome(20)
        let current = try #require(await servers.leader())
        try await servers.waitUntil {
            await servers.request(current, "POST", "/membership", body: "remove 4\nremove 5\n")?.0 == 200
        }
        await writeSome(20)
        try await servers.waitUntil { await servers.voters(on: 1) == "[1, 2, 3]" }

        #expect(acknowledged.count >= 60, "too few writes succeeded: \(acknowledged.count)")
        for (key, value) in acknowledged.sorted(by: { $0.key < $1.key }) {
            let read = await servers.request(1, "GET", "/kv/\(key)")
            #expect(read?.1 == value, "\(key): \(String(describing: read))")
        }
    }

    /// A learner joins after every founder compacted its log: it catches up from a snapshot and then
    /// serves linearizable reads that always see the latest acknowledged write.
    @Test func aLearnerCatchesUpFromASnapshotAndReadsLinearizably() async throws {
        let servers = try Servers()
        for id in 1...3 { try servers.start(id, joining: false) }
        try servers.start(4, joining: true)
        try await servers.waitUntil { await servers.leader() != nil }
        let leader = try #require(await servers.leader())
        for value in 1...30 {
            let answer = await servers.request(leader, "PUT", "/kv/key\(value % 5)", body: "\(value)")
            #expect(answer?.0 == 200)
        }
        for id in 1...3 { #expect(await servers.request(id, "POST", "/snapshot")?.0 == 200) }
        // `first_index` is the placement driver's log, which every node holds; the regions' logs
        // were compacted the same way.
        let compactedTo = try #require(await servers.number("first_index", on: leader))
        #expect(compactedTo > 1, "the leader's log was compacted")

        #expect(await servers.request(leader, "POST", "/membership", body: "add-learner 4\n")?.0 == 200)
        try await servers.waitUntil { (await servers.number("applied", on: 4) ?? 0) >= compactedTo - 1 }
        #expect((await servers.number("first_index", on: 4) ?? 0) > 1, "the learner started from the snapshot")
        // The values written before the snapshot reached the learner through it.
        try await servers.waitUntil { await servers.request(4, "GET", "/kv/key0")?.1 == "30" }
        for value in 31...40 {
            #expect(await servers.request(leader, "PUT", "/kv/key\(value % 5)", body: "\(value)")?.0 == 200)
            // Write on the leader, read on the learner: always the value just written.
            let read = await servers.request(4, "GET", "/kv/key\(value % 5)")
            #expect(read?.1 == "\(value)", "\(String(describing: read))")
        }
    }

    /// The leader's replicator events for a follower killed with SIGKILL and restarted: offline,
    /// then online again (counted in `/metrics` where the ReplicatorStateListener is called).
    @Test func aKilledFollowerGoesOfflineAndComesBackOnline() async throws {
        let servers = try Servers()
        for id in 1...3 { try servers.start(id, joining: false) }
        try await servers.waitUntil { await servers.leader() != nil }
        let leader = try #require(await servers.leader())
        let follower = [1, 2, 3].first { $0 != leader }!
        #expect(await servers.request(leader, "PUT", "/kv/a", body: "1")?.0 == 200)
        let offline = "divan_raft_replicator_events_total{event=\"offline\"}"
        let online = "divan_raft_replicator_events_total{event=\"online\"}"
        let onlineBefore = await servers.metric(online, on: leader) ?? 0
        servers.kill9(follower)
        try await servers.waitUntil { (await servers.metric(offline, on: leader) ?? 0) >= 1 }
        try servers.start(follower, joining: false)
        try await servers.waitUntil { (await servers.metric(online, on: leader) ?? 0) > onlineBefore }
        #expect(await servers.request(leader, "PUT", "/kv/a", body: "2")?.0 == 200)
    }
}
