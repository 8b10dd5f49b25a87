import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Finds the usage figures of a response as it passes, without buffering it: each piece is
/// scanned with the last bytes of the one before, so a key split across pieces is still found.
/// Inside JSON strings quotes are escaped, so the raw patterns only match real keys. The last
/// value seen wins (a stream's final usage). The keys of every API:
/// - chat, completions: `prompt_tokens`, `prompt_tokens_details.cached_tokens`, `completion_tokens`;
/// - Responses: `input_tokens`, `input_tokens_details.cached_tokens`, `output_tokens` (the
///   `response.completed` event when streamed);
/// - Messages (`anthropic`): `input_tokens` (without the cache's part), `cache_read_input_tokens`,
///   `cache_creation_input_tokens`, `output_tokens` (`message_start`, then `message_delta`).
struct UsageScanner {
    /// `/v1/messages`: the prompt is `input_tokens` plus what was read from or written to the cache.
    var anthropic = false
    private var inputTokens: Int?
    private var cachedValue: Int?
    private var cacheRead: Int?
    private var cacheCreation: Int?
    private var outputTokens: Int?
    /// The last bytes of the stream so far (held inline: no allocation per response). A key,
    /// its colon and its number span at most 48 bytes, so one cut by any number of piece
    /// boundaries is whole in this tail joined to the start of the next piece.
    private var tail = InlineArray<48, UInt8>(repeating: 0)
    private var tailCount = 0

    /// The prompt's tokens as the replica counted them.
    var promptTokens: Int? {
        guard let input = self.inputTokens else { return nil }
        return self.anthropic ? input + (self.cacheRead ?? 0) + (self.cacheCreation ?? 0) : input
    }

    /// Of those, the ones served from its prefix cache.
    var cachedTokens: Int? { self.anthropic ? self.cacheRead : self.cachedValue }

    /// Tokens generated.
    var completionTokens: Int? { self.outputTokens }

    /// Only the end of each piece is scanned: `usage` closes a JSON answer and is the last
    /// event of a stream, and an object cut by a piece boundary is caught by the seam.
    static let window = 2048
    /// Bytes of a piece's start joined to the previous tail.
    static let seamBytes = 56

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
            var tail = InlineArray<48, UInt8>(repeating: 0)
            for i in 0..<fromOld { tail[i] = self.tail[self.tailCount - fromOld + i] }
            for i in 0..<kept { tail[fromOld + i] = all[all.count - kept + i] }
            self.tail = tail
            self.tailCount = fromOld + kept
        }
    }

    /// Looks at every `":` (memchr for the colon) and compares the key before it with the ones
    /// of that length.
    private mutating func scan(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let base = bytes.baseAddress else { return }
        var i = 14
        while i < bytes.count, let hit = memchr(base + i, Int32(UInt8(ascii: ":")), bytes.count - i) {
            let colon = UnsafeRawPointer(base).distance(to: UnsafeRawPointer(hit))
            i = colon + 1
            guard bytes[colon - 1] == UInt8(ascii: "\""), bytes[colon - 2] == UInt8(ascii: "s") else { continue }
            func key(_ k: [UInt8]) -> Bool {
                colon >= k.count && UnsafeBufferPointer(rebasing: bytes[(colon - k.count)..<colon]).elementsEqual(k)
            }
            let slot: WritableKeyPath<UsageScanner, Int?>
            if key(Self.prompt) || key(Self.input) {
                slot = \.inputTokens
            } else if key(Self.cached) {
                slot = \.cachedValue
            } else if key(Self.completion) || key(Self.output) {
                slot = \.outputTokens
            } else if key(Self.cacheRead) {
                slot = \.cacheRead
            } else if key(Self.cacheCreation) {
                slot = \.cacheCreation
            } else {
                continue
            }
            guard let value = Self.number(bytes, from: colon + 1) else { continue }
            self[keyPath: slot] = value
        }
    }

    static let prompt = Array(#""prompt_tokens""#.utf8)
    static let input = Array(#""input_tokens""#.utf8)
    static let cached = Array(#""cached_tokens""#.utf8)
    static let completion = Array(#""completion_tokens""#.utf8)
    static let output = Array(#""output_tokens""#.utf8)
    static let cacheRead = Array(#""cache_read_input_tokens""#.utf8)
    static let cacheCreation = Array(#""cache_creation_input_tokens""#.utf8)

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
