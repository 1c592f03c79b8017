import Metrics

/// The runtime's instruments (swift-metrics; `divan server` exports them in Prometheus format).
/// They carry no group label: a process with thousands of groups must not make thousands of series.
struct GroupMetrics: Sendable {
    let proposals = Counter(label: "divan_raft_proposals_total")
    let applied = Counter(label: "divan_raft_applied_entries_total")
    let leaderChanges = Counter(label: "divan_raft_leader_changes_total")
    let droppedMessages = Counter(label: "divan_raft_dropped_messages_total")
    let snapshots = Counter(label: "divan_raft_snapshots_total")
    let snapshotBytes = Counter(label: "divan_raft_snapshot_bytes_total")
    let failures = Counter(label: "divan_raft_group_failures_total")
    let snapshotChunksSent = Counter(label: "divan_raft_snapshot_chunks_sent_total")
    let snapshotChunksReceived = Counter(label: "divan_raft_snapshot_chunks_received_total")
    /// Received snapshots whose files did not match the leader's manifest (fetched again).
    let snapshotsRejected = Counter(label: "divan_raft_snapshots_rejected_total")
    /// Replicator events seen on leaders, by kind (created, probe, replicate, snapshot, online, offline, error, destroyed).
    let replicatorEvents: [String: Counter] = Dictionary(uniqueKeysWithValues: [
        "created", "probe", "replicate", "snapshot", "online", "offline", "error", "destroyed",
    ].map { ($0, Counter(label: "divan_raft_replicator_events_total", dimensions: [("event", $0)])) })
    /// From handing a Ready's writes to the log until they are durable.
    let persistLatency = Metrics.Timer(label: "divan_raft_persist_duration_seconds")
}

extension Metrics.Timer {
    func recordInterval(since start: ContinuousClock.Instant) {
        record(duration: ContinuousClock.now - start)
    }
}
