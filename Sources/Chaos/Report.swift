import Foundation
import Linearizability

/// The end-of-run report: operations by outcome, faults, recovery times and the result, as text
/// and as a latency-over-time picture with the fault windows shaded.
struct Report {
    let options: ChaosOptions
    let samples: [OperationSample]
    let faults: [FaultRecord]
    let workloadStart: Double
    let healStart: Double
    /// Seconds from the final heal until every node was ready and took a write; nil if it never did.
    let recovery: Double?
    let healNotes: [String]
    let finalReads: FinalReads
    let result: String
    let checkSeconds: Double
    let output: String

    /// Seconds from the end of `fault` until a write or compare-and-set invoked after it succeeded.
    func recoveryTime(after fault: FaultRecord) -> Double? {
        let end = Int64(fault.end * 1e9)
        return samples.filter { $0.kind == .ok && $0.function != .read && $0.invoked >= end }.map(\.completed).min()
            .map { Double($0 - end) / 1e9 }
    }

    var text: String {
        var lines = ["divan chaos report", ""]
        lines.append("seed \(options.seed); \(options.nodes) nodes (founding voters 1...\(min(options.voters, options.nodes))); \(options.clients) clients; "
            + "\(options.keys) keys; \(Int(options.duration)) s of faults \(options.faults.map(\.rawValue).joined(separator: ","))"
            + (options.unsafeServerOptions.isEmpty ? "" : "; UNSAFE server options \(options.unsafeServerOptions.joined(separator: " "))"))
        lines.append("fault injection: TCP relay between every directed pair of nodes (Raft traffic); clients talk to the nodes directly")
        lines.append("")
        lines.append("operations (\(samples.count)) by outcome:")
        lines.append("            ok      fail    info")
        for function in [HistoryEvent.Function.read, .write, .cas] {
            let mine = samples.filter { $0.function == function }
            let counts = [HistoryEvent.Kind.ok, .fail, .info].map { kind in mine.filter { $0.kind == kind }.count }
            lines.append(function.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0)
                + counts.map { String($0).leftPadded(to: 8) }.joined())
        }
        lines.append("final reads: \(finalReads.count) (every key through every node)")
        lines.append("")
        lines.append("faults (\(faults.count)):")
        for kind in FaultKind.allCases {
            let count = faults.filter { $0.kind == kind }.count
            if count > 0 { lines.append("  \(kind.rawValue): \(count)") }
        }
        for fault in faults {
            let recovered = recoveryTime(after: fault).map { String(format: "first write %.2f s after", $0) } ?? "no write after"
            lines.append(String(format: "  %6.1f–%6.1f s  ", fault.start, fault.end) + "\(fault.kind.rawValue) \(fault.detail): \(fault.result); \(recovered)")
        }
        lines += healNotes.map { "  heal: \($0)" }
        lines.append(recovery.map { String(format: "recovery after the final heal: %.1f s", $0) } ?? "the cluster did NOT recover after the final heal")
        lines.append(String(format: "checked in %.2f s", checkSeconds))
        lines.append("")
        lines.append("result: \(result)")
        lines.append("")
        lines.append("written to \(output): history.jsonl, nemesis.jsonl, timeline.svg, report.txt, nodes/*.log"
            + (result.hasPrefix("NOT") ? ", violation.html" : ""))
        return lines.joined(separator: "\n") + "\n"
    }

    /// Latency (log scale, 1 ms to 10 s) of every operation over time, coloured by outcome, with
    /// each fault's window shaded and labelled.
    var svg: String {
        let width = 1200.0, height = 420.0, left = 60.0, right = 20.0, top = 30.0, bottom = 40.0
        let span = max(healStart, samples.map { Double($0.completed) / 1e9 }.max() ?? 1) + 1
        func x(_ seconds: Double) -> Double { left + seconds / span * (width - left - right) }
        func y(_ latency: Double) -> Double {
            let clamped = min(max(latency, 0.001), 10)
            return top + (1 - (log10(clamped) + 3) / 4) * (height - top - bottom)
        }
        var parts = [
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"11\">",
            "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
            "<text x=\"\(left)\" y=\"18\" font-size=\"13\">divan chaos, seed \(options.seed): operation latency over time (faults shaded)</text>",
        ]
        let colours: [FaultKind: String] = [.kill: "#e41a1c", .pause: "#984ea3", .partition: "#377eb8", .membership: "#4daf4a", .disk: "#ff7f00"]
        for (index, fault) in faults.enumerated() {
            let colour = colours[fault.kind] ?? "#999"
            parts.append("<rect x=\(quote(x(fault.start))) y=\(quote(top)) width=\(quote(max(1, x(fault.end) - x(fault.start)))) height=\(quote(height - top - bottom)) fill=\"\(colour)\" fill-opacity=\"0.15\"><title>\(escape("\(fault.kind.rawValue) \(fault.detail): \(fault.result)"))</title></rect>")
            parts.append("<text x=\(quote(x(fault.start) + 2)) y=\(quote(top + 12 + Double(index % 3) * 12)) fill=\"\(colour)\">\(fault.kind.rawValue)</text>")
        }
        parts.append("<rect x=\(quote(x(healStart))) y=\(quote(top)) width=\"2\" height=\(quote(height - top - bottom)) fill=\"black\"><title>final heal</title></rect>")
        for (latency, label) in [(0.001, "1 ms"), (0.01, "10 ms"), (0.1, "100 ms"), (1.0, "1 s"), (10.0, "10 s")] {
            parts.append("<line x1=\(quote(left)) x2=\(quote(width - right)) y1=\(quote(y(latency))) y2=\(quote(y(latency))) stroke=\"#ddd\"/>")
            parts.append("<text x=\"4\" y=\(quote(y(latency) + 4))>\(label)</text>")
        }
        var second = 0.0
        while second <= span {
            parts.append("<text x=\(quote(x(second) - 8)) y=\(quote(height - bottom + 16))>\(Int(second)) s</text>")
            second += span > 120 ? 60 : 10
        }
        let dots: [HistoryEvent.Kind: String] = [.ok: "#1a9641", .fail: "#fdae61", .info: "#d7191c"]
        // An hour's run has hundreds of thousands of operations: draw at most about 20,000 of the
        // successful ones (evenly spread), and every failed or unknown one.
        let stride = max(1, samples.count / 20_000)
        for (index, sample) in samples.enumerated() where sample.kind != .ok || index % stride == 0 {
            let latency = Double(sample.completed - sample.invoked) / 1e9
            parts.append("<circle cx=\(quote(x(Double(sample.invoked) / 1e9))) cy=\(quote(y(latency))) r=\"1.5\" fill=\"\(dots[sample.kind] ?? "#000")\"/>")
        }
        parts.append("<text x=\(quote(width - 330)) y=\(quote(height - 8))><tspan fill=\"#1a9641\">● ok</tspan>  <tspan fill=\"#fdae61\">● fail</tspan>  <tspan fill=\"#d7191c\">● info (unknown)</tspan>  | black bar: final heal</text>")
        parts.append("</svg>")
        return parts.joined(separator: "\n") + "\n"
    }

    private func quote(_ value: Double) -> String { "\"\(String(format: "%.1f", value))\"" }

    private func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: " ", count: max(0, width - count)) + self
    }
}
