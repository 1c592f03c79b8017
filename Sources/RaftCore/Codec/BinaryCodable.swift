/// A value with a binary encoding in Divan's format. The WAL, the snapshot manifest and the wire
/// protocol all use these encodings, so each type is encoded in exactly one place.
public protocol BinaryEncodable {
    func encode(to writer: inout ByteWriter)
}

/// A value that decodes from untrusted bytes, throwing `CodecError` on anything malformed.
public protocol BinaryDecodable {
    init(from reader: inout ByteReader) throws(CodecError)
}

/// Both directions.
public typealias BinaryCodable = BinaryEncodable & BinaryDecodable

extension BinaryEncodable {
    /// The value's encoding alone.
    public func encodedBytes() -> [UInt8] {
        var writer = ByteWriter()
        encode(to: &writer)
        return writer.bytes
    }
}

extension BinaryDecodable {
    /// Decodes a value that must fill `bytes` exactly.
    public init(decoding bytes: some Collection<UInt8>) throws(CodecError) {
        let contiguous = Array(bytes)
        let result: Result<Self, CodecError> = contiguous.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            do throws(CodecError) {
                let value = try Self(from: &reader)
                try reader.expectEnd(String(describing: Self.self))
                return .success(value)
            } catch {
                return .failure(error)
            }
        }
        self = try result.get()
    }
}
