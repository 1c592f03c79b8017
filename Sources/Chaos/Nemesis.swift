import Foundation

/// The kinds of fault the nemesis injects (`--faults`).
public enum FaultKind: String, Sendable, CaseIterable {
    /// SIGKILL a node, then start it again from its disk.
    case kill
    /// SIGSTOP a node, then SIGCONT it.
    case pause
    /// Cut links through the relay: majority/minority, bridge, or one way.
    case partition
    /// Promote a learner, or demote a voter while more than three vote.
    case membership
    /// Replace a node by an empty one with the same id: removed, wiped, started with --join and
    /// added back (a learner first, promoted if it voted).
    case replace
    /// Flip a bit in a stopped node's write-ahead log or snapshot, then start it.
    case disk
    /// Hand leadership of every group the placement driver's leader leads to another voter.
    case transfer
}

/// One fault as the nemesis log records it.
struct FaultRecord: Sendable {
    var kind: FaultKind
    var detail: String
    var start: Double
    var end: Double
    var result: String

    var jsonLine: String {
        func quoted(_ text: String) -> String {
            "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: " ") + "\""
        }
        return "{\"fault\": \(quoted(kind.rawValue)), \"detail\": \(quoted(detail)), \"start\": \(String(format: "%.3f", start)), "
            + "\"end\": \(String(format: "%.3f", end)), \"result\": \(quoted(result))}"
    }
}

/// Injects one fault at a time on a seeded schedule: a quiet gap, a fault held for a few seconds,
/// then its repair, until the end of the run.
struct Nemesis: Sendable {
    let cluster: ClusterControl
    let kinds: [FaultKind]
    let clock: RunClock
    let log: @Sendable (String) -> Void

    func run(until end: Double, random: SeededRandom) -> [FaultRecord] {
        var random = random
        var records: [FaultRecord] = []
        while true {
            pause(Double.random(in: 1...3, using: &random))
            if let id = cluster.broken.value.min() {
                guard clock.seconds < end else { break }
                records.append(repair(id))
                continue
            }
            let hold = Double.random(in: 2...5, using: &random)
            guard clock.seconds + hold < end, let kind = kinds.randomElement(using: &random) else { break }
            let start = clock.seconds
            var record = inject(kind, hold: hold, random: &random)
            record.start = start
            record.end = clock.seconds
            log("nemesis: \(kind.rawValue) \(record.detail): \(record.result) [\(String(format: "%.1f", record.start))–\(String(format: "%.1f", record.end)) s]")
            records.append(record)
        }
        return records
    }

    private func inject(_ kind: FaultKind, hold: Double, random: inout SeededRandom) -> FaultRecord {
        let ids = cluster.ids
        let node = ids.randomElement(using: &random)!
        var record = FaultRecord(kind: kind, detail: "", start: 0, end: 0, result: "healed")
        switch kind {
        case .kill:
            record.detail = "node \(node)"
            cluster.servers.kill9(node)
            pause(hold)
            record.result = restart(node)
        case .pause:
            record.detail = "node \(node)"
            cluster.servers.stop(node)
            pause(hold)
            cluster.servers.resume(node)
        case .partition:
            let (detail, links) = partition(ids, leader: cluster.leader(), random: &random)
            record.detail = detail
            cluster.relay.block(links)
            pause(hold)
            cluster.relay.block([])
        case .membership:
            (record.detail, record.result) = changeMembership(random: &random)
        case .replace:
            let (voters, learners) = cluster.membership.value
            // Replace a learner when there is one, so the quorum keeps three voters.
            let replaced = learners.isEmpty ? node : learners.sorted().randomElement(using: &random)!
            record.detail = "node \(replaced) (\(voters.contains(replaced) ? "voter" : "learner")) by an empty one"
            record.result = cluster.rejoin(replaced) ?? "done"

        case .disk:
            record.detail = "node \(node)"
            record.result = corruptDisk(node, random: &random)
        case .transfer:
            let voters = cluster.membership.value.voters
            guard let leader = cluster.leader(), let target = voters.subtracting([leader]).sorted().randomElement(using: &random) else {
                (record.detail, record.result) = ("of leadership", "skipped: no leader known")
                break
            }
            record.detail = "of leadership from node \(leader) to node \(target)"
            record.result = cluster.transferLeadership(from: leader, to: target) ?? "done"
        }
        return record
    }

    /// A seeded choice of links to cut. The leader, when known, is put on the minority side half the
    /// time: that is the partition where a stale read shows.
    private func partition(_ ids: [Int], leader: Int?, random: inout SeededRandom) -> (String, Set<Link>) {
        var shuffled = ids.shuffled(using: &random)
        func cut(_ left: [Int], _ right: [Int]) -> Set<Link> {
            Set(left.flatMap { a in right.flatMap { b in [Link(from: a, to: b), Link(from: b, to: a)] } })
        }
        switch Int.random(in: 0..<4, using: &random) {
        case 0:
            if let leader, Bool.random(using: &random) {
                shuffled.removeAll { $0 == leader }
                shuffled.insert(leader, at: 0)
            }
            let minority = Array(shuffled.prefix((ids.count - 1) / 2))
            let majority = Array(shuffled.dropFirst(minority.count))
            return ("majority \(majority.sorted()) / minority \(minority.sorted())", cut(minority, majority))
        case 1:
            let isolated = leader.flatMap { Bool.random(using: &random) ? $0 : nil } ?? shuffled[0]
            return ("node \(isolated) isolated", cut([isolated], ids.filter { $0 != isolated }))
        case 2:
            let bridge = shuffled[0]
            let rest = Array(shuffled.dropFirst())
            let left = Array(rest.prefix(rest.count / 2)), right = Array(rest.dropFirst(rest.count / 2))
            return ("bridge \(bridge) between \(left.sorted()) and \(right.sorted())", cut(left, right))
        default:
            let node = shuffled[0]
            let others = ids.filter { $0 != node }
            if Bool.random(using: &random) {
                return ("one way: node \(node) hears no one", Set(others.map { Link(from: $0, to: node) }))
            }
            return ("one way: no one hears node \(node)", Set(others.map { Link(from: node, to: $0) }))
        }
    }

    /// Replaces node `id`, which an earlier fault left broken, by an empty one.
    private func repair(_ id: Int) -> FaultRecord {
        var record = FaultRecord(kind: .replace, detail: "node \(id) (left broken by an earlier fault) by an empty one", start: clock.seconds, end: 0, result: "")
        cluster.servers.kill9(id)
        record.result = cluster.rejoin(id) ?? "done"
        record.end = clock.seconds
        log("nemesis: replace \(record.detail): \(record.result) [\(String(format: "%.1f", record.start))–\(String(format: "%.1f", record.end)) s]")
        return record
    }

    /// Starts node `id` again and reports whether it came up.
    private func restart(_ id: Int) -> String {
        do {
            try cluster.servers.start(id, relay: cluster.relay)
        } catch {
            return "restart failed: \(error)"
        }
        return "restarted"
    }

    private func changeMembership(random: inout SeededRandom) -> (String, String) {
        let (voters, learners) = cluster.membership.value
        if !learners.isEmpty, voters.count < 5, voters.count == 3 || Bool.random(using: &random) {
            let node = learners.sorted().randomElement(using: &random)!
            return ("promote learner \(node)", cluster.changeMembership(voters: voters.union([node]), learners: learners.subtracting([node])) ?? "done")
        }
        guard voters.count > 3 else { return ("no learner to promote, no voter to spare", "skipped") }
        let node = voters.sorted().randomElement(using: &random)!
        return ("demote voter \(node)", cluster.changeMembership(voters: voters.subtracting([node]), learners: learners.union([node])) ?? "done")
    }

    /// Stops node `id`, flips one bit in its log or newest snapshot, and starts it. The storage rules
    /// allow two outcomes: it refuses to start (then it is wiped and joins again as a new replica),
    /// or it cuts a torn tail or discards the bad snapshot and refetches.
    private func corruptDisk(_ id: Int, random: inout SeededRandom) -> String {
        let node = cluster.servers.node(id)
        if Bool.random(using: &random) {
            _ = AdminClient.request(port: node.httpPort, "POST", "/snapshot", timeout: 5)
        }
        cluster.servers.kill9(id)
        let flipped = DiskFault.flipBit(in: node.dataDirectory, random: &random)
        let logStart = (try? FileManager.default.attributesOfItem(atPath: node.logFile)[.size] as? Int) ?? 0
        do {
            try cluster.servers.start(id, relay: cluster.relay)
        } catch {
            return "\(flipped); restart failed: \(error)"
        }
        var exitStatus: Int32?
        let ready = waitUntil(within: 15) {
            exitStatus = cluster.servers.exitStatus(id)
            return exitStatus != nil || cluster.isReady(id)
        }
        if let exitStatus {
            let reason = DiskFault.lastError(in: node.logFile)
            // Until it is replaced, it serves nothing: the nemesis repairs it before its next fault.
            cluster.broken.update { _ = $0.insert(id) }
            let rejoined = cluster.rejoin(id).map { "rejoin failed: \($0)" } ?? "wiped and rejoined"
            return "\(flipped); refused to start (exit \(exitStatus): \(reason)); \(rejoined)"
        }
        let storage = DiskFault.storageMessages(in: node.logFile, from: logStart)
        return "\(flipped); " + (ready ? "started" : "running but not ready after 15 s") + (storage.isEmpty ? "" : " (\(storage))")
    }
}

/// Bit flips in a node's files, as a failing disk makes them.
enum DiskFault {
    /// Flips one random bit in the written part of a write-ahead log segment or of a snapshot file
    /// under `directory`; says which file and offset.
    static func flipBit(in directory: String, random: inout SeededRandom) -> String {
        let files = (FileManager.default.enumerator(atPath: directory)?.allObjects as? [String] ?? []).sorted()
        let segments = files.filter { $0.hasPrefix("wal/") && $0.hasSuffix(".wal") }
        let snapshots = files.filter { $0.contains("snapshot") && !$0.hasSuffix("/") && isRegularFile("\(directory)/\($0)") }
        let candidates = snapshots.isEmpty || Bool.random(using: &random) ? segments : snapshots
        guard let file = candidates.randomElement(using: &random),
              let handle = FileHandle(forUpdatingAtPath: "\(directory)/\(file)") else { return "no file to corrupt" }
        defer { try? handle.close() }
        let bytes = [UInt8](handle.readDataToEndOfFile())
        // Segments are preallocated with zeros: corrupt only what was written.
        let written = file.hasSuffix(".wal") ? (bytes.lastIndex { $0 != 0 }.map { $0 + 1 } ?? 0) : bytes.count
        let first = file.hasSuffix(".wal") ? min(32, written) : 0
        guard written > first else { return "\(file) holds no data" }
        let offset = Int.random(in: first..<written, using: &random)
        let bit = UInt8(1) << UInt8.random(in: 0..<8, using: &random)
        try? handle.seek(toOffset: UInt64(offset))
        handle.write(Data([bytes[offset] ^ bit]))
        try? handle.synchronize()
        return "flipped bit \(bit.trailingZeroBitCount) at offset \(offset) of \(written) in \(file)"
    }

    private static func isRegularFile(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
    }

    /// What the node's storage reported (a torn tail it cut, say) in its log from byte `offset` on.
    static func storageMessages(in logFile: String, from offset: Int) -> String {
        guard let handle = FileHandle(forReadingAtPath: logFile) else { return "" }
        defer { try? handle.close() }
        try? handle.seek(toOffset: UInt64(offset))
        let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        return text.split(separator: "\n").filter { $0.hasPrefix("[divan storage]") }.map { String($0.dropFirst(16)) }.joined(separator: "; ")
    }

    /// The last line of a node's log that names an error, shortened.
    static func lastError(in logFile: String) -> String {
        let text = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
        let line = text.split(separator: "\n").last { $0.localizedCaseInsensitiveContains("error") || $0.localizedCaseInsensitiveContains("corrupt") }
        return line.map { String($0.suffix(240)) } ?? "no error logged"
    }
}
