import NIOCore
import NIOEmbedded
import Testing

@testable import DataPlane
import FleetState

/// Flushes wait for the end of the loop's batch of events, and none is lost on the way.
@Suite struct FlushBatchTests {
    final class Tap: ChannelOutboundHandler, Sendable {
        typealias OutboundIn = ByteBuffer
    }

    @Test func flushesWaitForTheEndOfTheBatchAndAllGoOut() throws {
        let loop = EmbeddedEventLoop()
        let batch = FlushBatch(loop: loop)
        var channels: [EmbeddedChannel] = []
        for i in 0..<3 {
            let channel = EmbeddedChannel(handler: Tap(), loop: loop)
            let context = try channel.pipeline.syncOperations.context(handlerType: Tap.self)
            context.write(NIOAny(ByteBuffer(string: "response \(i)")), promise: nil)
            batch.flush(context)
            channels.append(channel)
        }
        // The same channel twice in one batch: one more write, flushed with the rest.
        let first = try channels[0].pipeline.syncOperations.context(handlerType: Tap.self)
        first.write(NIOAny(ByteBuffer(string: " and more")), promise: nil)
        batch.flush(first)
        for channel in channels { #expect(try channel.readOutbound(as: ByteBuffer.self) == nil) }

        loop.run()  // the loop finishes its batch: the deferred flushes run
        for (i, channel) in channels.enumerated() {
            #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "response \(i)"))
        }
        #expect(try channels[0].readOutbound(as: ByteBuffer.self) == ByteBuffer(string: " and more"))

        // A later batch runs again.
        let second = try channels[2].pipeline.syncOperations.context(handlerType: Tap.self)
        second.write(NIOAny(ByteBuffer(string: "next")), promise: nil)
        batch.flush(second)
        loop.run()
        #expect(try channels[2].readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "next"))
        for channel in channels { _ = try channel.finish() }
    }

    @Test func afterFlushWorkRunsOnceTheBatchWentOutInOrder() throws {
        let loop = EmbeddedEventLoop()
        let batch = FlushBatch(loop: loop)
        let channel = EmbeddedChannel(handler: Tap(), loop: loop)
        let context = try channel.pipeline.syncOperations.context(handlerType: Tap.self)
        var seen: [String] = []
        // Work alone (no flush in the batch) still runs.
        batch.afterFlush { seen.append("alone") }
        loop.run()
        #expect(seen == ["alone"])

        context.write(NIOAny(ByteBuffer(string: "answer")), promise: nil)
        batch.afterFlush {
            // The answer is out by the time the bookkeeping runs.
            let out = try? channel.readOutbound(as: ByteBuffer.self)
            seen.append(out == ByteBuffer(string: "answer") ? "after the write" : "before the write")
            // Work queued while running goes to the next run, not lost.
            batch.afterFlush { seen.append("queued while running") }
        }
        batch.flush(context)
        batch.afterFlush { seen.append("second") }
        #expect(seen == ["alone"])
        loop.run()
        #expect(seen == ["alone", "after the write", "second", "queued while running"])
        _ = try channel.finish()
    }
}
