import Foundation

// Helpers shared by the `divan bench` commands that drive other programs.

/// The path of an installed program, searched in PATH and the sbin directories (where nginx lives).
func executable(_ name: String) -> String? {
    let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") + ["/usr/sbin", "/usr/bin"]
    return directories.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// The first three fields of /proc/loadavg: how busy the machine was while measuring.
func loadAverage() -> String {
    (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
}

/// User plus system CPU seconds of the given processes, all their threads included.
func cpuSeconds(_ pids: [pid_t]) -> Double {
    let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
    return pids.reduce(0) { total, pid in
        guard let fields = statFields(pid), fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return total }
        // Fields 14 and 15 of the line (utime, stime) are 11 and 12 after the command name.
        return total + (user + system) / ticks
    }
}

/// `pid` and every process whose parent it is (nginx's workers, say).
func processTree(_ pid: pid_t) -> [pid_t] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    let children = entries.compactMap { pid_t($0) }.filter { child in
        // Field 4 of the line (the parent's pid) is 1 after the command name.
        statFields(child).flatMap { $0.count > 1 ? pid_t($0[1]) : nil } == pid
    }
    return [pid] + children
}

/// The fields of /proc/PID/stat after the command name (which may contain spaces).
private func statFields(_ pid: pid_t) -> [Substring]? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return nil }
    return stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
}
