import KVWire

/// Redis's glob patterns (`stringmatchlen`) for KEYS, SCAN MATCH and CONFIG GET: `*`, `?`,
/// `[abc]`, `[^a]`, `[a-z]` and `\` to quote the next character.
struct GlobPattern: Sendable {
    private let pattern: Bytes

    init(_ pattern: Bytes) {
        self.pattern = pattern
    }

    /// The bytes every match starts with, so a scan can start there instead of at the first key.
    var literalPrefix: Bytes {
        var prefix: Bytes = []
        var index = 0
        while index < pattern.count {
            switch pattern[index] {
            case UInt8(ascii: "*"), UInt8(ascii: "?"), UInt8(ascii: "["):
                return prefix
            case UInt8(ascii: "\\") where index + 1 < pattern.count:
                prefix.append(pattern[index + 1])
                index += 2
            default:
                prefix.append(pattern[index])
                index += 1
            }
        }
        return prefix
    }

    func matches(_ text: Bytes) -> Bool {
        Self.match(pattern[...], text[...])
    }

    private static func match(_ pattern: ArraySlice<UInt8>, _ text: ArraySlice<UInt8>) -> Bool {
        var pattern = pattern
        var text = text
        while let token = pattern.first {
            switch token {
            case UInt8(ascii: "*"):
                while pattern.first == UInt8(ascii: "*") { pattern = pattern.dropFirst() }
                if pattern.isEmpty { return true }
                var rest = text
                while true {
                    if match(pattern, rest) { return true }
                    guard !rest.isEmpty else { return false }
                    rest = rest.dropFirst()
                }
            case UInt8(ascii: "?"):
                guard !text.isEmpty else { return false }
                text = text.dropFirst()
                pattern = pattern.dropFirst()
            case UInt8(ascii: "["):
                guard let byte = text.first else { return false }
                pattern = pattern.dropFirst()
                let isNegated = pattern.first == UInt8(ascii: "^")
                if isNegated { pattern = pattern.dropFirst() }
                var isMatched = false
                while let class_ = pattern.first, class_ != UInt8(ascii: "]") {
                    if class_ == UInt8(ascii: "\\"), pattern.count >= 2 {
                        pattern = pattern.dropFirst()
                        if pattern.first == byte { isMatched = true }
                        pattern = pattern.dropFirst()
                    } else if pattern.count >= 3, pattern[pattern.startIndex + 1] == UInt8(ascii: "-") {
                        var low = class_
                        var high = pattern[pattern.startIndex + 2]
                        if low > high { swap(&low, &high) }
                        if byte >= low && byte <= high { isMatched = true }
                        pattern = pattern.dropFirst(3)
                    } else {
                        if class_ == byte { isMatched = true }
                        pattern = pattern.dropFirst()
                    }
                }
                // An unterminated class ends the pattern, as in Redis.
                pattern = pattern.dropFirst()
                if isNegated { isMatched.toggle() }
                guard isMatched else { return false }
                text = text.dropFirst()
            case UInt8(ascii: "\\") where pattern.count >= 2:
                pattern = pattern.dropFirst()
                guard text.first == pattern.first else { return false }
                text = text.dropFirst()
                pattern = pattern.dropFirst()
            default:
                guard text.first == token else { return false }
                text = text.dropFirst()
                pattern = pattern.dropFirst()
            }
        }
        return text.isEmpty
    }
}
