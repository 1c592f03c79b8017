extension Violation: CustomStringConvertible {
    /// A plain-text report: the window, one operation a line, then why it cannot be ordered.
    public var description: String {
        let origin = window.map(\.invokeTime).min() ?? 0
        let position = Dictionary(
            partialLinearization.enumerated().map { ($0.element.id, $0.offset + 1) }, uniquingKeysWith: { a, _ in a })
        let unorderedIDs = Set(unordered.map(\.id))
        var lines = [
            "key \"\(key)\": not linearizable.",
            "The smallest window that cannot be ordered has \(window.count) operation(s); times in ns from \(origin):",
        ]
        for operation in window {
            let interval = "[\(operation.invokeTime - origin), \(operation.returnTime.map { String($0 - origin) } ?? "?")]"
            var note: String
            if let order = position[operation.id] {
                note = "ordered #\(order)"
            } else if unorderedIDs.contains(operation.id) {
                note = "cannot be ordered"
            } else {
                note = "outcome unknown, left out"
            }
            if operation.id == culprit.id { note += "  <- culprit" }
            if let line = operation.line { note += "  (line \(line))" }
            lines.append(
                "  process \(pad(String(operation.process), 4)) \(pad(operation.action.description, 22)) "
                    + "\(pad(interval, 24)) \(note)")
        }
        let order = partialLinearization.map(\.action.description).joined(separator: ", ")
        lines.append(
            "The longest order found starts the window with the register at \(stateBefore)"
                + (order.isEmpty ? "" : ", runs \(order),") + " and leaves it at \(stateAtCulprit);")
        lines.append(
            "then \(culprit.action) by process \(culprit.process) must return, and no order places it.")
        return lines.joined(separator: "\n")
    }
}

private func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}

/// Draws a violation's window as a self-contained HTML page holding an SVG timeline.
public enum Timeline {
    /// One row per process, one bar per operation from invocation to return; bars of operations with
    /// unknown outcome run to the right edge, dashed.
    public static func html(for violation: Violation) -> String {
        let window = violation.window
        let processes = Array(Set(window.map(\.process))).sorted()
        let row = Dictionary(processes.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { a, _ in a })
        let start = window.map(\.invokeTime).min() ?? 0
        let lastKnown = window.flatMap { [$0.invokeTime, $0.returnTime ?? $0.invokeTime] }.max() ?? start
        let span = Double(max(lastKnown - start, 1)) * 1.15
        let (left, plotWidth, rowHeight, top) = (110.0, 900.0, 46.0, 30.0)
        let height = top + rowHeight * Double(processes.count) + 40
        let position = Dictionary(
            violation.partialLinearization.enumerated().map { ($0.element.id, $0.offset + 1) },
            uniquingKeysWith: { a, _ in a })
        let unorderedIDs = Set(violation.unordered.map(\.id))
        func x(_ time: Int64) -> Double { left + Double(time - start) / span * plotWidth }

        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(left + plotWidth + 20))" \
            height="\(Int(height))" font-family="monospace" font-size="12">

            """
        for (index, process) in processes.enumerated() {
            let y = top + rowHeight * Double(index)
            svg += """
                <text x="8" y="\(y + 24)">process \(process)</text>
                <line x1="\(left)" y1="\(y + rowHeight - 4)" x2="\(left + plotWidth)" \
                y2="\(y + rowHeight - 4)" stroke="#eee"/>

                """
        }
        for tick in 0...4 {
            let time = start + Int64(Double(tick) / 4 * span / 1.15)
            let tickX = x(time)
            svg += """
                <line x1="\(tickX)" y1="\(top - 6)" x2="\(tickX)" y2="\(height - 36)" stroke="#ddd"/>
                <text x="\(tickX + 2)" y="\(height - 20)" fill="#666">+\(time - start) ns</text>

                """
        }
        for operation in window {
            let y = top + rowHeight * Double(row[operation.process] ?? 0) + 8
            let x1 = x(operation.invokeTime)
            let x2 = operation.returnTime.map(x) ?? left + plotWidth
            let fill: String
            var label = operation.action.description
            if operation.id == violation.culprit.id {
                fill = "#e74c3c"
                label += " (culprit)"
            } else if unorderedIDs.contains(operation.id) {
                fill = "#f39c12"
            } else if let order = position[operation.id] {
                fill = "#5dade2"
                label = "#\(order) " + label
            } else {
                fill = "#d5d8dc"
            }
            let dash = operation.isOutcomeKnown ? "" : " stroke-dasharray=\"5,3\""
            let title = "\(operation.action) invoked \(operation.invokeTime), returned "
                + (operation.returnTime.map(String.init) ?? "unknown")
                + (operation.line.map { ", line \($0)" } ?? "")
            svg += """
                <g><title>\(escape(title))</title>\
                <rect x="\(x1)" y="\(y)" width="\(max(x2 - x1, 3))" height="26" rx="4" fill="\(fill)" \
                stroke="#333"\(dash)/>\
                <text x="\(x1 + 4)" y="\(y + 17)">\(escape(label))</text></g>

                """
        }
        svg += "</svg>"
        return """
            <!DOCTYPE html>
            <html><head><meta charset="utf-8"><title>Linearizability violation on \(escape(violation.key))</title>
            <style>body{font-family:sans-serif;margin:20px} pre{background:#f6f6f6;padding:10px}
            .key span{display:inline-block;width:14px;height:14px;margin:0 4px 0 14px;vertical-align:middle}</style>
            </head><body>
            <h2>Key \(escape(violation.key)): not linearizable</h2>
            <p class="key"><span style="background:#5dade2"></span>placed by the longest order found (#n: its position)\
            <span style="background:#e74c3c"></span>culprit\
            <span style="background:#f39c12"></span>cannot be ordered\
            <span style="background:#d5d8dc"></span>outcome unknown, left out; a dashed bar never returned</p>
            \(svg)
            <pre>\(escape(violation.description))</pre>
            </body></html>

            """
    }

    private static func escape(_ text: String) -> String {
        var escaped = ""
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
