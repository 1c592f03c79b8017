import Foundation

/// The placement driver's group as one node reports it on `GET /status`: its leader and members.
struct NodeStatus: Sendable, Equatable {
    var leader: Int?
    var voters: [Int]
    var learners: [Int]

    /// Parses the first (the placement driver's) leader, voters and learners of a status body.
    init?(json: String) {
        func field(_ name: String) -> Substring? {
            guard let range = json.range(of: "\"\(name)\": ") else { return nil }
            return json[range.upperBound...]
        }
        func list(_ name: String) -> [Int]? {
            guard let rest = field(name), rest.first == "[", let end = rest.firstIndex(of: "]") else { return nil }
            return rest[rest.index(after: rest.startIndex)..<end].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        }
        guard let voters = list("voters"), let learners = list("learners"), let leader = field("leader") else { return nil }
        self.leader = Int(leader.prefix { $0.isNumber })
        self.voters = voters.sorted()
        self.learners = learners.sorted()
    }
}

/// The cluster under test and what the harness can ask of it: processes, the relay and the admin API.
final class ClusterControl: Sendable {
    /// Seconds the regions get to follow a membership change of the placement driver.
    static let regionCatchUp = 3.0
    let servers: ServerProcesses
    let relay: Relay
    let membership: Shared<(voters: Set<Int>, learners: Set<Int>)>
    /// Nodes a fault left unable to serve (storage refused, or wiped and not added back): the nemesis
    /// replaces them before it injects anything else, so faults never pile up past what the cluster
    /// is built to survive.
    let broken = Shared<Set<Int>>([])

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

    /// Whether every live member other than `except` has applied, in the placement driver's group,
    /// the membership the harness set.
    func membershipSettled(except: Int? = nil) -> Bool {
        let (voters, learners) = membership.value
        let observers = liveNodes.filter { $0 != except && (voters.contains($0) || learners.contains($0)) }
        guard !observers.isEmpty else { return false }
        for id in observers {
            guard let status = status(id), Set(status.voters) == voters, Set(status.learners) == learners else { return false }
        }
        return true
    }

    /// Asks the live nodes in turn to move the cluster to `voters` and `learners`, and waits until
    /// every live member applied it in the placement driver's group. Returns what went wrong, or nil.
    ///
    /// Each region's leader then follows the placement driver's target on its next placement round
    /// (every second). No API shows a region's current membership (`DIVAN.STATUS` reports the
    /// region descriptor's founding voters and learners), so the harness gives the regions
    /// `regionCatchUp` seconds, three rounds, before it relies on the change.
    func changeMembership(voters: Set<Int>, learners: Set<Int>, except: Int? = nil, within seconds: Double = 20) -> String? {
        let (oldVoters, oldLearners) = membership.value
        var body = ""
        for id in voters.subtracting(oldVoters).sorted() { body += "add-voter \(id)\n" }
        for id in learners.subtracting(oldLearners).sorted() { body += "add-learner \(id)\n" }
        for id in oldVoters.union(oldLearners).subtracting(voters.union(learners)).sorted() { body += "remove \(id)\n" }
        guard !body.isEmpty else { return nil }
        let refusals = Shared<[Int: String]>([:])
        let proposed = waitUntil(within: seconds / 2) {
            liveNodes.filter { $0 != except }.contains { id in
                let answer = AdminClient.request(port: servers.node(id).httpPort, "POST", "/membership", body: body, timeout: 8)
                if answer?.status == 200 { return true }
                refusals.update { $0[id] = answer.map { "\($0.status) \($0.body.trimmingCharacters(in: .whitespacesAndNewlines))" } ?? "no answer" }
                return false
            }
        }
        guard proposed else {
            let answers = refusals.value.sorted { $0.key < $1.key }.map { "node \($0.key): \($0.value)" }.joined(separator: "; ")
            return "no node accepted \(body.split(separator: "\n").joined(separator: ", ")) (\(answers))"
        }
        membership.update { $0 = (voters, learners) }
        guard waitUntil(within: seconds, { membershipSettled(except: except) }) else {
            let views = liveNodes.filter { $0 != except }.map { id in
                status(id).map { "node \(id) has voters \($0.voters) learners \($0.learners)" } ?? "node \(id) gave no status"
            }
            return "the placement driver did not reach voters \(voters.sorted()) learners \(learners.sorted()) on every member within \(Int(seconds)) s (\(views.joined(separator: "; ")))"
        }
        pause(Self.regionCatchUp)
        return nil
    }

    /// Asks node `from` to hand every group it leads to `to`, and waits until `to` leads the
    /// placement driver's group. Returns what went wrong, or nil.
    func transferLeadership(from: Int, to: Int, within seconds: Double = 5) -> String? {
        guard let answer = AdminClient.request(port: servers.node(from).httpPort, "POST", "/transfer-leader", body: "\(to)") else {
            return "node \(from) did not answer"
        }
        guard answer.status == 200 else { return "node \(from) refused: \(answer.body.trimmingCharacters(in: .whitespacesAndNewlines))" }
        guard waitUntil(within: seconds, { status(to)?.leader == to }) else {
            return "\(answer.body.trimmingCharacters(in: .whitespacesAndNewlines)); node \(to) did not lead within \(Int(seconds)) s"
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
        broken.update { _ = $0.insert(id) }
        do {
            try servers.start(id, relay: relay)
        } catch {
            return "restart: \(error)"
        }
        if let problem = changeMembership(voters: voters, learners: learners, within: 30) { return "add back: \(problem)" }
        broken.update { _ = $0.remove(id) }
        if wasVoter, let problem = changeMembership(voters: voters.union([id]), learners: learners.subtracting([id])) { return "promote: \(problem)" }
        return nil
    }
}
