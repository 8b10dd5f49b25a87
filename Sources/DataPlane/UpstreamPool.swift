import DequeModule
import NIOConcurrencyHelpers
import NIOCore
import HTTPTransport
import NIOPosix
import FleetState
import RouterConfig

/// The address of a replica connection pool.
struct UpstreamKey: Hashable, Sendable {
    var host: String
    var port: Int
}

/// What a connection tells the request using it.
protocol UpstreamDelegate: AnyObject {
    func upstreamHead(_ head: HTTP1Head)
    func upstreamBody(_ buffer: ByteBuffer)
    func upstreamEnd()
    func upstreamReadComplete()
    func upstreamFailed(_ error: UpstreamError)
}

/// A pooled keep-alive connection to a replica, confined to one event loop (hence unchecked:
/// it only crosses into futures completed on that loop).
final class UpstreamConnection: @unchecked Sendable {
    let channel: any Channel
    let handler: UpstreamHandler
    /// The pool's record of this address (a release needs no lookup by key).
    let host: UpstreamPool.Host
    /// Requests served on this connection (0: fresh).
    var uses = 0
    /// When an idle connection in the pool closes.
    var idleDeadline = NIODeadline.distantFuture

    init(channel: any Channel, handler: UpstreamHandler, host: UpstreamPool.Host) {
        self.channel = channel
        self.handler = handler
        self.host = host
    }

    var isReusable: Bool { self.channel.isActive && self.handler.reusable }
}

/// Speaks HTTP/1.1 to a replica on raw bytes: writes a request head and body prepared by the
/// proxy, parses the response head, reads the body by its framing and hands the pieces to the
/// request that owns the connection, then is ready for the next request. Confined to its
/// channel's event loop like any handler; made before the channel so the pool can keep it.
final class UpstreamHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum State {
        /// No request outstanding.
        case idle
        /// Request written, waiting for the response head.
        case head
        /// Reading the response body.
        case body
        case failed
    }

    /// The request using the connection. Held strongly (a weak reference would give every client
    /// connection a side table and slow down each of its retains); cleared when the response ends
    /// or fails, and by the request when it drops the connection.
    var delegate: (any UpstreamDelegate)?
    var context: ChannelHandlerContext?
    var state = State.idle
    var parser: HTTP1HeadParser
    var reader = BodyReader.none
    var buffer: ByteBuffer?
    var requestIsHead = false
    /// The last response allows reuse (HTTP/1.1, no `Connection: close`, delimited body).
    var keepAlive = true
    /// Told when the channel closes (the pool forgets the connection).
    var onClose: ((UpstreamHandler) -> Void)?

    let flushes: FlushBatch

    init(maxHeadBytes: Int, flushes: FlushBatch) {
        self.parser = HTTP1HeadParser(kind: .response, maxBytes: maxHeadBytes)
        self.flushes = flushes
    }

    var reusable: Bool { self.state == .idle && self.keepAlive }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Writes a request (head bytes, then the body) and waits for its response.
    func send(head: ByteBuffer, body: ByteBuffer?, isHead: Bool) {
        guard let context, self.state == .idle else {
            self.fail(UpstreamError.closed)
            return
        }
        self.state = .head
        self.requestIsHead = isHead
        context.write(Self.wrapOutboundOut(head), promise: nil)
        if let body, body.readableBytes > 0 { context.write(Self.wrapOutboundOut(body), promise: nil) }
        self.flushes.flush(context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = Self.unwrapInboundIn(data)
        if var pending = self.buffer, pending.readableBytes > 0 {
            pending.writeBuffer(&incoming)
            self.buffer = nil
            self.process(&pending)
            if pending.readableBytes > 0 { self.buffer = pending }
        } else {
            self.buffer = nil
            self.process(&incoming)
            if incoming.readableBytes > 0 { self.buffer = incoming }
        }
    }

    private func process(_ bytes: inout ByteBuffer) {
        while bytes.readableBytes > 0 {
            switch self.state {
            case .idle:
                // Bytes nobody asked for: the connection cannot be trusted any more.
                self.fail(UpstreamError(description: "the replica sent bytes outside a response"))
                return
            case .failed:
                bytes.moveReaderIndex(to: bytes.writerIndex)
                return
            case .head:
                let head: HTTP1Head
                do {
                    guard let parsed = try self.parser.parse(&bytes) else { return }
                    head = parsed
                } catch {
                    self.fail(UpstreamError(description: "malformed response: \(error.description)"))
                    return
                }
                if head.status < 200 {
                    // 100 Continue and other interim answers precede the real one; 101 is never asked for.
                    if head.status == 101 { self.fail(UpstreamError(description: "unexpected protocol switch")) }
                    continue
                }
                self.keepAlive = head.isKeepAlive
                self.reader = BodyReader.response(head, requestIsHead: self.requestIsHead)
                if case .untilClose = self.reader { self.keepAlive = false }
                self.state = .body
                self.delegate?.upstreamHead(head)
                self.parser.recycle(head)
                if self.reader.isComplete { self.complete() }
            case .body:
                let done: Bool
                do {
                    done = try self.reader.read(&bytes) { piece in self.delegate?.upstreamBody(piece) }
                } catch {
                    self.fail(UpstreamError(description: "malformed response body: \(error.description)"))
                    return
                }
                if done { self.complete() }
            }
        }
    }

    private func complete() {
        self.state = .idle
        let delegate = self.delegate
        self.delegate = nil
        delegate?.upstreamEnd()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.delegate?.upstreamReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if self.state == .body, case .untilClose = self.reader {
            // A body delimited by the connection's end has ended.
            self.keepAlive = false
            self.complete()
        }
        self.fail(UpstreamError.closed)
        self.onClose?(self)
        self.onClose = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.fail(UpstreamError(description: "\(error)"))
    }

    private func fail(_ error: UpstreamError) {
        self.state = .failed
        self.keepAlive = false
        let delegate = self.delegate
        self.delegate = nil
        delegate?.upstreamFailed(error)
        self.context?.close(promise: nil)
    }
}

/// Why an upstream exchange failed.
struct UpstreamError: Error, CustomStringConvertible {
    var description: String

    static let closed = UpstreamError(description: "the replica closed the connection")
    static let poolFull = UpstreamError(description: "no connection to the replica became free in time")
    static func connect(_ error: any Error) -> UpstreamError { UpstreamError(description: "connect failed: \(error)") }
}

/// Keep-alive connections to replicas for one event loop: the upstream channel lives on the
/// client's loop, so a response is relayed handler to handler with no loop hop.
///
/// Idle connections expire through the loop's deadline sweeper rather than a timer each (a
/// timer per request costs a heap insert and a cancel on the loop's schedule).
///
/// Only ever touched on its own event loop.
final class UpstreamPool: DeadlineOwner, @unchecked Sendable {
    let loop: any EventLoop
    private var hosts: [UpstreamKey: Host] = [:]

    /// The connections to one replica address (confined to the loop, like the pool).
    final class Host: @unchecked Sendable {
        /// Most recently used last: reused first, so surplus connections age out.
        var idle: [UpstreamConnection] = []
        var open = 0
        var waiters = Deque<EventLoopPromise<UpstreamConnection>>()
    }

    /// Largest response head accepted from a replica.
    let maxHeadBytes = 64 << 10
    /// The loop's deferred flushes (upstream requests and client responses).
    let flushes: FlushBatch
    /// Ids for requests that come without a usable `X-Request-Id`.
    var requestIDs = RequestIDGenerator()
    /// The loop's head buffers, reused once written.
    let buffers = BufferRecycler()

    init(loop: any EventLoop) {
        self.loop = loop
        self.flushes = FlushBatch(loop: loop)
    }

    private func host(_ key: UpstreamKey) -> Host {
        if let host = self.hosts[key] { return host }
        let host = Host()
        self.hosts[key] = host
        return host
    }

    /// An idle keep-alive connection, if one is ready (the common case: no future, no allocation).
    func takeIdle(_ key: UpstreamKey) -> UpstreamConnection? {
        guard let host = self.hosts[key] else { return nil }
        while let conn = host.idle.popLast() {
            if conn.isReusable { return conn }
            conn.channel.close(promise: nil)
        }
        return nil
    }

    /// A new connection; at `maxPerLoop` open connections, waits for one to free up.
    func acquire(_ key: UpstreamKey, connectTimeout: Double, maxPerLoop: Int) -> EventLoopFuture<UpstreamConnection> {
        self.loop.preconditionInEventLoop()
        if let conn = self.takeIdle(key) { return self.loop.makeSucceededFuture(conn) }
        let host = self.host(key)
        if host.open >= maxPerLoop {
            let promise = self.loop.makePromise(of: UpstreamConnection.self)
            host.waiters.append(promise)
            self.loop.scheduleTask(in: .nanoseconds(Int64(connectTimeout * 1e9))) {
                // Still waiting after the connect timeout: give up on this replica.
                if let index = host.waiters.firstIndex(where: { $0.futureResult === promise.futureResult }) {
                    host.waiters.remove(at: index)
                    promise.fail(UpstreamError.poolFull)
                }
            }
            return promise.futureResult
        }
        return self.connect(key, host, timeout: connectTimeout)
    }

    /// A new connection whatever the idle list holds (after a stale pooled one failed).
    func connectFresh(_ key: UpstreamKey, connectTimeout: Double) -> EventLoopFuture<UpstreamConnection> {
        self.connect(key, self.host(key), timeout: connectTimeout)
    }

    private func connect(_ key: UpstreamKey, _ host: Host, timeout: Double) -> EventLoopFuture<UpstreamConnection> {
        host.open += 1
        let handler = UpstreamHandler(maxHeadBytes: self.maxHeadBytes, flushes: self.flushes)
        return ClientBootstrap(group: self.loop)
            .connectTimeout(.nanoseconds(Int64(timeout * 1e9)))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: key.host, port: key.port)
            .map { channel in
                // The pool lives as long as its loop; capturing it (not weakly) keeps weak
                // references, and the side tables they cost, off the request path.
                handler.onClose = { handler in self.closed(handler, key, host) }
                return UpstreamConnection(channel: channel, handler: handler, host: host)
            }
            .flatMapErrorThrowing { error in
                host.open -= 1
                throw UpstreamError.connect(error)
            }
    }

    /// Gives a connection back after a request: to a waiter, to the idle list, or closed.
    func release(_ conn: UpstreamConnection, keepAliveSeconds: Double) {
        self.loop.preconditionInEventLoop()
        conn.uses += 1
        guard conn.isReusable else {
            conn.channel.close(promise: nil)
            return
        }
        let host = conn.host
        if let waiter = host.waiters.popFirst() {
            waiter.succeed(conn)
            return
        }
        conn.idleDeadline = .now() + .nanoseconds(Int64(keepAliveSeconds * 1e9))
        host.idle.append(conn)
    }

    /// A connection closed: forget it, and let a waiter connect in its place.
    private func closed(_ handler: UpstreamHandler, _ key: UpstreamKey, _ host: Host) {
        host.open -= 1
        if let index = host.idle.firstIndex(where: { $0.handler === handler }) { host.idle.remove(at: index) }
        if let waiter = host.waiters.popFirst() {
            self.connect(key, host, timeout: 2).cascade(to: waiter)
        }
    }

    /// Closes idle connections past their keep-alive (called by the loop's sweeper).
    func checkDeadlines(now: NIODeadline) -> Bool {
        for host in self.hosts.values {
            // Oldest first: the list is in release order.
            while let oldest = host.idle.first, oldest.idleDeadline <= now {
                host.idle.removeFirst()
                oldest.channel.close(promise: nil)
            }
        }
        return true
    }

    /// Closes idle connections to replicas no longer in the fleet.
    func prune(keeping keys: Set<UpstreamKey>) {
        for (key, host) in self.hosts where !keys.contains(key) {
            for conn in host.idle { conn.channel.close(promise: nil) }
            host.idle.removeAll()
            if host.open == 0, host.waiters.isEmpty { self.hosts[key] = nil }
        }
    }

    var idleCount: Int { self.hosts.values.reduce(0) { $0 + $1.idle.count } }
}

/// Per event loop: the upstream pool and the deadline sweeper.
final class UpstreamPools: Sendable {
    private let pools = NIOLockedValueBox<[ObjectIdentifier: (UpstreamPool, DeadlineSweeper)]>([:])

    func pool(for loop: any EventLoop) -> UpstreamPool {
        self.resources(for: loop).0
    }

    func sweeper(for loop: any EventLoop) -> DeadlineSweeper {
        self.resources(for: loop).1
    }

    private func resources(for loop: any EventLoop) -> (UpstreamPool, DeadlineSweeper) {
        self.pools.withLockedValue { pools in
            if let r = pools[ObjectIdentifier(loop)] { return r }
            let r = (UpstreamPool(loop: loop), DeadlineSweeper(loop: loop))
            pools[ObjectIdentifier(loop)] = r
            // The sweeper also expires the pool's idle connections.
            loop.execute { r.1.register(r.0) }
            return r
        }
    }

    /// Closes idle connections to replicas that left, on every loop.
    func prune(keeping keys: Set<UpstreamKey>) {
        for (pool, _) in self.pools.withLockedValue({ Array($0.values) }) {
            pool.loop.execute { pool.prune(keeping: keys) }
        }
    }
}

/// Something with deadlines to check.
protocol DeadlineOwner: AnyObject {
    /// Enforces the owner's deadlines; false when it is gone for good (the sweeper drops it).
    func checkDeadlines(now: NIODeadline) -> Bool
}

/// One timer per event loop instead of one per request: every 250 ms it asks the connections
/// of its loop to check their deadlines (head, body, first byte, idle gaps, keep-alive).
final class DeadlineSweeper: @unchecked Sendable {
    let loop: any EventLoop
    /// Held strongly until they report they are done: a weak reference would give every
    /// client connection a side table, which slows down each of its retains and releases.
    private var owners: [any DeadlineOwner] = []
    private var task: RepeatedTask?

    init(loop: any EventLoop) {
        self.loop = loop
    }

    func register(_ owner: any DeadlineOwner) {
        self.loop.preconditionInEventLoop()
        self.owners.append(owner)
        if self.task == nil {
            self.task = self.loop.scheduleRepeatedTask(initialDelay: .milliseconds(250), delay: .milliseconds(250)) { _ in
                self.sweep()
            }
        }
    }

    private func sweep() {
        let now = NIODeadline.now()
        self.owners.removeAll { !$0.checkDeadlines(now: now) }
    }
}
