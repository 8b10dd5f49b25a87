import FastJSON
import FleetState
import HTTPTransport
import NIOCore
import NIOHTTP1
import RouterConfig
import RoutingCore

/// One client connection of the data plane, on raw bytes.
///
/// Reads a request head and its body (both bounded), keys the body, asks the routing core where
/// it goes, forwards it on a pooled connection of the same event loop, and relays the answer as
/// it arrives: body bytes pass from the replica's socket to the client's as buffer slices, and a
/// slow client pauses reading from the replica. A connect error, a reset or a 5xx before the
/// first byte is retried on the next candidate within the retry budget; after the first byte
/// nothing is retried and a stream ends with an SSE error event.
///
/// It speaks HTTP/1.1 itself rather than through NIO's codec: a proxy copies heads through
/// almost unchanged, so it keeps them as bytes plus ranges and never builds header objects,
/// which roughly halves the CPU per request (see `Benchmarks/README.md`).
final class ClientConnection: ChannelInboundHandler, UpstreamDelegate, DeadlineOwner {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let state: RouterState
    let pools: UpstreamPools
    let models: ModelsCache
    let observer: any ProxyObserver
    var pool: UpstreamPool?
    var context: ChannelHandlerContext?
    var settings: ProxySettings
    var settingsVersion: Int

    enum Phase {
        /// Waiting for a request head.
        case idle
        /// Head in, reading the body.
        case receiving
        /// The request is with a replica (or being answered locally).
        case working
        case closed
    }

    var phase = Phase.idle
    var exchange: Exchange?
    /// Client bytes not consumed yet (a partial head or body, or a pipelined request).
    var inbound: ByteBuffer?
    var parser: HTTP1HeadParser
    var bodyReader = BodyReader.none
    /// When the client must have sent its head (or body) by, or the idle connection closes.
    var clientDeadline: NIODeadline?
    /// Graceful shutdown: close after the current response.
    var quiescing = false
    /// Reading from the client is paused while a pipelined request waits.
    var readingPaused = false
    /// The client's address, formatted once per connection.
    var remote: String?

    /// Pipelined bytes buffered while a request is in progress before reading pauses.
    static let pipelineBufferLimit = 64 << 10
    /// Bodies up to this size are copied next to their head and written together.
    static let coalesceBytes = 16 << 10

    init(state: RouterState, pools: UpstreamPools, models: ModelsCache, observer: any ProxyObserver) {
        self.state = state
        self.pools = pools
        self.models = models
        self.observer = observer
        (self.settings, self.settingsVersion) = state.proxySettingsVersioned
        self.parser = HTTP1HeadParser(kind: .request, maxBytes: self.settings.limits.maxHeaderBytes)
    }

    // MARK: - Connection

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.pool = self.pools.pool(for: context.eventLoop)
        self.pools.sweeper(for: context.eventLoop).register(self)
        self.remote = context.channel.remoteAddress?.ipAddress
        self.armClient(self.settings.limits.headerTimeout)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.phase = .closed
        self.clientDeadline = nil
        self.inbound = nil
        if let x = self.exchange {
            // The client left: cancel the replica's work by dropping its connection.
            x.summary.clientGone = true
            self.dropConnection(x)
            if let placement = x.placement { self.endAttempt(x, placement, .clientGone) }
            self.complete(x, status: x.summary.status == 0 ? 499 : x.summary.status)
        }
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // Back-pressure: read from the replica only as fast as the client takes it.
        if let conn = self.exchange?.connection {
            let writable = context.channel.isWritable
            conn.channel.setAutoRead(writable)
            if writable { conn.channel.read() }
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        // Graceful shutdown: an idle connection closes now, a busy one after its response.
        self.quiescing = true
        if self.phase == .idle, (self.inbound?.readableBytes ?? 0) == 0 {
            context.flush()  // a response that just ended may still wait for the loop's batched flush
            context.close(promise: nil)
        }
    }

    /// Client-side deadline: the head (slow-loris guard), the body, or an idle keep-alive connection.
    func armClient(_ seconds: Double) {
        self.clientDeadline = .now() + .nanoseconds(Int64(seconds * 1e9))
    }

    /// Called by the loop's sweeper: enforces every deadline of this connection (false once it closed).
    func checkDeadlines(now: NIODeadline) -> Bool {
        guard let context else { return false }
        if let deadline = self.clientDeadline, now >= deadline {
            self.clientDeadline = nil
            switch self.phase {
            case .idle where (self.inbound?.readableBytes ?? 0) == 0:
                context.flush()
                context.close(promise: nil)
            case .idle, .receiving:
                self.exchange = self.exchange ?? Exchange(head: nil, started: now, remote: self.remote, requestID: self.newRequestID())
                self.respondLocal(ProxyError.requestTimeout(), close: true)
            default:
                break
            }
        }
        guard let x = self.exchange, x.connection != nil, let placement = x.placement else { return true }
        if !x.responseStarted {
            if let deadline = x.firstByteDeadline, now >= deadline {
                self.dropConnection(x)
                self.attemptFailed(x, .timeout, reason: "no response within first_byte_timeout", retry: false)
            }
        } else if now - x.lastActivity >= .nanoseconds(Int64(self.settings.upstream.idleTimeout * 1e9)) {
            self.dropConnection(x)
            x.summary.upstreamErrors.append("idle timeout")
            self.endAttempt(x, placement, .timeout)
            self.failMidStream(x, ProxyError.gatewayTimeout("no data from the replica for \(Int(self.settings.upstream.idleTimeout)) s"))
        }
        return true
    }

    // MARK: - Reading the request

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = Self.unwrapInboundIn(data)
        if var pending = self.inbound, pending.readableBytes > 0 {
            self.inbound = nil
            pending.writeBuffer(&incoming)
            self.inbound = pending
        } else {
            if self.phase == .idle { self.armClient(self.settings.limits.headerTimeout) }
            self.inbound = incoming
        }
        self.process()
    }

    /// Parses what the client sent as far as the current phase allows.
    func process() {
        while let context, var bytes = self.inbound, bytes.readableBytes > 0 {
            self.inbound = nil
            defer { if bytes.readableBytes > 0 { self.inbound = bytes } }
            switch self.phase {
            case .idle:
                let head: HTTP1Head
                do {
                    guard let parsed = try self.parser.parse(&bytes) else { return }
                    head = parsed
                } catch {
                    self.rejectMalformed(error)
                    return
                }
                self.requestHead(context, head, buffered: bytes.readableBytes)
            case .receiving:
                guard let x = self.exchange else { return }
                let done: Bool
                do {
                    done = try self.bodyReader.read(&bytes) { piece in x.appendBody(piece) }
                } catch {
                    self.rejectMalformed(error)
                    return
                }
                if x.body.readableBytes > self.settings.limits.maxBodyBytes {
                    self.respondLocal(ProxyError.bodyTooLarge(limit: self.settings.limits.maxBodyBytes), close: true)
                    return
                }
                guard done else { return }
                self.clientDeadline = nil
                self.phase = .working
                x.summary.requestBytes = x.body.readableBytes
                self.dispatch(x)
            case .working:
                // A pipelined request waits for the current answer; beyond a bound, stop reading.
                if bytes.readableBytes > Self.pipelineBufferLimit, !self.readingPaused {
                    self.readingPaused = true
                    context.channel.setAutoRead(false)
                }
                return
            case .closed:
                bytes.clear()
                return
            }
        }
    }

    /// A generated id, for a request without a usable `X-Request-Id` of its own.
    func newRequestID() -> RequestID {
        self.pool?.requestIDs.next() ?? .generated(UInt64.random(in: .min ... .max))
    }

    /// A head or body the parser refused: answer its status and close (framing is lost).
    func rejectMalformed(_ error: HTTP1ParseError) {
        self.exchange = self.exchange ?? Exchange(head: nil, started: .now(), remote: self.remote, requestID: self.newRequestID())
        self.respondLocal(ProxyError.malformed(status: error.status, error.description), close: true)
    }

    func requestHead(_ context: ChannelHandlerContext, _ head: HTTP1Head, buffered: Int) {
        if self.state.settingsVersion != self.settingsVersion {
            (self.settings, self.settingsVersion) = self.state.proxySettingsVersioned
        }
        let x = Exchange(head: head, started: .now(), remote: self.remote, requestID: RequestID.fromClient(head) ?? self.newRequestID())
        self.exchange = x
        self.phase = .receiving
        let limit = self.settings.limits.maxBodyBytes
        if let length = head.contentLength {
            if length > limit {
                self.respondLocal(ProxyError.bodyTooLarge(limit: limit), close: true)
                return
            }
            x.expectedBodyBytes = length
        }
        self.bodyReader = BodyReader.request(head)
        if head.expectContinue, !self.bodyReader.isComplete, buffered == 0 {
            context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(staticString: "HTTP/1.1 100 Continue\r\n\r\n")), promise: nil)
        }
        self.armClient(self.settings.limits.bodyTimeout)
        if self.bodyReader.isComplete {
            self.clientDeadline = nil
            self.phase = .working
            self.dispatch(x)
        }
    }

    // MARK: - Routing

    func dispatch(_ x: Exchange) {
        guard let head = x.head else { return }
        let path = head.path
        let api = Self.api(head, path)
        let isPost = head.methodIs("POST")
        switch (isPost, api) {
        case (true, .some(let api)):
            x.api = api
            x.summary.route = api.rawValue
            x.summary.path = api.path
        case (false, .some(let api)):
            x.summary.route = "local"
            x.summary.path = api.path
            self.respondLocal(ProxyError.methodNotAllowed(head.methodString, api.path), close: false)
            return
        case (_, .none):
            x.summary.path = head.string(path)
            if head.equals(path, "/v1/models", ignoringCase: false), head.methodIs("GET") {
                x.summary.route = "models"
                self.mergedModels(x)
                return
            }
            if head.equals(path, "/health", ignoringCase: false) || head.equals(path, "/healthz", ignoringCase: false) {
                x.summary.route = "local"
                let ok = self.state.fleet.routableCount > 0
                self.respondJSON(ok ? .ok : .serviceUnavailable, .object(["status": .string(ok ? "ok" : "no healthy replica")]), close: false)
                return
            }
            guard x.summary.path.hasPrefix("/v1/") else {
                x.summary.route = "local"
                self.respondLocal(ProxyError.notFound(x.summary.path), close: false)
                return
            }
            x.summary.route = "other"
        }
        // A local function, not a closure value: passed as a non-escaping argument it allocates nothing.
        func lookup(_ name: String) -> String? { head.value(named: name) }
        let keys: Result<RequestKeys, KeyError>
        if let api = x.api {
            let rules = self.settings.keying
            let sessionHeader = rules.sessionHeader(in: lookup)
            keys = x.body.withUnsafeReadableBytes { KeyExtractor.extract(api: api, body: $0, sessionHeader: sessionHeader, rules: rules) }
            if case .success(let k) = keys { x.summary.promptTokensEstimate = k.promptTokens(bytesPerToken: rules.bytesPerToken) }
        } else {
            keys = .failure(KeyError(.invalidField, "\(x.summary.path) is routed without keys"))
        }
        x.keys = keys
        let (decision, placement) = self.state.route(keys, header: lookup)
        guard let placement else {
            self.respondLocal(ProxyError.noReplica(decision.reason(in: self.state.fleet)), close: false)
            return
        }
        self.send(x, placement)
    }

    /// The routed API of a path, compared as bytes (a trailing slash is tolerated).
    static func api(_ head: HTTP1Head, _ path: Range<Int>) -> RequestAPI? {
        var path = path
        if path.count > 1, head.bytes[path.upperBound - 1] == UInt8(ascii: "/") { path = path.lowerBound..<(path.upperBound - 1) }
        switch path.count {
        case 20 where head.equals(path, "/v1/chat/completions", ignoringCase: false): return .chat
        case 15 where head.equals(path, "/v1/completions", ignoringCase: false): return .completions
        case 9 where head.equals(path, "/generate", ignoringCase: false): return .generate
        default: return nil
        }
    }

    // MARK: - Upstream

    func send(_ x: Exchange, _ placement: Placement, freshConnection: Bool = false) {
        guard let pool = self.pool, let context else { return }
        x.placement = placement
        x.attempts += 1
        x.summary.replica = placement.replicaName
        x.summary.tier = placement.decision.tier
        x.summary.attempts = x.attempts
        let endpoint = placement.endpoint
        guard let url = endpoint.url else { return }
        let key = UpstreamKey(host: url.host, port: url.port)
        if !freshConnection, let conn = pool.takeIdle(key) {
            self.start(x, conn, endpoint, context: context)
            return
        }
        let upstream = self.settings.upstream
        let maxPerLoop = max(1, upstream.maxConnectionsPerReplica / max(1, self.settings.eventLoops))
        let acquired = freshConnection
            ? pool.connectFresh(key, connectTimeout: upstream.connectTimeout)
            : pool.acquire(key, connectTimeout: upstream.connectTimeout, maxPerLoop: maxPerLoop)
        // Captured strongly (a weak capture costs every client connection a side table): the
        // future always completes, by the connect timeout at the latest.
        acquired.assumeIsolated().whenComplete { result in
            guard self.exchange === x, x.placement === placement else {
                if case .success(let conn) = result { pool.release(conn, keepAliveSeconds: upstream.keepAliveSeconds) }
                return
            }
            switch result {
            case .success(let conn):
                self.start(x, conn, endpoint, context: context)
            case .failure(let error):
                self.attemptFailed(x, .connectFailure, reason: "\(error)")
            }
        }
    }

    func start(_ x: Exchange, _ conn: UpstreamConnection, _ endpoint: ReplicaEndpoint, context: ChannelHandlerContext) {
        guard let head = x.head else { return }
        x.connection = conn
        x.reused = conn.uses > 0
        conn.handler.delegate = self
        if !context.channel.isWritable { conn.channel.setAutoRead(false) }
        // A small body goes out in the same buffer as the head: one write instead of two.
        let coalesce = x.body.readableBytes <= Self.coalesceBytes
        let buffers = self.pool?.buffers
        var requestHead = buffers?.take(capacity: 0, allocator: context.channel.allocator) ?? ByteBuffer()
        ProxyHeads.upstreamRequest(
            head, endpoint: endpoint, client: x.remote, requestID: x.requestID, bodyLength: x.body.readableBytes,
            reserve: coalesce ? x.body.readableBytes : 0, into: &requestHead)
        if coalesce {
            requestHead.writeImmutableBuffer(x.body)
            conn.handler.send(head: requestHead, body: nil, isHead: head.methodIs("HEAD"))
        } else {
            conn.handler.send(head: requestHead, body: x.body, isHead: head.methodIs("HEAD"))
        }
        buffers?.give(requestHead)
        x.firstByteDeadline = .now() + .nanoseconds(Int64(self.settings.upstream.firstByteTimeout * 1e9))
    }

    func upstreamHead(_ response: HTTP1Head) {
        guard let x = self.exchange, let head = x.head, let context, let placement = x.placement, !x.responseStarted else { return }
        if response.status >= 500, x.attempts <= self.settings.upstream.retries,
            let next = self.state.retry(after: placement, excluding: x.failed, keys: try? x.keys?.get())
        {
            // Retry before the first byte reached the client: the replica's answer is dropped.
            self.dropConnection(x)
            x.summary.upstreamErrors.append("\(response.status)")
            x.failed.append(placement.replicaName)
            self.endAttempt(x, placement, .serverError(response.status))
            self.observer.retried(replica: placement.replicaName, outcome: .serverError(response.status))
            self.send(x, next)
            return
        }
        x.responseStarted = true
        // Prefill is over: recorded when this read ends unless the answer ends first (then
        // `finish` accounts for it, one lock fewer for every answer that fits one read).
        x.firstBytePending = true
        x.firstByteAt = .now()
        x.lastActivity = x.firstByteAt!
        x.summary.status = response.status
        x.isSSE = response.first(.contentType).map { response.equalsPrefix($0.value, "text/event-stream") } ?? false
        x.summary.streamed = x.isSSE
        let framing = ProxyHeads.clientFraming(request: head, response: response)
        x.framing = framing
        x.closeAfter = !head.isKeepAlive || framing == .close || self.quiescing
        var out = self.pool?.buffers.take(capacity: 0, allocator: context.channel.allocator) ?? ByteBuffer()
        ProxyHeads.clientResponse(
            response,
            request: head,
            framing: framing,
            close: x.closeAfter,
            endpoint: placement.endpoint,
            tier: placement.decision.tier,
            requestID: x.requestID,
            reserve: response.contentLength.map { $0 <= Self.coalesceBytes ? $0 : 0 } ?? 0,
            into: &out
        )
        // Held until the first body piece (or the end of this read) so both go out in one write.
        x.heldHead = out
    }

    /// Writes the response head if it is still held back.
    func releaseHead(_ context: ChannelHandlerContext, _ x: Exchange) {
        if let head = x.heldHead {
            x.heldHead = nil
            context.write(Self.wrapOutboundOut(head), promise: nil)
            self.pool?.buffers.give(head)
        }
    }

    func upstreamBody(_ piece: ByteBuffer) {
        guard let x = self.exchange, x.responseStarted, let context else { return }
        x.lastActivity = .now()
        if x.firstBodyAt == nil { x.firstBodyAt = x.lastActivity }
        x.summary.responseBytes += piece.readableBytes
        if x.api != nil { x.usage.feed(piece) }
        switch x.framing {
        case .none:
            break
        case .length, .close:
            if var head = x.heldHead, piece.readableBytes <= Self.coalesceBytes {
                x.heldHead = nil
                head.writeImmutableBuffer(piece)
                context.write(Self.wrapOutboundOut(head), promise: nil)
                self.pool?.buffers.give(head)
                return
            }
            self.releaseHead(context, x)
            context.write(Self.wrapOutboundOut(piece), promise: nil)
        case .chunked:
            if x.isSSE {
                // Whole events only: a failure later can then end the stream with a clean event.
                x.events.append(piece)
                while let ready = x.events.takeComplete(force: false) { self.writeChunk(context, ready) }
            } else {
                self.writeChunk(context, piece)
            }
        }
    }

    func writeChunk(_ context: ChannelHandlerContext, _ piece: ByteBuffer) {
        guard piece.readableBytes > 0 else { return }
        if let x = self.exchange { self.releaseHead(context, x) }
        context.write(Self.wrapOutboundOut(ProxyHeads.chunk(piece, allocator: context.channel.allocator)), promise: nil)
    }

    func upstreamReadComplete() {
        guard let context else { return }
        if let x = self.exchange {
            if x.firstBytePending, let placement = x.placement {
                x.firstBytePending = false
                self.state.firstByte(&placement.ticket)
            }
            self.releaseHead(context, x)
        }
        self.flush(context)
    }

    /// At the end of the loop's current batch of events (`FlushBatch`).
    func flush(_ context: ChannelHandlerContext) {
        if let pool = self.pool { pool.flushes.flush(context) } else { context.flush() }
    }

    /// After the loop's batch of writes (`FlushBatch`): bookkeeping the client need not wait for.
    func afterFlush(_ work: @escaping () -> Void) {
        if let pool = self.pool { pool.flushes.afterFlush(work) } else { work() }
    }

    func upstreamEnd() {
        guard let x = self.exchange, let context, let placement = x.placement, x.responseStarted else { return }
        if let conn = x.connection {
            x.connection = nil
            if !context.channel.isWritable { conn.channel.setAutoRead(true) }
            self.pool?.release(conn, keepAliveSeconds: self.settings.upstream.keepAliveSeconds)
        }
        self.endAttempt(x, placement, x.summary.status >= 500 ? .serverError(x.summary.status) : .success)
        self.releaseHead(context, x)
        var tail: ByteBuffer?
        if x.framing == .chunked {
            var end = context.channel.allocator.buffer(capacity: 64)
            if let rest = x.events.takeComplete(force: true) { end = ProxyHeads.chunk(rest, allocator: context.channel.allocator) }
            end.writeStaticString("0\r\n\r\n")
            tail = end
        }
        self.finishResponse(context, x, last: tail, close: x.closeAfter)
    }

    func upstreamFailed(_ error: UpstreamError) {
        guard let x = self.exchange, let placement = x.placement else { return }
        x.connection = nil
        if x.responseStarted {
            // Nothing can be retried once bytes reached the client.
            x.summary.upstreamErrors.append("broken stream")
            self.endAttempt(x, placement, .brokenStream)
            self.failMidStream(x, ProxyError.badGateway("replica \(placement.replicaName) failed mid-stream: \(error)"))
            return
        }
        if x.reused, !x.staleRetried {
            // A pooled connection the replica had already closed: once more on a fresh one, same replica.
            x.staleRetried = true
            self.endAttempt(x, placement, .staleConnection)
            let again = self.state.again(placement, keys: try? x.keys?.get())
            x.attempts -= 1
            self.send(x, again, freshConnection: true)
            return
        }
        self.attemptFailed(x, .connectFailure, reason: error.description)
    }

    /// The current attempt failed before the first byte: retry elsewhere, or answer with an error.
    func attemptFailed(_ x: Exchange, _ outcome: AttemptOutcome, reason: String, retry: Bool = true) {
        guard let placement = x.placement else { return }
        x.summary.upstreamErrors.append(outcome == .timeout ? "timeout" : "connect")
        self.endAttempt(x, placement, outcome)
        let name = placement.replicaName
        x.failed.append(name)
        if retry, x.attempts <= self.settings.upstream.retries,
            let next = self.state.retry(after: placement, excluding: x.failed, keys: try? x.keys?.get())
        {
            self.observer.retried(replica: name, outcome: outcome)
            self.send(x, next)
            return
        }
        let error = outcome == .timeout
            ? ProxyError.gatewayTimeout("replica \(name) did not answer within \(Int(self.settings.upstream.firstByteTimeout)) s")
            : ProxyError.badGateway("replica \(name) failed (\(reason)) after \(x.attempts) attempt(s)")
        self.respondLocal(error, close: false)
    }

    /// One attempt on a replica ended: release its load and tell passive health.
    func endAttempt(_ x: Exchange, _ placement: Placement, _ outcome: AttemptOutcome) {
        guard x.placement === placement else { return }
        if outcome == .success {
            // An answer that went well: its load is released once the answer is out. A failure is
            // accounted at once (a retry decides next, and passive health must count it).
            let state = self.state
            self.afterFlush { state.finish(placement, outcome: .success) }
        } else {
            self.state.finish(placement, outcome: outcome)
        }
        if outcome.isFailure { self.observer.attemptFailed(replica: placement.replicaName, outcome: outcome) }
        x.placement = nil
    }

    func dropConnection(_ x: Exchange) {
        if let conn = x.connection {
            conn.handler.delegate = nil
            conn.channel.close(promise: nil)
            x.connection = nil
        }
    }

    // MARK: - Answering

    /// A stream that already started ends with an SSE error event; any other body is cut (close).
    func failMidStream(_ x: Exchange, _ error: ProxyError) {
        guard let context else { return }
        self.releaseHead(context, x)
        guard x.isSSE, x.framing == .chunked || x.framing == .close else {
            self.complete(x, status: x.summary.status)
            self.phase = .closed
            context.flush()
            context.close(promise: nil)
            return
        }
        let event = context.channel.allocator.buffer(bytes: error.sseEvent)
        var last: ByteBuffer
        if x.framing == .chunked {
            // Complete events already went out; a partial one is dropped rather than corrupted.
            last = ProxyHeads.chunk(event, allocator: context.channel.allocator)
            last.writeStaticString("0\r\n\r\n")
        } else {
            last = event
        }
        self.finishResponse(context, x, last: last, close: x.closeAfter)
    }

    func respondLocal(_ error: ProxyError, close: Bool) {
        self.respond(error.status, body: error.body, retryAfter: error.retryAfter, close: close)
    }

    func respondJSON(_ status: HTTPResponseStatus, _ value: JSONValue, close: Bool) {
        var bytes: [UInt8] = []
        value.write(to: &bytes)
        self.respond(status, body: bytes, retryAfter: nil, close: close)
    }

    func respond(_ status: HTTPResponseStatus, body: [UInt8], retryAfter: Int?, close: Bool) {
        guard let context, let x = self.exchange else { return }
        if x.responseStarted {
            self.failMidStream(x, ProxyError.badGateway("\(status)"))
            return
        }
        x.responseStarted = true
        x.summary.status = Int(status.code)
        let closing = close || self.quiescing || !(x.head?.isKeepAlive ?? false)
        let out = ProxyHeads.localResponse(
            status, body: body, retryAfter: retryAfter, close: closing, request: x.head, requestID: x.requestID, allocator: context.channel.allocator)
        self.finishResponse(context, x, last: out, close: closing)
    }

    /// Ends the current exchange: reports it, writes the last bytes, then closes or reads the next request.
    func finishResponse(_ context: ChannelHandlerContext, _ x: Exchange, last: ByteBuffer?, close: Bool) {
        self.complete(x, status: x.summary.status)
        let closing = close || self.quiescing || self.phase == .closed
        if closing {
            self.phase = .closed
            self.inbound = nil
            let channel = context.channel
            context.writeAndFlush(Self.wrapOutboundOut(last ?? ByteBuffer())).assumeIsolated().whenComplete { _ in
                channel.close(promise: nil)
            }
            return
        }
        if let last { context.write(Self.wrapOutboundOut(last), promise: nil) }
        self.flush(context)
        self.phase = .idle
        self.bodyReader = .none
        self.armClient(self.settings.limits.idleTimeout)
        if self.readingPaused {
            self.readingPaused = false
            context.channel.setAutoRead(true)
        }
        if (self.inbound?.readableBytes ?? 0) > 0 {
            self.armClient(self.settings.limits.headerTimeout)
            self.process()
        }
    }

    /// Reports the request once and forgets it.
    func complete(_ x: Exchange, status: Int) {
        guard self.exchange === x else { return }
        self.exchange = nil
        guard let head = x.head else { return }
        defer {
            x.head = nil
            self.parser.recycle(head)
        }
        x.summary.status = status
        x.summary.seconds = Double((NIODeadline.now() - x.started).nanoseconds) / 1e9
        if let first = x.firstByteAt { x.summary.firstByteSeconds = Double((first - x.started).nanoseconds) / 1e9 }
        if let first = x.firstBodyAt { x.summary.firstTokenSeconds = Double((first - x.started).nanoseconds) / 1e9 }
        x.summary.usagePromptTokens = x.usage.promptTokens
        x.summary.usageCachedTokens = x.usage.cachedTokens
        // Metrics and the access log after the answer's bytes went out; the exchange is freed there too.
        let observer = self.observer
        self.afterFlush { observer.requestFinished(x.summary) }
    }

    // MARK: - /v1/models

    func mergedModels(_ x: Exchange) {
        guard let context else { return }
        let state = self.state
        let promise = context.eventLoop.makePromise(of: JSONValue?.self)
        let models = self.models
        promise.completeWithTask { await models.merged(state: state) }
        promise.futureResult.assumeIsolated().whenComplete { result in
            guard self.exchange === x else { return }
            if case .success(.some(let value)) = result {
                self.respondJSON(.ok, value, close: false)
            } else {
                self.respondLocal(ProxyError.noReplica("no replica answered /v1/models"), close: false)
            }
        }
    }
}

extension Channel {
    /// Sets `autoRead` from the channel's own event loop without a future.
    func setAutoRead(_ on: Bool) {
        try? self.syncOptions?.setOption(.autoRead, value: on)
    }
}

extension HTTP1Head {
    /// Whether `range` starts with `literal`, ASCII case-insensitive (a lower-case literal).
    func equalsPrefix(_ range: Range<Int>, _ literal: StaticString) -> Bool {
        let n = literal.utf8CodeUnitCount
        guard range.count >= n else { return false }
        return self.equals(range.lowerBound..<(range.lowerBound + n), literal, ignoringCase: true)
    }
}
