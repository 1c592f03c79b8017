import RaftCore
import RaftStorage

// Snapshots: taking them in the background, and streaming them to followers in chunks.
//
// The core holds a snapshot's manifest (metadata, every file's size and CRC32C), never its bytes.
// A leader's `.snapshot` message carries that manifest; the follower fetches the files piece by
// piece with `snapshotChunkRequest`, one request in flight, so the follower's disk sets the pace
// (SOFAJRaft's follower-side copier works the same way). The store verifies every file against
// the manifest before the snapshot counts as received; only then does the core see the offer.
// A snapshot that fails the check is thrown away and fetched again.
extension RaftGroup {
    /// The follower's side of one transfer.
    struct IncomingSnapshot {
        /// The leader's offer, stepped into the core once the files are in the store.
        var offer: Message
        var manifest: SnapshotManifest
        var writer: SnapshotWriter
        /// The file being fetched (an index into `manifest.files`) and where its next piece starts.
        var file: Int
        var offset: UInt64
        var lastActivity: UInt64
        /// The files are complete and being verified; chunks and repeated offers are ignored.
        var isFinishing = false
    }

    /// The name of the one file a state machine snapshot consists of.
    static let snapshotFile = "state"

    /// Snapshots the state machine as applied now and drops the log it covers. The view is taken at
    /// once; serializing and writing it happen in the background while the group keeps applying.
    /// Returns the snapshot's index, or nil when there is nothing new to cover.
    @discardableResult
    public func takeSnapshot() async throws -> UInt64? {
        guard !isSnapshotting, !isStopped else { return nil }
        let metadata = node.snapshotMetadata
        guard metadata.index >= node.firstIndex else { return nil }
        isSnapshotting = true
        defer { isSnapshotting = false }
        let view = stateMachine.snapshotView()
        let store = snapshots
        let stored = try await Task.detached {
            let writer = try store.create(metadata: metadata)
            var offset: UInt64 = 0
            try view.write { piece in
                try writer.write(file: Self.snapshotFile, at: offset, piece)
                offset += UInt64(piece.count)
            }
            return try writer.finish()
        }.value
        guard node.compact(Snapshot(metadata: metadata, data: stored.manifest.encodedBytes())) else { return nil }
        try await log.compact(group: group, through: metadata.index)
        let bytes = stored.manifest.files.reduce(0) { $0 + Int($1.size) }
        metrics.snapshots.increment()
        metrics.snapshotBytes.increment(by: bytes)
        logger.info("snapshot taken", metadata: ["index": "\(metadata.index)", "bytes": "\(bytes)"])
        return metadata.index
    }

    static func readWhole(_ stored: StoredSnapshot) throws -> [UInt8] {
        guard let file = stored.manifest.files.first(where: { $0.name == snapshotFile }) else { return [] }
        var data: [UInt8] = []
        data.reserveCapacity(Int(file.size))
        while UInt64(data.count) < file.size {
            data += try stored.reader.read(file: snapshotFile, at: UInt64(data.count), maximumLength: 1 << 20)
        }
        return data
    }

    // MARK: - Leader side

    /// Answers a follower's request for a piece of a snapshot, read from the store.
    func serveSnapshotChunk(_ piece: Message.SnapshotPiece, to peer: NodeID) {
        if servedSnapshot?.manifest.metadata.index != piece.index || servedSnapshot?.manifest.metadata.term != piece.term {
            servedSnapshot = try? snapshots.snapshot(index: piece.index, term: piece.term)
        }
        let data = try? servedSnapshot?.reader.read(file: piece.file, at: piece.offset, maximumLength: options.snapshotChunkSize)
        sender.send([Message(from: id, to: peer, term: node.term, payload: .snapshotChunk(piece, data: data))], group: group)
        if data == nil {
            // Pruned by a newer snapshot: offer that one instead.
            outgoingSnapshots[peer] = nil
            node.reportSnapshot(peer: peer, success: false)
        } else if outgoingSnapshots[peer] != nil {
            outgoingSnapshots[peer]!.lastActivity = ticks
            metrics.snapshotChunksSent.increment()
        }
    }

    /// On every tick: a leader gives up on a follower that stopped fetching (it offers the snapshot
    /// again), and a follower asks again for a piece that did not come.
    func tickSnapshotTransfers() {
        if !outgoingSnapshots.isEmpty {
            let followers = node.status.followers
            for (peer, transfer) in outgoingSnapshots {
                guard case .snapshot = followers[peer]?.state else {
                    outgoingSnapshots[peer] = nil
                    continue
                }
                if ticks - transfer.lastActivity > UInt64(2 * options.electionTicks) {
                    logger.info("snapshot transfer stalled; offering again", metadata: ["peer": "\(peer)"])
                    outgoingSnapshots[peer] = nil
                    node.reportSnapshot(peer: peer, success: false)
                }
            }
        }
        if let incoming = incomingSnapshot, !incoming.isFinishing,
           ticks - incoming.lastActivity > UInt64(max(2, options.electionTicks / 2)) {
            requestNextChunk()
        }
    }

    // MARK: - Follower side

    /// Handles a leader's snapshot offer. True when the runtime took it over (the files must be
    /// fetched first); false when the core can take it at once.
    func receiveSnapshotOffer(_ offer: Message, _ snapshot: Snapshot) async -> Bool {
        let metadata = snapshot.metadata
        // Stale, or already covered by the log: the core answers without needing the files.
        if offer.term < node.term || metadata.index <= node.commitIndex { return false }
        if (try? snapshots.snapshot(index: metadata.index, term: metadata.term)) != nil {
            incomingSnapshot = nil
            return false
        }
        if let incoming = incomingSnapshot, incoming.manifest.metadata == metadata {
            incomingSnapshot!.offer = offer
            return true
        }
        let manifest: SnapshotManifest
        do {
            manifest = try SnapshotManifest(decoding: snapshot.data)
            guard manifest.metadata == metadata else { throw CodecError(offset: 0, expected: "the offer's own metadata") }
            incomingSnapshot = IncomingSnapshot(
                offer: offer, manifest: manifest, writer: try snapshots.receive(manifest), file: 0, offset: 0,
                lastActivity: ticks)
        } catch {
            logger.warning("snapshot offer refused", metadata: ["from": "\(offer.from)", "error": "\(error)"])
            metrics.droppedMessages.increment()
            return true
        }
        logger.info("fetching snapshot", metadata: [
            "from": "\(offer.from)", "index": "\(metadata.index)",
            "bytes": "\(manifest.files.reduce(0) { $0 + $1.size })",
        ])
        await continueFetching()
        return true
    }

    /// Handles a piece of the snapshot being fetched.
    func receiveSnapshotChunk(_ piece: Message.SnapshotPiece, _ data: [UInt8]?, from peer: NodeID) async {
        guard let incoming = incomingSnapshot, !incoming.isFinishing, peer == incoming.offer.from,
              piece.index == incoming.manifest.metadata.index, piece.term == incoming.manifest.metadata.term,
              incoming.file < incoming.manifest.files.count,
              piece.file == incoming.manifest.files[incoming.file].name, piece.offset == incoming.offset
        else { return }  // a late duplicate or a piece of an abandoned transfer
        guard let data, !data.isEmpty else {
            logger.info("the leader no longer holds the snapshot; waiting for a new offer", metadata: ["from": "\(peer)"])
            try? incoming.writer.abort()
            incomingSnapshot = nil
            return
        }
        do {
            try incoming.writer.write(file: piece.file, at: piece.offset, data)
        } catch {
            logger.warning("snapshot chunk not written", metadata: ["error": "\(error)"])
            incomingSnapshot = nil
            return
        }
        incomingSnapshot!.offset += UInt64(data.count)
        incomingSnapshot!.lastActivity = ticks
        metrics.snapshotChunksReceived.increment()
        await continueFetching()
    }

    /// Asks for the next missing piece, or verifies and installs the snapshot once nothing is missing.
    func continueFetching() async {
        guard var incoming = incomingSnapshot else { return }
        do {
            // Resume where the files end: after a restart, or past files that are complete.
            while incoming.file < incoming.manifest.files.count {
                let file = incoming.manifest.files[incoming.file]
                let written = try incoming.writer.resumeOffset(of: file.name)
                if written == 0 && file.size == 0 { try incoming.writer.write(file: file.name, at: 0, []) }
                if written < file.size {
                    incoming.offset = written
                    break
                }
                incoming.file += 1
                incoming.offset = 0
            }
        } catch {
            logger.warning("snapshot transfer abandoned", metadata: ["error": "\(error)"])
            incomingSnapshot = nil
            return
        }
        incomingSnapshot = incoming
        if incoming.file < incoming.manifest.files.count {
            requestNextChunk()
            return
        }
        incomingSnapshot!.isFinishing = true
        let writer = incoming.writer
        let result = await Task.detached { Result { try writer.finish() } }.value
        guard let current = incomingSnapshot, current.manifest == incoming.manifest else { return }
        switch result {
        case .success:
            incomingSnapshot = nil
            logger.info("snapshot received", metadata: ["index": "\(incoming.manifest.metadata.index)"])
            node.step(current.offer)
            await process()
        case .failure(let error):
            // The store discarded the files; fetch them again from the start.
            rejectedSnapshots += 1
            metrics.snapshotsRejected.increment()
            logger.warning("received snapshot failed verification; fetching it again", metadata: ["error": "\(error)"])
            do {
                incomingSnapshot = IncomingSnapshot(
                    offer: current.offer, manifest: current.manifest, writer: try snapshots.receive(current.manifest),
                    file: 0, offset: 0, lastActivity: ticks)
            } catch {
                incomingSnapshot = nil
                return
            }
            await continueFetching()
        }
    }

    func requestNextChunk() {
        guard let incoming = incomingSnapshot, incoming.file < incoming.manifest.files.count else { return }
        incomingSnapshot!.lastActivity = ticks
        let piece = Message.SnapshotPiece(
            index: incoming.manifest.metadata.index, term: incoming.manifest.metadata.term,
            file: incoming.manifest.files[incoming.file].name, offset: incoming.offset)
        sender.send(
            [Message(from: id, to: incoming.offer.from, term: node.term, payload: .snapshotChunkRequest(piece))],
            group: group)
    }
}
