import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Finds `usage.prompt_tokens` and `usage.prompt_tokens_details.cached_tokens` in a response
/// as it passes, without buffering it: each piece is scanned with the last bytes of the one
/// before, so a key split across pieces is still found. Inside JSON strings quotes are escaped,
/// so the raw patterns only match real keys. The last value seen wins (a stream's final usage).
struct UsageScanner {
    private(set) var promptTokens: Int?
    private(set) var cachedTokens: Int?
    /// `usage.completion_tokens`.
    private(set) var completionTokens: Int?
    /// The last bytes of the stream so far (held inline: no allocation per response). A key,
    /// its colon and its number span at most 40 bytes, so one cut by any number of piece
    /// boundaries is whole in this tail joined to the start of the next piece.
    private var tail = InlineArray<40, UInt8>(repeating: 0)
    private var tailCount = 0

    /// Only the end of each piece is scanned: `usage` closes a JSON answer and is the last
    /// event of a stream, and an object cut by a piece boundary is caught by the seam.
    static let window = 2048
    /// Bytes of a piece's start joined to the previous tail.
    static let seamBytes = 48

    mutating func feed(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { raw in
            let all = UnsafeBufferPointer(start: raw.baseAddress?.assumingMemoryBound(to: UInt8.self), count: raw.count)
            if self.tailCount > 0 {
                // A key split across the boundary: look at the tail joined with the piece's start.
                let head = min(all.count, Self.seamBytes)
                withUnsafeTemporaryAllocation(of: UInt8.self, capacity: self.tailCount + head) { seam in
                    for i in 0..<self.tailCount { seam[i] = self.tail[i] }
                    for i in 0..<head { seam[self.tailCount + i] = all[i] }
                    self.scan(UnsafeBufferPointer(seam))
                }
            }
            self.scan(UnsafeBufferPointer(rebasing: all[max(0, all.count - Self.window)...]))
            // The stream's last bytes, which span pieces when pieces are short.
            let kept = min(all.count, self.tail.count)
            let fromOld = min(self.tailCount, self.tail.count - kept)
            var tail = InlineArray<40, UInt8>(repeating: 0)
            for i in 0..<fromOld { tail[i] = self.tail[self.tailCount - fromOld + i] }
            for i in 0..<kept { tail[fromOld + i] = all[all.count - kept + i] }
            self.tail = tail
            self.tailCount = fromOld + kept
        }
    }

    /// Looks at every `:` (memchr) preceded by one of the two keys.
    private mutating func scan(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let base = bytes.baseAddress else { return }
        var i = 15
        while i < bytes.count, let hit = memchr(base + i, Int32(UInt8(ascii: ":")), bytes.count - i) {
            let colon = UnsafeRawPointer(base).distance(to: UnsafeRawPointer(hit))
            i = colon + 1
            let key = UnsafeBufferPointer(rebasing: bytes[(colon - 15)..<colon])
            let isPrompt = key.elementsEqual(Self.prompt)
            if isPrompt || key.elementsEqual(Self.cached) {
                guard let value = Self.number(bytes, from: colon + 1) else { continue }
                if isPrompt { self.promptTokens = value } else { self.cachedTokens = value }
            } else if colon >= 19, UnsafeBufferPointer(rebasing: bytes[(colon - 19)..<colon]).elementsEqual(Self.completion),
                let value = Self.number(bytes, from: colon + 1)
            {
                self.completionTokens = value
            }
        }
    }

    static let prompt = Array(#""prompt_tokens""#.utf8)
    static let cached = Array(#""cached_tokens""#.utf8)
    static let completion = Array(#""completion_tokens""#.utf8)

    /// A non-negative integer after optional spaces; nil when cut by the end (read again with the seam).
    static func number(_ bytes: UnsafeBufferPointer<UInt8>, from: Int) -> Int? {
        var j = from
        while j < bytes.count, bytes[j] == 0x20 { j += 1 }
        var value = 0
        var digits = 0
        while j < bytes.count, bytes[j] >= 0x30, bytes[j] <= 0x39, digits < 12 {
            value = value * 10 + Int(bytes[j] - 0x30)
            j += 1
            digits += 1
        }
        return digits > 0 && j < bytes.count ? value : nil
    }
}
