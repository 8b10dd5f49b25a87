import DequeModule
import HTTPTransport
import NIOCore
import NIOPosix
import RoutingCore

/// A pooled keep-alive HTTP/1.1 connection to a replica, confined to one event loop (hence
/// unchecked: it only crosses into futures completed on that loop).
final class UpstreamConnection: UpstreamLease, @unchecked Sendable {
    let channel: any Channel
    let handler: UpstreamHandler
    /// The pool's record of this address (a release needs no lookup by key).
    let host: UpstreamPool.Host
    unowned let pool: UpstreamPool
    /// Requests served on this connection (0: fresh).
    var uses = 0
    /// When an idle connection in the pool closes.
    var idleDeadline = NIODeadline.distantFuture
    /// Reading paused for back-pressure (resumed before the connection is reused).
    var readingPaused = false

    init(channel: any Channel, handler: UpstreamHandler, host: UpstreamPool.Host, pool: UpstreamPool) {
        self.channel = channel
        self.handler = handler
        self.host = host
        self.pool = pool
    }

    var isReusable: Bool { self.channel.isActive && self.handler.reusable }
    var reused: Bool { self.uses > 0 }

    func send(head: ByteBuffer, body: ByteBuffer?, isHead: Bool, to delegate: any UpstreamDelegate) {
        self.handler.delegate = delegate
        self.handler.send(head: head, body: body, isHead: isHead)
    }

    func setReading(_ on: Bool) {
        guard on == self.readingPaused else { return }
        self.readingPaused = !on
        try? self.channel.syncOptions?.setOption(.autoRead, value: on)
        if on { self.channel.read() }
    }

    func release() {
        self.pool.release(self)
    }

    func drop() {
        self.handler.delegate = nil
        self.channel.close(promise: nil)
    }
}

/// Keep-alive connections to replicas for one event loop: the plain HTTP/1.1 transport.
///
/// Idle connections expire through the loop's deadline sweeper rather than a timer each (a
/// timer per request costs a heap insert and a cancel on the loop's schedule).
///
/// Only ever touched on its own event loop.
final class UpstreamPool: UpstreamTransport, DeadlineOwner, @unchecked Sendable {
    let loop: any EventLoop
    let flushes: FlushBatch
    /// By endpoint identity: an endpoint lives as long as its replica keeps its address (a new
    /// address is a new endpoint, hence a new host), and the host holds it, so the key is never reused.
    private var hosts: [ObjectIdentifier: Host] = [:]
    /// The settings of the last lease (a connection made for a waiter uses them).
    private var settings = UpstreamPoolSettings(connectTimeout: 2, maxPerLoop: 1024, keepAliveSeconds: 60, maxResponseHeadBytes: 64 << 10)

    /// The connections to one replica address (confined to the loop, like the pool).
    final class Host: @unchecked Sendable {
        let endpoint: ReplicaEndpoint
        let address: ReplicaURL
        /// Most recently used last: reused first, so surplus connections age out.
        var idle: [UpstreamConnection] = []
        var open = 0
        var waiters = Deque<EventLoopPromise<any UpstreamLease>>()

        init(endpoint: ReplicaEndpoint, address: ReplicaURL) {
            self.endpoint = endpoint
            self.address = address
        }
    }

    init(loop: any EventLoop, flushes: FlushBatch) {
        self.loop = loop
        self.flushes = flushes
    }

    private func host(_ endpoint: ReplicaEndpoint, _ address: ReplicaURL) -> Host {
        if let host = self.hosts[ObjectIdentifier(endpoint)] { return host }
        let host = Host(endpoint: endpoint, address: address)
        self.hosts[ObjectIdentifier(endpoint)] = host
        return host
    }

    func lease(_ endpoint: ReplicaEndpoint, fresh: Bool, settings: UpstreamPoolSettings) -> UpstreamLeaseResult {
        self.loop.preconditionInEventLoop()
        self.settings = settings
        if !fresh, let conn = self.takeIdle(endpoint) { return .ready(conn) }
        guard let address = endpoint.url else {
            return .failed(UpstreamError(description: endpoint.urlError ?? "no usable address"))
        }
        let host = self.host(endpoint, address)
        if !fresh, host.open >= settings.maxPerLoop {
            let promise = self.loop.makePromise(of: (any UpstreamLease).self)
            host.waiters.append(promise)
            self.loop.scheduleTask(in: .nanoseconds(Int64(settings.connectTimeout * 1e9))) {
                // Still waiting after the connect timeout: give up on this replica.
                if let index = host.waiters.firstIndex(where: { $0.futureResult === promise.futureResult }) {
                    host.waiters.remove(at: index)
                    promise.fail(UpstreamError.poolFull)
                }
            }
            return .pending(promise.futureResult)
        }
        return .pending(self.connect(host).map { $0 as any UpstreamLease })
    }

    /// An idle keep-alive connection, if one is ready (the common case: no future, no allocation).
    private func takeIdle(_ endpoint: ReplicaEndpoint) -> UpstreamConnection? {
        guard let host = self.hosts[ObjectIdentifier(endpoint)] else { return nil }
        while let conn = host.idle.popLast() {
            if conn.isReusable { return conn }
            conn.channel.close(promise: nil)
        }
        return nil
    }

    private func connect(_ host: Host) -> EventLoopFuture<UpstreamConnection> {
        let tls = host.address.tls ? self.settings.tls : nil
        if host.address.tls, tls == nil {
            return self.loop.makeFailedFuture(UpstreamError(description: "\(host.address) needs TLS, and no TLS context is configured"))
        }
        host.open += 1
        let handler = UpstreamHandler(maxHeadBytes: self.settings.maxResponseHeadBytes, flushes: self.flushes)
        let name = host.address.host
        return ClientBootstrap(group: self.loop)
            .connectTimeout(.nanoseconds(Int64(self.settings.connectTimeout * 1e9)))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // TLS to an https:// replica: the handshake runs as the request is written;
                    // an untrusted certificate fails the attempt like a refused connection.
                    if let tls { try channel.pipeline.syncOperations.addHandler(try tls.handler(host: name)) }
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: host.address.host, port: host.address.port)
            .map { channel in
                // The pool lives as long as its loop; capturing it (not weakly) keeps weak
                // references, and the side tables they cost, off the request path.
                handler.onClose = { handler in self.closed(handler, host) }
                return UpstreamConnection(channel: channel, handler: handler, host: host, pool: self)
            }
            .flatMapErrorThrowing { error in
                host.open -= 1
                throw UpstreamError.connect(error)
            }
    }

    /// Gives a connection back after a request: to a waiter, to the idle list, or closed.
    fileprivate func release(_ conn: UpstreamConnection) {
        self.loop.preconditionInEventLoop()
        conn.uses += 1
        conn.handler.delegate = nil
        if conn.readingPaused { conn.setReading(true) }
        guard conn.isReusable else {
            conn.channel.close(promise: nil)
            return
        }
        let host = conn.host
        if let waiter = host.waiters.popFirst() {
            waiter.succeed(conn)
            return
        }
        conn.idleDeadline = .now() + .nanoseconds(Int64(self.settings.keepAliveSeconds * 1e9))
        host.idle.append(conn)
    }

    /// A connection closed: forget it, and let a waiter connect in its place.
    private func closed(_ handler: UpstreamHandler, _ host: Host) {
        host.open -= 1
        if let index = host.idle.firstIndex(where: { $0.handler === handler }) { host.idle.remove(at: index) }
        if let waiter = host.waiters.popFirst() {
            self.connect(host).map { $0 as any UpstreamLease }.cascade(to: waiter)
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
    func prune(keeping endpoints: [ReplicaEndpoint]) {
        let keys = Set(endpoints.map(ObjectIdentifier.init))
        for (key, host) in self.hosts where !keys.contains(key) {
            for conn in host.idle { conn.channel.close(promise: nil) }
            host.idle.removeAll()
            if host.open == 0, host.waiters.isEmpty { self.hosts[key] = nil }
        }
    }
}
