import Foundation

/// The placement driver's group as one node reports it on `GET /status`.
struct NodeStatus: Sendable, Equatable {
    var role: String
    var leader: Int?
    var voters: [Int]
    var learners: [Int]

    /// Parses the first (the placement driver's) role, leader, voters and learners of a status body.
    init?(json: String) {
        func field(_ name: String) -> Substring? {
            guard let range = json.range(of: "\"\(name)\": ") else { return nil }
            return json[range.upperBound...]
        }
        func list(_ name: String) -> [Int]? {
            guard let rest = field(name), rest.first == "[", let end = rest.firstIndex(of: "]") else { return nil }
            return rest[rest.index(after: rest.startIndex)..<end].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        }
        guard let role = field("role")?.dropFirst().prefix(while: { $0 != "\"" }), let voters = list("voters"),
              let learners = list("learners"), let leader = field("leader") else { return nil }
        self.role = String(role)
        self.leader = Int(leader.prefix { $0.isNumber })
        self.voters = voters.sorted()
        self.learners = learners.sorted()
    }
}

/// The cluster under test and what the harness can ask of it: processes, the relay, the admin API
/// and the regions' membership (`DIVAN.STATUS`).
final class ClusterControl: Sendable {
    let servers: ServerProcesses
    let relay: Relay
    let membership: Shared<(voters: Set<Int>, learners: Set<Int>)>

    init(servers: ServerProcesses, relay: Relay) {
        self.servers = servers
        self.relay = relay
        membership = Shared((Set(servers.founders), Set(servers.initialLearners)))
    }

    var ids: [Int] { servers.ids }

    func status(_ id: Int) -> NodeStatus? {
        guard let answer = AdminClient.request(port: servers.node(id).httpPort, "GET", "/status"), answer.status == 200 else { return nil }
        return NodeStatus(json: answer.body)
    }

    func isReady(_ id: Int) -> Bool {
        AdminClient.request(port: servers.node(id).httpPort, "GET", "/ready")?.status == 200
    }

    /// Nodes running and not stopped.
    var liveNodes: [Int] { ids.filter { servers.isUp($0) && !servers.isPaused($0) } }

    /// The placement driver's leader, as the live nodes that know one report it.
    func leader() -> Int? {
        for id in liveNodes {
            if let leader = status(id)?.leader { return leader }
        }
        return nil
    }

    /// Each region's voters and learners as node `id` reports them on `DIVAN.STATUS`.
    func regionMemberships(_ id: Int) -> [(voters: Set<Int>, learners: Set<Int>)]? {
        guard case .array(let top)? = try? RESPClient(port: servers.node(id).respPort).call(["DIVAN.STATUS"], timeout: 3),
              let regions = value(of: "regions", in: top), case .array(let list) = regions else { return nil }
        return list.compactMap { region in
            guard case .array(let fields) = region, case .array(let voters)? = value(of: "voters", in: fields),
                  case .array(let learners)? = value(of: "learners", in: fields) else { return nil }
            func ids(_ items: [RESPReply]) -> Set<Int> { Set(items.compactMap { if case .integer(let id) = $0 { id } else { nil } }) }
            return (ids(voters), ids(learners))
        }
    }

    private func value(of name: String, in fields: [RESPReply]) -> RESPReply? {
        stride(from: 0, to: fields.count - 1, by: 2).first { fields[$0] == .bulk(Array(name.utf8)) || fields[$0] == .simple(name) }.map { fields[$0 + 1] }
    }

    /// Whether every live node other than `except` sees the placement driver and every region at
    /// the membership the harness set.
    func membershipSettled(except: Int? = nil) -> Bool {
        let (voters, learners) = membership.value
        let observers = liveNodes.filter { $0 != except && (voters.contains($0) || learners.contains($0)) }
        guard !observers.isEmpty else { return false }
        for id in observers {
            guard let status = status(id), Set(status.voters) == voters, Set(status.learners) == learners,
                  let regions = regionMemberships(id), !regions.isEmpty,
                  regions.allSatisfy({ $0.voters == voters && $0.learners == learners }) else { return false }
        }
        return true
    }

    /// Asks the live nodes in turn to move the cluster to `voters` and `learners`, and waits until
    /// every group everywhere got there. Returns a description of what went wrong, or nil.
    func changeMembership(voters: Set<Int>, learners: Set<Int>, except: Int? = nil, within seconds: Double = 20) -> String? {
        let (oldVoters, oldLearners) = membership.value
        var body = ""
        for id in voters.subtracting(oldVoters).sorted() { body += "add-voter \(id)\n" }
        for id in learners.subtracting(oldLearners).sorted() { body += "add-learner \(id)\n" }
        for id in oldVoters.union(oldLearners).subtracting(voters.union(learners)).sorted() { body += "remove \(id)\n" }
        guard !body.isEmpty else { return nil }
        let proposed = waitUntil(within: seconds / 2) {
            liveNodes.filter { $0 != except }.contains { AdminClient.request(port: servers.node($0).httpPort, "POST", "/membership", body: body)?.status == 200 }
        }
        guard proposed else { return "no node accepted \(body.split(separator: "\n").joined(separator: ", "))" }
        membership.update { $0 = (voters, learners) }
        guard waitUntil(within: seconds, { membershipSettled(except: except) }) else {
            return "the groups did not all reach voters \(voters.sorted()) learners \(learners.sorted()) within \(Int(seconds)) s"
        }
        return nil
    }

    /// Replaces node `id` by an empty one with the same id: demoted to learner if it votes, removed,
    /// its data deleted, started with --join, added back as a learner, and promoted back if it voted.
    /// A learner holds no vote, so losing its data can never lose a committed write.
    func rejoin(_ id: Int) -> String? {
        let wasVoter = membership.value.voters.contains(id)
        if wasVoter {
            let (voters, learners) = membership.value
            if let problem = changeMembership(voters: voters.subtracting([id]), learners: learners.union([id]), except: id) { return "demote: \(problem)" }
        }
        let (voters, learners) = membership.value
        if let problem = changeMembership(voters: voters, learners: learners.subtracting([id]), except: id) { return "remove: \(problem)" }
        servers.kill9(id)
        servers.wipe(id)
        do {
            try servers.start(id, relay: relay)
        } catch {
            return "restart: \(error)"
        }
        if let problem = changeMembership(voters: voters, learners: learners, within: 30) { return "add back: \(problem)" }
        if wasVoter, let problem = changeMembership(voters: voters.union([id]), learners: learners.subtracting([id])) { return "promote: \(problem)" }
        return nil
    }
}
