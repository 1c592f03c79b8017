/// Why bytes could not be decoded: where, and what was expected there.
public struct CodecError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The offset, from the start of the reader's bytes, at which decoding failed.
    public var offset: Int
    /// What the decoder expected to find.
    public var expected: String

    public init(offset: Int, expected: String) {
        self.offset = offset
        self.expected = expected
    }

    public var description: String { "malformed bytes at offset \(offset): expected \(expected)" }
}

/// Reads values written by `ByteWriter` from bytes that may be truncated or hostile: every read
/// checks its bounds and throws `CodecError` rather than trapping.
///
/// The reader borrows its bytes; use it inside the `withUnsafeBytes` scope that produced them.
public struct ByteReader {
    private let base: UnsafeRawBufferPointer
    /// The offset of the next byte to read.
    public private(set) var offset: Int

    /// Reads `buffer` from its start.
    public init(_ buffer: UnsafeRawBufferPointer) {
        base = buffer
        offset = 0
    }

    /// The number of bytes not read yet.
    public var remaining: Int { base.count - offset }

    public var isAtEnd: Bool { offset == base.count }

    /// Throws unless every byte was read, so trailing garbage is not silently accepted.
    public func expectEnd(_ what: String) throws(CodecError) {
        if offset != base.count {
            throw CodecError(offset: offset, expected: "end of \(what), found \(remaining) more bytes")
        }
    }

    private mutating func take(_ count: Int, _ what: String) throws(CodecError) -> UnsafeRawBufferPointer {
        guard count >= 0, count <= remaining else {
            throw CodecError(offset: offset, expected: "\(what) (\(count) bytes, \(remaining) left)")
        }
        let slice = UnsafeRawBufferPointer(rebasing: base[offset..<offset + count])
        offset += count
        return slice
    }

    public mutating func readUInt8(_ what: String = "a byte") throws(CodecError) -> UInt8 {
        try take(1, what)[0]
    }

    public mutating func readBool(_ what: String = "a boolean") throws(CodecError) -> Bool {
        let start = offset
        switch try readUInt8(what) {
        case 0: return false
        case 1: return true
        case let other: throw CodecError(offset: start, expected: "\(what) as 0 or 1, found \(other)")
        }
    }

    public mutating func readUInt32(_ what: String = "a 32-bit integer") throws(CodecError) -> UInt32 {
        UInt32(littleEndian: try take(4, what).loadUnaligned(as: UInt32.self))
    }

    public mutating func readUInt64(_ what: String = "a 64-bit integer") throws(CodecError) -> UInt64 {
        UInt64(littleEndian: try take(8, what).loadUnaligned(as: UInt64.self))
    }

    public mutating func readVarint(_ what: String = "a varint") throws(CodecError) -> UInt64 {
        let start = offset
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let byte = try readUInt8(what)
            // The tenth byte may only carry the single top bit of a 64-bit value.
            if shift == 63 && byte > 1 {
                throw CodecError(offset: start, expected: "\(what) that fits in 64 bits")
            }
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
    }

    public mutating func readSignedVarint(_ what: String = "a signed varint") throws(CodecError) -> Int64 {
        let raw = try readVarint(what)
        return Int64(bitPattern: raw >> 1) ^ -Int64(bitPattern: raw & 1)
    }

    /// Reads an element count, rejecting counts that could not fit in the bytes left (each element
    /// takes at least `minimumElementSize` bytes), so hostile input cannot make us allocate wildly.
    public mutating func readCount(_ what: String, minimumElementSize: Int = 1) throws(CodecError) -> Int {
        let start = offset
        let count: UInt64
        do throws(CodecError) {
            count = try readVarint(what)
        } catch {
            throw CodecError(offset: error.offset, expected: "the number of \(what)")
        }
        guard count <= UInt64(remaining / max(1, minimumElementSize)) else {
            throw CodecError(offset: start, expected: "at most \(remaining / max(1, minimumElementSize)) \(what), found \(count)")
        }
        return Int(count)
    }

    /// Reads a byte string written by `writeLengthPrefixed`.
    public mutating func readLengthPrefixed(_ what: String = "a byte string") throws(CodecError) -> [UInt8] {
        let count = try readCount(what)
        return Array(try take(count, what))
    }

    /// Reads `count` bytes as they are.
    public mutating func readRaw(_ count: Int, _ what: String = "raw bytes") throws(CodecError) -> UnsafeRawBufferPointer {
        try take(count, what)
    }

    /// The bytes read since `start`, for a checksum over a decoded region.
    public func bytesRead(since start: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: base[min(start, offset)..<offset])
    }

    /// Skips `count` bytes.
    public mutating func skip(_ count: Int, _ what: String = "bytes to skip") throws(CodecError) {
        _ = try take(count, what)
    }
}
