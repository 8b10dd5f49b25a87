import NIOCore

/// Holds back the end of an SSE stream that is not a whole event yet, so that everything sent
/// to the client ends on an event boundary (a blank line) and an error event can follow cleanly.
/// A partial event longer than `limit` is let through (it is no SSE the proxy can help).
struct SSEEventBuffer {
    private var pending: ByteBuffer?
    static let limit = 64 << 10

    mutating func append(_ piece: ByteBuffer) {
        if var p = self.pending {
            self.pending = nil
            var piece = piece
            p.writeBuffer(&piece)
            self.pending = p
        } else {
            self.pending = piece
        }
    }

    /// The bytes through the last event boundary (everything when `force` or past the limit).
    mutating func takeComplete(force: Bool) -> ByteBuffer? {
        guard var p = self.pending, p.readableBytes > 0 else {
            self.pending = nil
            return nil
        }
        let cut: Int? = force || p.readableBytes > Self.limit ? p.readableBytes : p.withUnsafeReadableBytes { raw in
            var i = raw.count - 1
            while i >= 1 {
                if raw[i] == 0x0A, raw[i - 1] == 0x0A || (i >= 2 && raw[i - 1] == 0x0D && raw[i - 2] == 0x0A) { return i + 1 }
                i -= 1
            }
            return nil
        }
        guard let cut else { return nil }
        let ready = p.readSlice(length: cut)!
        self.pending = p.readableBytes > 0 ? p : nil
        return ready
    }
}
