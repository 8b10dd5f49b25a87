import NIOCore
import Testing

@testable import DataPlane
import FleetState

@Suite struct BufferRecyclerTests {
    func address(_ buffer: ByteBuffer) -> UnsafeRawPointer? {
        buffer.withUnsafeReadableBytes { $0.baseAddress }
    }

    @Test func aBufferNobodyElseHoldsIsReusedEmpty() {
        let recycler = BufferRecycler()
        var first = recycler.take(capacity: 64, allocator: ByteBufferAllocator())
        first.writeString("GET / HTTP/1.1\r\n\r\n")
        let storage = self.address(first)
        recycler.give(first)
        first = ByteBuffer()  // the channel wrote it and let go
        var again = recycler.take(capacity: 64, allocator: ByteBufferAllocator())
        #expect(again.readableBytes == 0)
        again.writeString("x")
        #expect(self.address(again) == storage)
    }

    @Test func aBufferStillBeingWrittenKeepsItsBytes() {
        let recycler = BufferRecycler()
        var written = recycler.take(capacity: 64, allocator: ByteBufferAllocator())
        written.writeString("HTTP/1.1 200 OK\r\n\r\n")
        let inChannel = written  // the channel's copy, not on the socket yet
        recycler.give(written)
        var next = recycler.take(capacity: 64, allocator: ByteBufferAllocator())
        next.writeString("HTTP/1.1 503 Service Unavailable\r\n\r\n")
        #expect(String(buffer: inChannel) == "HTTP/1.1 200 OK\r\n\r\n")
        #expect(self.address(next) != self.address(inChannel))
    }

    @Test func oldestFirstAndBounded() {
        let recycler = BufferRecycler(limit: 2, maxBytes: 1024)
        let allocator = ByteBufferAllocator()
        recycler.give(allocator.buffer(capacity: 4096))  // too large to keep
        #expect(recycler.count == 0)
        var a = allocator.buffer(capacity: 16)
        a.writeString("a")
        var b = allocator.buffer(capacity: 16)
        b.writeString("b")
        let addressA = self.address(a)
        recycler.give(a)
        recycler.give(b)
        recycler.give(allocator.buffer(capacity: 16))  // beyond the limit
        #expect(recycler.count == 2)
        a = ByteBuffer()
        b = ByteBuffer()
        var oldest = recycler.take(capacity: 8, allocator: allocator)
        oldest.writeString("c")
        #expect(self.address(oldest) == addressA)
        let grown = recycler.take(capacity: 200, allocator: allocator)
        #expect(grown.capacity >= 200)
        #expect(recycler.count == 0)
    }
}
