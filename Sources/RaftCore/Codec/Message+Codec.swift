// The wire encoding of Raft messages. Payload tags are part of the format: never renumber them.

extension Message: BinaryCodable {
    public func encode(to writer: inout ByteWriter) {
        writer.writeVarint(from)
        writer.writeVarint(to)
        writer.writeVarint(term)
        switch payload {
        case .append(let append):
            writer.write(UInt8(0))
            writer.writeVarint(append.previousIndex)
            writer.writeVarint(append.previousTerm)
            writer.writeVarint(append.commit)
            writer.writeVarint(UInt64(append.entries.count))
            for entry in append.entries { entry.encode(to: &writer) }
        case .appendResponse(let response):
            writer.write(UInt8(1))
            writer.writeVarint(response.index)
            writer.write(response.isRejected)
            writer.writeVarint(response.hintIndex)
            writer.writeVarint(response.hintTerm)
        case .heartbeat(let commit, let readRound):
            writer.write(UInt8(2))
            writer.writeVarint(commit)
            writer.writeVarint(readRound)
        case .heartbeatResponse(let readRound):
            writer.write(UInt8(3))
            writer.writeVarint(readRound)
        case .voteRequest(let request):
            writer.write(UInt8(4))
            writer.write(request.isPreVote)
            writer.writeVarint(request.lastIndex)
            writer.writeVarint(request.lastTerm)
            writer.write(request.isTransfer)
        case .voteResponse(let isPreVote, let granted):
            writer.write(UInt8(5))
            writer.write(isPreVote)
            writer.write(granted)
        case .snapshot(let snapshot):
            writer.write(UInt8(6))
            snapshot.encode(to: &writer)
        case .readIndexRequest(let context):
            writer.write(UInt8(7))
            writer.writeVarint(context)
        case .readIndexResponse(let context, let index):
            writer.write(UInt8(8))
            writer.writeVarint(context)
            writer.writeVarint(index)
        case .timeoutNow:
            writer.write(UInt8(9))
        case .quiesce(let commit):
            writer.write(UInt8(10))
            writer.writeVarint(commit)
        case .snapshotChunkRequest(let piece):
            writer.write(UInt8(11))
            piece.encode(to: &writer)
        case .snapshotChunk(let piece, let data):
            writer.write(UInt8(12))
            piece.encode(to: &writer)
            writer.write(data != nil)
            if let data { writer.writeLengthPrefixed(data) }
        case .proposal(let id, let data):
            writer.write(UInt8(13))
            writer.writeVarint(id)
            writer.writeLengthPrefixed(data)
        case .proposalDropped(let id):
            writer.write(UInt8(14))
            writer.writeVarint(id)
        }
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        let from = try reader.readVarint("sender")
        let to = try reader.readVarint("recipient")
        let term = try reader.readVarint("message term")
        let tagOffset = reader.offset
        let payload: Payload
        switch try reader.readUInt8("message payload tag") {
        case 0:
            let previousIndex = try reader.readVarint("previous index")
            let previousTerm = try reader.readVarint("previous term")
            let commit = try reader.readVarint("commit index")
            let count = try reader.readCount("entries", minimumElementSize: Entry.headerSize + 1)
            var entries: [Entry] = []
            entries.reserveCapacity(count)
            for _ in 0..<count { entries.append(try Entry(from: &reader)) }
            payload = .append(Append(previousIndex: previousIndex, previousTerm: previousTerm, entries: entries, commit: commit))
        case 1:
            let index = try reader.readVarint("matched or rejected index")
            let isRejected = try reader.readBool("rejection flag")
            let hintIndex = try reader.readVarint("hint index")
            let hintTerm = try reader.readVarint("hint term")
            payload = .appendResponse(AppendResponse(index: index, isRejected: isRejected, hintIndex: hintIndex, hintTerm: hintTerm))
        case 2:
            let commit = try reader.readVarint("heartbeat commit")
            payload = .heartbeat(commit: commit, readRound: try reader.readVarint("read round"))
        case 3:
            payload = .heartbeatResponse(readRound: try reader.readVarint("read round"))
        case 4:
            let isPreVote = try reader.readBool("pre-vote flag")
            let lastIndex = try reader.readVarint("candidate's last index")
            let lastTerm = try reader.readVarint("candidate's last term")
            let isTransfer = try reader.readBool("transfer flag")
            payload = .voteRequest(VoteRequest(isPreVote: isPreVote, lastIndex: lastIndex, lastTerm: lastTerm, isTransfer: isTransfer))
        case 5:
            let isPreVote = try reader.readBool("pre-vote flag")
            payload = .voteResponse(isPreVote: isPreVote, granted: try reader.readBool("vote granted flag"))
        case 6:
            payload = .snapshot(try Snapshot(from: &reader))
        case 7:
            payload = .readIndexRequest(context: try reader.readVarint("read context"))
        case 8:
            let context = try reader.readVarint("read context")
            payload = .readIndexResponse(context: context, index: try reader.readVarint("read index"))
        case 9:
            payload = .timeoutNow
        case 10:
            payload = .quiesce(commit: try reader.readVarint("quiesce commit"))
        case 11:
            payload = .snapshotChunkRequest(try SnapshotPiece(from: &reader))
        case 12:
            let piece = try SnapshotPiece(from: &reader)
            let isAvailable = try reader.readBool("snapshot availability flag")
            payload = .snapshotChunk(piece, data: isAvailable ? try reader.readLengthPrefixed("snapshot chunk") : nil)
        case 13:
            let id = try reader.readVarint("proposal id")
            payload = .proposal(id: id, data: try reader.readLengthPrefixed("forwarded proposal"))
        case 14:
            payload = .proposalDropped(id: try reader.readVarint("proposal id"))
        case let tag:
            throw CodecError(offset: tagOffset, expected: "message payload tag 0 to 14, found \(tag)")
        }
        self.init(from: from, to: to, term: term, payload: payload)
    }
}

extension Message.SnapshotPiece: BinaryCodable {
    public func encode(to writer: inout ByteWriter) {
        writer.writeVarint(index)
        writer.writeVarint(term)
        writer.writeLengthPrefixed(Array(file.utf8))
        writer.writeVarint(offset)
    }

    public init(from reader: inout ByteReader) throws(CodecError) {
        let index = try reader.readVarint("snapshot index")
        let term = try reader.readVarint("snapshot term")
        let file = String(decoding: try reader.readLengthPrefixed("snapshot file name"), as: UTF8.self)
        self.init(index: index, term: term, file: file, offset: try reader.readVarint("snapshot file offset"))
    }
}
