import Checksum
import Testing

@Suite struct CRC32CTests {
    /// Published vectors: the CRC catalogue's check value, and RFC 3720 (iSCSI) appendix B.4.
    @Test(arguments: [
        (Array("123456789".utf8), UInt32(0xE306_9283)),
        ([UInt8](repeating: 0, count: 32), 0x8A91_36AA),
        ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
        (Array(0..<32), 0x46DD_794E),
        (Array((0..<32).reversed()), 0x113F_DB5C),
        ([], 0),
    ] as [([UInt8], UInt32)])
    func knownVectors(bytes: [UInt8], expected: UInt32) {
        #expect(CRC32C.checksum(bytes) == expected)
    }

    @Test func incrementalEqualsWholeAtEverySplitAndAlignment() {
        let data = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) }
        for start in 0..<9 {
            let slice = Array(data[start...])
            let whole = CRC32C.checksum(slice)
            #expect(whole == bytewise(slice), "start \(start)")
            for split in stride(from: 0, through: slice.count, by: 7) {
                var crc = CRC32C()
                crc.update(slice[..<split])
                var resumed = CRC32C(continuing: crc.value)
                resumed.update(slice[split...])
                #expect(resumed.value == whole, "start \(start) split \(split)")
            }
        }
    }

    /// The textbook bit-at-a-time definition, as an independent oracle.
    private func bytewise(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        }
        return ~crc
    }
}
