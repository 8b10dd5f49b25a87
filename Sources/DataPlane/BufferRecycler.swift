import DequeModule
import NIOCore

/// Head buffers of one event loop, reused from request to request.
///
/// Each proxied request builds two heads (the request for the replica, the response for the
/// client), each a fresh `ByteBuffer`: two allocations apiece, and memory that is cold in the
/// cache. A buffer handed to `context.write` is still referenced by the channel until the bytes
/// are on the socket, so a returned buffer is only reused once that reference is gone: `take`
/// reuses the oldest buffer if nothing else holds it, and otherwise moves it to the back and
/// allocates (so the set grows to what one batch of events has in flight before its flush).
/// Bounded: at most `limit` buffers of at most `maxBytes` each are kept.
///
/// Only ever touched on its own event loop.
final class BufferRecycler {
    private var spare = Deque<ByteBuffer>()
    let limit: Int
    let maxBytes: Int

    init(limit: Int = 64, maxBytes: Int = 32 << 10) {
        self.limit = limit
        self.maxBytes = maxBytes
        self.spare.reserveCapacity(limit)
    }

    var count: Int { self.spare.count }

    /// An empty buffer with room for `capacity` bytes.
    func take(capacity: Int, allocator: ByteBufferAllocator) -> ByteBuffer {
        if var buffer = self.spare.popFirst() {
            if buffer.modifyIfUniquelyOwned({ $0.clear(minimumCapacity: capacity) }) != nil { return buffer }
            // Still on its way to a socket (a slow client): it goes to the back of the line.
            self.spare.append(buffer)
        }
        return allocator.buffer(capacity: capacity)
    }

    /// Gives a written buffer back (the caller keeps no other copy of it).
    func give(_ buffer: ByteBuffer) {
        guard self.spare.count < self.limit, buffer.capacity <= self.maxBytes else { return }
        self.spare.append(buffer)
    }
}
