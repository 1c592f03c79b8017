import Glibc
import Histogram
import SystemPackage

// Helpers shared by the `divan bench` commands.

/// `value` rounded to `digits` decimals (Foundation's String(format:) is not used in this target).
func fixed(_ value: Double, digits: Int = 0) -> String {
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let scaled = Int((value * scale).rounded())
    if digits == 0 { return "\(scaled)" }
    let sign = scaled < 0 ? "-" : ""
    let magnitude = abs(scaled)
    let fraction = String(magnitude % Int(scale))
    return sign + "\(magnitude / Int(scale))." + String(repeating: "0", count: digits - fraction.count) + fraction
}

/// A serial fdatasync measurement: syncs per second and latency percentiles in microseconds.
struct SyncLatencies {
    var rate: Double
    var p50: Double
    var p99: Double
}

/// Appends 4 KiB and fdatasyncs, one after the other, to a growing file: the disk's own limit.
func rawSyncRate(_ path: FilePath, seconds: Double) throws -> SyncLatencies {
    let fd = try FileDescriptor.open(path, .writeOnly, options: [.create, .truncate, .append], permissions: .ownerReadWrite)
    defer { try? fd.close() }
    let block = [UInt8](repeating: 0xA5, count: 4096)
    var histogram = Histogram<UInt64>(highestTrackableValue: 10_000_000_000, numberOfSignificantValueDigits: .three)
    let clock = ContinuousClock()
    let start = clock.now
    var count = 0
    while clock.now - start < .seconds(seconds) {
        let begin = clock.now
        _ = try block.withUnsafeBytes { try fd.writeAll($0) }
        guard fdatasync(fd.rawValue) == 0 else { throw Errno(rawValue: errno) }
        _ = histogram.record(UInt64((clock.now - begin) / .nanoseconds(1)))
        count += 1
    }
    let elapsed = Double((clock.now - start) / .microseconds(1)) / 1_000_000
    return SyncLatencies(
        rate: Double(count) / elapsed, p50: Double(histogram.valueAtPercentile(50)) / 1000,
        p99: Double(histogram.valueAtPercentile(99)) / 1000)
}

