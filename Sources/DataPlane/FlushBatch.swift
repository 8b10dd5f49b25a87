import NIOCore

/// The flushes of one event loop, made once its current batch of I/O events has been handled,
/// and the bookkeeping that can wait until they went out.
///
/// A flush is a write system call, and writing to a socket wakes whoever reads it (the replica,
/// the client), which often takes this CPU there and then. Flushing each request and response
/// the moment it is ready interleaves those wake-ups with the rest of the batch: the loop is
/// preempted in the middle of its work, once per request. Deferred to one task after the batch
/// (NIO runs tasks after the I/O events of a wake-up), the reads, keys and routing decisions of
/// the batch come first and the writes go out together, in the same loop iteration: no request
/// waits longer, and the proxy needs less CPU per request (measured: `Benchmarks/README.md`).
///
/// Work queued with `afterFlush` (a finished request's load release, metrics and access log)
/// runs in the same task right after the writes: the client has its answer before the router
/// spends the microseconds of its accounting, which at a moderate rate (cold caches) are about
/// a third of the time between the replica's answer and the client's.
///
/// Confined to its loop, like the upstream pool that owns it.
final class FlushBatch: @unchecked Sendable {
    let loop: any EventLoop
    private var pending: [ChannelHandlerContext] = []
    /// The batch being flushed (kept to reuse its storage).
    private var flushing: [ChannelHandlerContext] = []
    private var after: [() -> Void] = []
    private var running: [() -> Void] = []
    private var scheduled = false

    init(loop: any EventLoop) {
        self.loop = loop
    }

    /// Flushes `context`'s channel at the end of the current batch (`context` is on this loop).
    func flush(_ context: ChannelHandlerContext) {
        self.loop.assertInEventLoop()
        if self.pending.last === context {
            // The same channel twice in a row (a response's end and its read's end): one flush.
            return
        }
        self.pending.append(context)
        self.schedule()
    }

    /// Runs `work` after this batch's flushes (on this loop, in order).
    func afterFlush(_ work: @escaping () -> Void) {
        self.loop.assertInEventLoop()
        self.after.append(work)
        self.schedule()
    }

    private func schedule() {
        guard !self.scheduled else { return }
        self.scheduled = true
        self.loop.execute { self.run() }
    }

    private func run() {
        self.scheduled = false
        // A flush that leads to another (a completed write) lands in `pending`, for the next run.
        swap(&self.pending, &self.flushing)
        for context in self.flushing { context.flush() }
        self.flushing.removeAll(keepingCapacity: true)
        swap(&self.after, &self.running)
        for work in self.running { work() }
        self.running.removeAll(keepingCapacity: true)
    }
}
