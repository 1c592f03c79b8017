#if canImport(Glibc)
import Glibc
#endif
import KVWire
import Logging
import Raft
import RaftCore
import RaftStorage
import Synchronization
import SystemPackage

/// Settings of a store.
public struct StoreOptions: Sendable {
    public var node: NodeID
    /// The cluster's voters when it is created; nil for a store that joins an existing cluster.
    public var founders: [NodeID]?
    /// Nodes that hold a non-voting replica of every region (they serve linearizable reads).
    public var learners: [NodeID] = []
    /// SOFAJRaft election priorities of the nodes, for every group the store founds; empty: plain Raft.
    public var priorities: [NodeID: ElectionPriority] = [:]
    /// Where the store keeps its region snapshots (one directory per region).
    public var dataDirectory: String
    public var raft: RaftOptions
    public var placement = PlacementOptions()
    /// Keys up to 64 KiB, values up to 16 MiB (as the issue sets them); larger ones get a definite error.
    public var maximumKeyBytes = 64 << 10
    public var maximumValueBytes = 16 << 20
    /// A write not applied within this time fails as indefinite.
    public var writeTimeout: Duration = .seconds(10)

    public init(node: NodeID, founders: [NodeID]?, dataDirectory: String, raft: RaftOptions = RaftOptions()) {
        self.node = node
        self.founders = founders
        self.dataDirectory = dataDirectory
        self.raft = raft
        // A 16 MiB value and its command must fit in one proposal.
        self.raft.maxProposalBytes = max(self.raft.maxProposalBytes, maximumValueBytes + maximumKeyBytes + 4096)
    }
}

/// One process's share of Divan KV: the regions it holds a replica of (each a Raft group over the
/// shared write-ahead log and the shared engine) and its replica of the placement driver's group.
/// Every store of the default topology holds every region, so it can route any request itself.
public final class Store: Sendable {
    /// The placement driver's Raft group id; regions use ids from 1 up.
    public static let placementGroup: UInt64 = 1 << 62

    public let options: StoreOptions
    let engine: any StorageEngine
    let log: WriteAheadLog
    let sender: any RaftMessageSender
    let ticker: RaftTicker
    let logger: Logger
    private let regions = Mutex<[UInt64: Region]>([:])
    /// Regions being opened, so that concurrent triggers open each once.
    private let opening = Mutex<Set<UInt64>>([])
    private let placement = Mutex<PlacementState>(PlacementState())

    /// This store's handle on the placement driver: its group, and what its leader decided lately.
    private struct PlacementState {
        var group: RaftGroup?
        var machine: PlacementStateMachine?
        var proposedSplits: [UInt64: UInt64] = [:]
        var lastTransfer: ContinuousClock.Instant?
    }
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let isStopped = Mutex(false)

    public init(
        options: StoreOptions, engine: any StorageEngine, log: WriteAheadLog, sender: any RaftMessageSender,
        ticker: RaftTicker, logger: Logger
    ) throws {
        try options.raft.validate()
        try options.placement.validate()
        self.options = options
        self.engine = engine
        self.log = log
        self.sender = sender
        self.ticker = ticker
        var logger = logger
        logger[metadataKey: "node"] = "\(options.node)"
        self.logger = logger
    }

    /// Opens every region the engine holds, creates the first region and the placement group of a
    /// new cluster, and starts the placement driver and the timeout sweeper.
    public func start() async throws {
        for path in [options.dataDirectory, "\(options.dataDirectory)/snapshots"] {
            guard mkdir(path, 0o755) == 0 || errno == EEXIST else {
                throw KVStoreError.engine("cannot create \(path): errno \(errno)")
            }
        }
        var known: [RegionDescriptor] = []
        for pair in try engine.scan(KeyRange(start: [EngineLayout.metaSpace], end: [EngineLayout.metaSpace + 1]), limit: Int.max, reverse: false) {
            known.append(try RegionMeta(decoding: pair.value).descriptor)
        }
        let founders = options.founders
        if known.isEmpty, let founders {
            known = [RegionDescriptor(id: 1, start: [], end: nil, voters: founders, learners: options.learners)]
        }
        for descriptor in known { try await openRegion(descriptor.id, initial: descriptor, bootstrap: descriptor.voters.isEmpty ? nil : descriptor) }
        let machine = PlacementStateMachine { [weak self] action in self?.act(on: action) }
        placement.withLock { $0.machine = machine }
        let bootstrap = founders.map { Membership(voters: $0, learners: options.learners, priorities: options.priorities) }
        let group = try await RaftGroup(
            group: Self.placementGroup, id: options.node, bootstrap: bootstrap, options: options.raft, log: log,
            snapshots: try snapshotStore(for: Self.placementGroup), sender: sender, stateMachine: machine)
        let commit = await group.status.commit
        machine.liveFrom.withLock { $0 = commit + 1 }
        placement.withLock { $0.group = group }
        try await group.start(ticker: ticker)
        spawn { [weak self] in await self?.runPlacement() }
        spawn { [weak self] in await self?.sweepTimeouts() }
        spawn { [weak self] in await self?.removeExpiredKeys() }
    }

    /// Stops every group and fails what waits.
    public func stop() async {
        isStopped.withLock { $0 = true }
        for task in tasks.withLock({ $0 }) { task.cancel() }
        for region in regions.withLock({ Array($0.values) }) {
            await region.group.stop()
            region.waiters.failAll(.definite(.shuttingDown))
        }
        await placement.withLock({ $0.group })?.stop()
    }

    private func spawn(_ body: @escaping @Sendable () async -> Void) {
        let task = Task { await body() }
        tasks.withLock { $0.append(task) }
    }

    // MARK: - Regions

    func snapshotStore(for group: UInt64) throws -> SnapshotStore {
        let name = group == Self.placementGroup ? "placement" : "region-\(group)"
        return try SnapshotStore(directory: FilePath("\(options.dataDirectory)/snapshots/\(name)"))
    }

    /// Opens region `id` once. `initial` describes a region this store never held; `bootstrap`
    /// founds its Raft group (first region of a cluster, or the new half of a split).
    func openRegion(_ id: UInt64, initial: RegionDescriptor?, bootstrap: RegionDescriptor?) async throws {
        guard regions.withLock({ $0[id] == nil }), opening.withLock({ $0.insert(id).inserted }) else { return }
        defer { opening.withLock { _ = $0.remove(id) } }
        let waiters = ProposalWaiters()
        let machine = try RegionStateMachine(
            engine: engine, region: id, node: options.node, initial: initial, waiters: waiters,
            storeRegions: { [weak self] in self?.regions.withLock { Array($0.values) }.map(\.descriptor) ?? [] }
        ) { [weak self] left, right in self?.regionSplit(left: left, right: right) }
        let group = try await RaftGroup(
            group: id, id: options.node,
            bootstrap: bootstrap.map { Membership(voters: $0.voters, learners: $0.learners, priorities: options.priorities) },
            options: options.raft, log: log, snapshots: try snapshotStore(for: id), sender: sender, stateMachine: machine)
        await group.addForwardedProposalDroppedListener { request in
            waiters.fail(request, with: .definite(.noLeader(region: id)))
        }
        let grace = options.raft.electionTimeout * 2
        await group.addLeaderChangeListener { _, _ in
            // Commands proposed or forwarded under the old leader commit soon or never.
            waiters.shortenDeadlines(to: .now + grace)
        }
        let region = Region(
            id: id, group: group, machine: machine, waiters: waiters, writeTimeout: options.writeTimeout,
            maximumBatchBytes: 4 << 20)
        regions.withLock { $0[id] = region }
        try await group.start(ticker: ticker)
        logger.info("region opened", metadata: ["region": "\(id)", "range": "\(Self.describe(machine.descriptor))"])
    }

    /// Called by a region's state machine once a split is applied here: open the new region, and
    /// snapshot it at once so that a replica that never saw the split gets its data by snapshot,
    /// never by replaying a log that starts after the data was already there.
    func regionSplit(left: RegionDescriptor, right: RegionDescriptor) {
        logger.notice("region split", metadata: ["left": "\(Self.describe(left))", "right": "\(Self.describe(right))"])
        spawn { [weak self] in
            guard let self else { return }
            do {
                self.region(right.id)?.machine.adoptSplit(right)
                try await self.openRegion(right.id, initial: right, bootstrap: right)
                guard let group = self.region(right.id)?.group else { return }
                for _ in 0..<100 {
                    if try await group.takeSnapshot() != nil { return }
                    try await Task.sleep(for: .milliseconds(50))
                }
            } catch {
                self.logger.error("opening a split region failed", metadata: ["region": "\(right.id)", "error": "\(error)"])
            }
        }
    }

    func region(_ id: UInt64) -> Region? { regions.withLock { $0[id] } }

    /// The Raft group of `id` (a region or the placement driver), for the transport.
    public func group(_ id: UInt64) -> RaftGroup? {
        id == Self.placementGroup ? placement.withLock { $0.group } : region(id)?.group
    }

    /// A message arrived for a group this store does not hold: a region created by a split it has not
    /// applied yet, or a region it was just added to. Opens it empty; the leader sends a snapshot.
    public func openUnknownRegion(_ id: UInt64) {
        guard id != Self.placementGroup, id != 0, !isStopped.withLock({ $0 }) else { return }
        spawn { [weak self] in
            do {
                // Region 1 began empty, so its whole log rebuilds it; any other region starts as a
                // placeholder that only a snapshot (or the split, applied here later) fills.
                let initial = id == 1 ? RegionDescriptor(id: 1, start: [], end: nil, voters: []) : nil
                try await self?.openRegion(id, initial: initial, bootstrap: nil)
            } catch {
                self?.logger.error("opening region failed", metadata: ["region": "\(id)", "error": "\(error)"])
            }
        }
    }

    /// Every region held here, in key order.
    var orderedRegions: [Region] {
        regions.withLock { Array($0.values) }.sorted { $0.descriptor.start.lexicographicallyPrecedes($1.descriptor.start) }
    }

    /// The region that holds `key` here, as far as this replica knows. When a region split off
    /// arrived here before its parent applied the split, both claim the key: the newer range wins.
    func region(for key: Bytes) -> Region? {
        let candidates = regions.withLock { regions in regions.values.filter { $0.descriptor.contains(key) } }
        return candidates.max { $0.descriptor.rangeVersion < $1.descriptor.rangeVersion }
    }

    static func describe(_ descriptor: RegionDescriptor) -> String {
        func text(_ key: Bytes?) -> String {
            guard let key else { return "+inf" }
            return key.isEmpty ? "-inf" : String(decoding: key, as: UTF8.self)
        }
        return "#\(descriptor.id) [\(text(descriptor.start)), \(text(descriptor.end))) v\(descriptor.rangeVersion)"
    }

    // MARK: - Status

    /// What this store knows of every region.
    public func status() async -> ClusterStatus {
        var statuses: [RegionStatus] = []
        for region in orderedRegions {
            let raft = await region.group.status
            let meta = region.machine.current
            // The descriptor names the founding members; the group's own membership is the current one.
            var descriptor = meta.descriptor
            descriptor.voters = raft.membership.voters
            descriptor.learners = raft.membership.learners
            statuses.append(RegionStatus(
                region: descriptor, role: raft.role.rawValue, leader: raft.leader, term: raft.term,
                commitIndex: raft.commit, appliedIndex: raft.applied, keys: UInt64(max(meta.keys, 0)),
                bytes: UInt64(max(meta.bytes, 0))))
        }
        return ClusterStatus(node: options.node, regions: statuses)
    }

    // MARK: - Placement driver

    /// Asks the placement driver to move every group to this membership.
    ///
    /// Returns once this store's replica of the placement driver has applied the new target, so the
    /// change is committed. A follower only forwards the proposal, and a leader it believes in may
    /// be gone: after `timeout` without the target applied, the outcome is unknown (indefinite).
    public func changeMembership(voters: [NodeID], learners: [NodeID], timeout: Duration = .seconds(5)) async throws {
        guard let group = placement.withLock({ $0.group }) else { throw KVError.definite(.shuttingDown) }
        _ = try await group.submit(PlacementCommand.setMembership(voters: voters, learners: learners).encodedBytes(), id: 0)
        let wanted = TargetMembership(voters: voters.sorted(), learners: learners.sorted())
        let deadline = ContinuousClock.now + timeout
        while placement.withLock({ $0.machine?.target.withLock { $0 } }) != wanted {
            guard ContinuousClock.now < deadline else { throw KVError.indefinite(.timedOut) }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// The membership the cluster is moving to, if an operator set one.
    public var targetMembership: (voters: [NodeID], learners: [NodeID])? {
        placement.withLock { $0.machine?.target.withLock { $0 } }.map { ($0.voters, $0.learners) }
    }

    /// The placement driver's group, which every store holds (its status stands for the cluster's).
    public var placementGroup: RaftGroup? { placement.withLock { $0.group } }

    /// Every group this store holds: the placement driver's, then the regions in key order.
    public var groups: [RaftGroup] {
        (placementGroup.map { [$0] } ?? []) + orderedRegions.map(\.group)
    }

    /// On every store: move the groups it leads to the target membership. On the placement group's
    /// leader also: split regions past a threshold and even out leadership.
    func runPlacement() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: options.placement.interval)
            await reconcileMembership()
            guard let group = placement.withLock({ $0.group }), await group.status.role == .leader else { continue }
            var leaders: [NodeID: [UInt64]] = [:]
            for voter in await group.status.membership.voters { leaders[voter] = [] }
            for region in orderedRegions {
                let meta = region.machine.current
                let raft = await region.group.status
                if let leader = raft.leader { leaders[leader, default: []].append(region.id) }
                guard meta.keys >= options.placement.splitKeys || meta.bytes >= options.placement.splitBytes,
                      raft.leader != nil,
                      placement.withLock({ $0.proposedSplits[region.id] }) != meta.descriptor.rangeVersion
                else { continue }
                placement.withLock { $0.proposedSplits[region.id] = meta.descriptor.rangeVersion }
                logger.notice("placement: split", metadata: ["region": "\(region.id)", "keys": "\(meta.keys)", "bytes": "\(meta.bytes)"])
                _ = try? await group.submit(PlacementCommand.split(region: region.id, rangeVersion: meta.descriptor.rangeVersion).encodedBytes(), id: 0)
            }
            await balanceLeaders(leaders, through: group)
        }
    }

    private func balanceLeaders(_ leaders: [NodeID: [UInt64]], through group: RaftGroup) async {
        guard let busiest = leaders.max(by: { $0.value.count < $1.value.count }),
              let idlest = leaders.min(by: { $0.value.count < $1.value.count }),
              busiest.value.count - idlest.value.count >= options.placement.leaderImbalance,
              let region = busiest.value.first
        else { return }
        let now = ContinuousClock.now
        // One move at a time, and time for it to show, so that moves do not chase each other.
        if let last = placement.withLock({ $0.lastTransfer }), now - last < options.placement.interval * 5 { return }
        placement.withLock { $0.lastTransfer = now }
        logger.notice("placement: move leader", metadata: ["region": "\(region)", "from": "\(busiest.key)", "to": "\(idlest.key)"])
        _ = try? await group.submit(PlacementCommand.transferLeader(region: region, from: busiest.key, to: idlest.key).encodedBytes(), id: 0)
    }

    /// Proposes, in each group this store leads, the change that moves it to the target membership.
    /// A change already under way (joint consensus) is left to finish first.
    func reconcileMembership() async {
        guard let target = placement.withLock({ $0.machine?.target.withLock { $0 } }) else { return }
        for group in groups {
            let status = await group.status
            guard status.role == .leader, !status.membership.isJoint else { continue }
            let current = status.membership
            var steps: [ConfigurationStep] = []
            for voter in target.voters where !current.voters.contains(voter) {
                steps.append(.addVoter(voter, priority: options.priorities[voter] ?? .disabled))
            }
            for learner in target.learners where !current.learners.contains(learner) {
                steps.append(.addLearner(learner, priority: options.priorities[learner] ?? .disabled))
            }
            for node in current.allNodes where !target.voters.contains(node) && !target.learners.contains(node) {
                steps.append(.remove(node))
            }
            guard !steps.isEmpty else { continue }
            logger.notice("membership change", metadata: ["group": "\(group.group)", "steps": "\(steps)"])
            try? await group.changeMembership(ConfigurationChange(steps))
        }
    }

    /// Acts on a placement decision when this store is the one concerned: the region's leader.
    func act(on action: PlacementAction) {
        spawn { [weak self] in
            guard let self else { return }
            switch action {
            case .split(let id, let rangeVersion, let newRegion):
                guard let region = self.region(id), await region.group.status.role == .leader,
                      region.descriptor.rangeVersion == rangeVersion,
                      let key = try? region.machine.middleKey()
                else { return }
                let membership = await region.group.status.membership
                let members = SplitMembers(voters: membership.voters, learners: membership.learners)
                let command = RegionCommand.split(key: key, newRegion: newRegion, rangeVersion: rangeVersion, members: members)
                _ = try? await region.group.submit(command.encodedBytes(), id: 0)
            case .transferLeader(let id, let from, let to):
                guard from == self.options.node, let region = self.region(id), await region.group.status.role == .leader else { return }
                try? await region.group.transferLeadership(to: to)
            }
        }
    }

    /// On each region this store leads: finds expired keys a slice at a time and removes them through
    /// Raft (reads hide them from the moment they expire; this frees their space).
    func removeExpiredKeys() async {
        var cursors: [UInt64: Bytes] = [:]
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            for region in orderedRegions where await region.group.status.role == .leader {
                let now = UnixClock.milliseconds()
                guard let (keys, next) = try? region.machine.expiredKeys(now: now, from: cursors[region.id], budget: 4096) else { continue }
                cursors[region.id] = next
                if !keys.isEmpty { _ = await region.batcher.propose(.removeExpired(keys: keys), now: now) }
            }
        }
    }

    /// Fails writes whose entries did not show up in time.
    func sweepTimeouts() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
            let now = ContinuousClock.now
            for region in regions.withLock({ Array($0.values) }) { region.waiters.expire(now: now) }
        }
    }
}
