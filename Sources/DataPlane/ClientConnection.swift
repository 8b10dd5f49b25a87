import Access
import CacheStore
import FastJSON
import FleetState
import HTTPTransport
import NIOCore
import NIOHTTP1
import ResponseCache
import RouterConfig
import RoutingCore

/// One client connection of the data plane, on raw bytes: the shell that runs the exchange
/// machine's actions.
///
/// It parses request heads and bodies (both bounded), tells the `ExchangeMachine` what happened
/// and does what the machine answers: key and place the request (the routing core), lease a
/// connection from the loop's upstream transport, write the request, relay the answer as it
/// arrives (body bytes pass from the replica's socket to the client's as buffer slices, and a
/// slow client pauses reading from the replica), end attempts (load and health), answer with
/// the router's own errors. Every decision (retry or not, framing, how a broken stream ends,
/// when to close) is the machine's.
///
/// It speaks HTTP/1.1 itself rather than through NIO's codec: a proxy copies heads through
/// almost unchanged, so it keeps them as bytes plus ranges and never builds header objects,
/// which roughly halves the CPU per request (see `Benchmarks/README.md`).
final class ClientConnection: ChannelInboundHandler, UpstreamDelegate, DeadlineOwner {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let state: RouterState
    let loops: LoopResourceRegistry
    let models: ModelsCache
    let observer: any ProxyObserver
    /// The response caches (nil: `cache.enabled` is off).
    let cache: CacheLayer?
    var loop: LoopResources?
    var context: ChannelHandlerContext?
    var settings: ProxySettings
    var settingsVersion: Int
    var machine: ExchangeMachine

    var exchange: Exchange?
    /// Client bytes not consumed yet (a partial head or body, or a pipelined request).
    var inbound: ByteBuffer?
    var parser: HTTP1HeadParser
    var bodyReader = BodyReader.none
    /// When the client must have sent its head (or body) by, or the idle connection closes.
    var clientDeadline: NIODeadline?
    /// Reading from the client is paused while a pipelined request waits.
    var readingPaused = false
    /// The client's address, formatted once per connection.
    var remote: String?
    /// The client is one of `trusted_proxies` (its forwarding fields are believed), as of `settingsVersion`.
    var trustedPeer = false
    /// The replica's response head while the machine decides on it (a retry may be asked first).
    var responseHead: HTTP1Head?

    /// Pipelined bytes buffered while a request is in progress before reading pauses.
    static let pipelineBufferLimit = 64 << 10
    /// Bodies up to this size are copied next to their head and written together.
    static let coalesceBytes = 16 << 10

    /// A cached stream is being replayed with pacing: the next request waits.
    var replaying = false

    init(state: RouterState, loops: LoopResourceRegistry, models: ModelsCache, observer: any ProxyObserver, cache: CacheLayer? = nil) {
        self.cache = cache
        self.state = state
        self.loops = loops
        self.models = models
        self.observer = observer
        let (settings, version) = state.proxySettingsVersioned
        self.settings = settings
        self.settingsVersion = version
        self.machine = ExchangeMachine(settings: Self.machineSettings(settings))
        self.parser = HTTP1HeadParser(kind: .request, maxBytes: settings.limits.maxHeaderBytes)
    }

    static func machineSettings(_ s: ProxySettings) -> ExchangeMachine.Settings {
        ExchangeMachine.Settings(
            retry: RetrySettings(retries: s.upstream.retries, budget: s.upstream.retryBudget, minPerSecond: s.upstream.retryMinPerSecond),
            maxBodyBytes: s.limits.maxBodyBytes
        )
    }

    var poolSettings: UpstreamPoolSettings {
        let u = self.settings.upstream
        return UpstreamPoolSettings(
            connectTimeout: u.connectTimeout,
            maxPerLoop: max(1, u.maxConnectionsPerReplica / max(1, self.settings.eventLoops)),
            keepAliveSeconds: u.keepAliveSeconds,
            maxResponseHeadBytes: u.maxResponseHeadBytes,
            tls: self.settings.access.upstreamTLS
        )
    }

    // MARK: - Connection events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let loop = self.loops.resources(for: context.eventLoop)
        self.loop = loop
        loop.sweeper.register(self)
        self.remote = context.channel.remoteAddress?.ipAddress
        self.trustedPeer = self.isTrusted(self.remote)
        self.armClient(self.settings.limits.headerTimeout)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.clientDeadline = nil
        self.inbound = nil
        self.run(self.machine.clientGone())
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // Back-pressure: read from the replica only as fast as the client takes it.
        self.exchange?.lease?.setReading(context.channel.isWritable)
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
        self.run(self.machine.quiesce(buffered: (self.inbound?.readableBytes ?? 0) > 0))
    }

    /// Client-side deadline: the head (slow-loris guard), the body, or an idle keep-alive connection.
    func armClient(_ seconds: Double) {
        self.clientDeadline = .now() + .nanoseconds(Int64(seconds * 1e9))
    }

    /// Called by the loop's sweeper: enforces every deadline of this connection (false once it closed).
    func checkDeadlines(now: NIODeadline) -> Bool {
        guard self.context != nil else { return false }
        if let deadline = self.clientDeadline, now >= deadline {
            self.clientDeadline = nil
            self.run(self.machine.clientDeadline(buffered: (self.inbound?.readableBytes ?? 0) > 0))
        }
        guard let x = self.exchange, x.lease != nil else { return true }
        // Nothing reached the client yet: no head, or an event stream's head still held for its
        // first event (vLLM sends that head before the first token).
        let unsent = !self.machine.responseStarted || (x.heldHead != nil && x.plan?.isSSE == true)
        if unsent, let placement = x.placement, self.loop?.unroutable.contains(placement.replicaName) == true {
            // Down or ejected while this request waits for its answer (a hung replica): elsewhere.
            x.detail = "\(placement.replicaName) left rotation before answering"
            self.abandon(x, .replicaLost)
            return true
        }
        if unsent, let deadline = x.stallDeadline, now >= deadline {
            x.stallDeadline = nil
            x.detail = "\(x.placement?.replicaName ?? "the replica") sent nothing within its stall deadline (upstream.stall_factor)"
            self.abandon(x, .stalled)
            return true
        }
        if !self.machine.responseStarted {
            if let deadline = x.firstByteDeadline, now >= deadline {
                x.detail = "no response within upstream.first_byte_timeout"
                self.run(self.machine.firstByteTimeout())
            }
        } else if now - x.lastActivity >= .nanoseconds(Int64(self.settings.upstream.idleTimeout * 1e9)) {
            self.run(self.machine.upstreamSilent())
        }
        return true
    }

    /// Gives up the current attempt, which sent nothing to the client, for `outcome`: an answer
    /// begun (a held event-stream head) is forgotten, then the machine retries or answers.
    func abandon(_ x: Exchange, _ outcome: AttemptOutcome) {
        guard self.machine.responseStarted else {
            self.run(self.machine.giveUp(outcome))
            return
        }
        if let head = x.heldHead {
            x.heldHead = nil
            self.loop?.buffers.give(head)
        }
        x.plan = nil
        x.capture = nil
        x.events = SSEEventBuffer()
        let anthropic = x.usage.anthropic
        x.usage = UsageScanner()
        x.usage.anthropic = anthropic
        x.firstByteAt = nil
        x.firstBodyAt = nil
        x.summary.status = 0
        x.summary.streamed = false
        x.summary.responseBytes = 0
        self.run(self.machine.giveUp(outcome, answerUnsent: true))
    }

    // MARK: - Reading the request

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = Self.unwrapInboundIn(data)
        if var pending = self.inbound, pending.readableBytes > 0 {
            self.inbound = nil
            pending.writeBuffer(&incoming)
            self.inbound = pending
        } else {
            if self.machine.phase == .idle { self.armClient(self.settings.limits.headerTimeout) }
            self.inbound = incoming
        }
        self.process()
    }

    /// Parses what the client sent as far as the machine's phase allows.
    func process() {
        while !self.replaying, let context, var bytes = self.inbound, bytes.readableBytes > 0 {
            self.inbound = nil
            defer { if bytes.readableBytes > 0 { self.inbound = bytes } }
            switch self.machine.phase {
            case .idle:
                let head: HTTP1Head
                do {
                    guard let parsed = try self.parser.parse(&bytes) else { return }
                    head = parsed
                } catch {
                    self.exchange = self.exchange ?? self.newExchange(head: nil)
                    self.exchange?.detail = error.description
                    self.run(self.machine.malformed(status: error.status))
                    return
                }
                self.requestHead(context, head, buffered: bytes.readableBytes)
            case .receiving:
                guard let x = self.exchange else { return }
                let done: Bool
                do {
                    done = try self.bodyReader.read(&bytes) { piece in x.appendBody(piece) }
                } catch {
                    x.detail = error.description
                    self.run(self.machine.malformed(status: error.status))
                    return
                }
                x.summary.requestBytes = x.body.readableBytes
                let action = self.machine.bodyReceived(total: x.body.readableBytes, complete: done)
                if self.machine.phase != .receiving { self.clientDeadline = nil }
                self.run(action)
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

    func isTrusted(_ remote: String?) -> Bool {
        guard !self.settings.trustedProxies.isEmpty, let remote, let bytes = AddressRange.parseAddress(remote) else { return false }
        return self.settings.trustedProxies.contains { $0.contains(bytes) }
    }

    func newExchange(head: HTTP1Head?) -> Exchange {
        let id = head.flatMap(RequestID.fromClient) ?? self.loop?.requestIDs.next() ?? .generated(UInt64.random(in: .min ... .max))
        return Exchange(head: head, started: .now(), remote: self.remote, requestID: id)
    }

    func requestHead(_ context: ChannelHandlerContext, _ head: HTTP1Head, buffered: Int) {
        if self.state.settingsVersion != self.settingsVersion {
            (self.settings, self.settingsVersion) = self.state.proxySettingsVersioned
            self.machine.settings = Self.machineSettings(self.settings)
            self.trustedPeer = self.isTrusted(self.remote)
        }
        let x = self.newExchange(head: head)
        self.exchange = x
        self.bodyReader = BodyReader.request(head)
        x.expectedBodyBytes = head.contentLength ?? 0
        let action = self.machine.requestHead(
            ExchangeMachine.RequestStart(
                contentLength: head.contentLength,
                bodyComplete: self.bodyReader.isComplete,
                keepAlive: head.isKeepAlive,
                minorVersion: head.minorVersion,
                isHead: head.methodIs("HEAD"),
                expectsContinue: head.expectContinue && buffered == 0
            )
        )
        if self.machine.phase == .receiving { self.armClient(self.settings.limits.bodyTimeout) } else { self.clientDeadline = nil }
        self.run(action)
    }

    // MARK: - Running the machine's actions

    func run(_ action: ExchangeMachine.Action) {
        switch action {
        case .none:
            break
        case .sendContinue:
            self.context?.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(staticString: "HTTP/1.1 100 Continue\r\n\r\n")), promise: nil)
        case .route:
            self.dispatch()
        case .connect(let fresh):
            self.connect(fresh: fresh)
        case .sendRequest:
            self.sendRequest()
        case .retry(let outcome):
            self.retry(after: outcome)
        case .reconnect:
            self.reconnect()
        case .forwardHead(let plan):
            self.forwardHead(plan)
        case .finishResponse(let outcome, let close):
            self.finishResponse(outcome: outcome, close: close)
        case .respond(let error, let close, let endAttempt):
            self.respond(error, close: close, endAttempt: endAttempt)
        case .endMidStream(let error, let sseEvent, let close, let endAttempt):
            self.endMidStream(error, sseEvent: sseEvent, close: close, endAttempt: endAttempt)
        case .abandon(let endAttempt):
            self.abandon(endAttempt: endAttempt)
        case .close:
            if let context = self.context {
                context.flush()  // a response that just ended may still wait for the loop's batched flush
                context.close(promise: nil)
            }
        }
    }

    // MARK: - Routing

    /// Keys and places the request (`.route`), or answers it locally.
    func dispatch() {
        guard let x = self.exchange, let head = x.head else { return }
        let method: RequestMethod = head.methodIs("POST") ? .post : head.methodIs("GET") ? .get : .other
        let path = head.path
        let route = head.bytes.withUnsafeBytes { RequestRoute(method: method, path: UnsafeRawBufferPointer(rebasing: $0[path])) }
        x.route = route
        x.summary.route = route.label
        // A local function, not a closure value: passed as a non-escaping argument it allocates nothing.
        func lookup(_ name: String) -> String? { head.value(named: name) }
        // Who sends it: an API key's tenant (a missing or wrong key ends here), else the header's.
        let access = self.settings.access
        let queue = self.settings.queue
        var authenticated: String?
        if access.apiKeys != nil, route != .health {
            let verdict = access.authenticate(authorization: lookup("authorization"), apiKey: lookup("x-api-key"))
            switch verdict {
            case .tenant(let name):
                authenticated = name
            case .open:
                break
            case .missing, .invalid:
                x.summary.path = head.string(path)
                x.summary.tenant = "unauthenticated"
                self.answer(x, ProxyError.unauthorized(missing: verdict == .missing))
                return
            }
        }
        // The header is read only when something asks (the queue reads it itself when a request waits).
        let tenant = access.usesTenants ? authenticated ?? queue.tenant(keys: nil, header: lookup) : ""
        x.summary.tenant = access.label(tenant)
        var keys: Result<RequestKeys, KeyError>
        var uncounted = false
        switch route {
        case .keyed(let api):
            x.summary.path = api.path
            var rules = self.settings.keying
            let isolate = access.tenants.cacheSalt != .off && api != .generate
            if isolate { rules.salt = access.salt(tenant: tenant) }
            // One request in `insight.sample_every` hands its instruction bytes to the prefix diagnostics.
            if self.settings.insightEvery > 0, let loop = self.loop {
                loop.keyedRequests &+= 1
                rules.captureInstruction = loop.keyedRequests % self.settings.insightEvery == 0
            }
            keys = x.body.withUnsafeReadableBytes { KeyExtractor.extract(api: api, body: $0, header: lookup, rules: rules) }
            if rules.captureInstruction, case .success(var k) = keys, let text = k.instructionText {
                // The text goes to the diagnostics once, with the answer's usage, and nowhere else.
                k.instructionText = nil
                keys = .success(k)
                x.insight = (text, PrefixInsight.sessionKind(k))
            }
            if isolate, case .success(let k) = keys {
                if k.clientSalt, access.tenants.cacheSalt == .refuse {
                    self.answer(x, ProxyError.saltRefused())
                    return
                }
                // The replica sees the tenant's salt last: the key that counts in its JSON parser.
                let original = x.body
                x.body = Self.withSalt(x.body, rules.salt!, allocator: self.context?.channel.allocator ?? ByteBufferAllocator())
                original.scrubReadable()
            }
            if case .success(let k) = keys { x.summary.promptTokensEstimate = k.promptTokens(bytesPerToken: rules.bytesPerToken) }
            if api == .messages { x.usage.anthropic = true }
        case .countTokens:
            // Keyed as the Messages request it counts (its model's pool), placed without load.
            x.summary.path = head.string(path)
            let rules = self.settings.keying
            keys = x.body.withUnsafeReadableBytes { KeyExtractor.extract(api: .messages, body: $0, header: lookup, rules: rules) }
            uncounted = true
        case .storedResponse(let id):
            // Only the replica that made it has it; an id the router did not make goes anywhere.
            x.summary.path = head.string(path)
            keys = FleetSnapshot.isRouterResponseID(id)
                ? .success(.storedResponse(id)) : .failure(KeyError(.invalidField, "response id '\(id)' does not name a replica"))
        case .methodNotAllowed(let api):
            x.summary.path = api.path
            self.answer(x, ProxyError.methodNotAllowed(head.methodString, api.path))
            return
        case .models:
            x.summary.path = head.string(path)
            self.mergedModels(x)
            return
        case .health:
            x.summary.path = head.string(path)
            let ok = self.state.fleet.routableCount > 0
            self.answer(x, status: ok ? .ok : .serviceUnavailable, json: .object(["status": .string(ok ? "ok" : "no healthy replica")]))
            return
        case .notFound:
            x.summary.path = head.string(path)
            self.answer(x, ProxyError.notFound(x.summary.path))
            return
        case .forward:
            x.summary.path = head.string(path)
            keys = .failure(KeyError(.invalidField, "\(x.summary.path) is routed without keys"))
        }
        x.keys = keys
        if access.usesTenants, let (exceeded, wait) = access.admit(tenant: tenant, promptTokens: x.summary.promptTokensEstimate ?? 0, now: self.state.now()) {
            self.answer(x, ProxyError.rateLimited(tenant: authenticated ?? tenant, exceeded, retryAfter: max(1, Int(wait.rounded(.up)))))
            return
        }
        // The response cache, before placement: a hit never reaches the fleet.
        if let cache = self.cache, case .keyed(let api) = route {
            // Its scope is the tenant even where no tenant feature is configured: answers are
            // never shared across tenants.
            let scope = authenticated ?? (access.usesTenants ? tenant : queue.tenantHeader.flatMap(lookup) ?? "")
            self.consultCache(cache, x, api: api, tenant: scope, header: lookup) {
                self.place(x, uncounted: uncounted, authenticated: authenticated)
            }
            return
        }
        self.place(x, uncounted: uncounted, authenticated: authenticated)
    }

    /// Places a keyed request (or queues it, or refuses it).
    func place(_ x: Exchange, uncounted: Bool, authenticated: String?) {
        guard let head = x.head, let keys = x.keys else { return }
        func lookup(_ name: String) -> String? { head.value(named: name) }
        let queue = self.settings.queue
        func classify() -> (tenant: String, priority: Int) {
            let k = try? keys.get()
            let tenant = queue.tenant(keys: k, header: lookup, authenticated: authenticated)
            return (tenant, queue.priority(tenant: tenant, model: k?.model, header: lookup))
        }
        let result = uncounted ? self.state.placeUncounted(keys, header: lookup) : self.state.admit(keys, header: lookup, bytes: x.body.readableBytes, classify: classify) {
            // Made only when the request waits: the queue's answer comes back on this loop.
            let bound = NIOLoopBound((self, x), eventLoop: self.context!.eventLoop)
            return { outcome in
                bound.eventLoop.execute {
                    let (connection, exchange) = bound.value
                    connection.queueOutcome(exchange, outcome)
                }
            }
        }
        switch result {
        case .placed(let placement):
            x.placement = placement
            self.run(self.machine.placed())
        case .queued(let id):
            x.queueID = id
            self.run(self.machine.queued())
        case .refused(let reason, let retryAfter):
            x.retryAfter = retryAfter
            self.run(self.machine.queueRefused(reason))
        case .unplaced(let reason):
            x.detail = reason
            self.run(self.machine.noReplica())
        case .unknownResponse(let id):
            self.answer(x, ProxyError.responseNotFound(id))
        }
    }

    /// The body with `"cache_salt":"<salt>"` added as its last member (a valid JSON object, as
    /// keying found it; a repeated key's last value is the one JSON parsers keep).
    static func withSalt(_ body: ByteBuffer, _ salt: [UInt8], allocator: ByteBufferAllocator) -> ByteBuffer {
        let view = body.readableBytesView
        guard let close = view.lastIndex(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }), view[close] == UInt8(ascii: "}") else {
            return body
        }
        let start = view.startIndex
        var out = allocator.buffer(capacity: body.readableBytes + salt.count + 20)
        out.writeBytes(view[start..<close])
        out.writeStaticString(",\"cache_salt\":\"")
        out.writeBytes(salt)
        out.writeStaticString("\"}")
        return out
    }

    /// What the router's queue did with this connection's request.
    func queueOutcome(_ x: Exchange, _ outcome: RouterState.QueueOutcome) {
        guard self.exchange === x, x.queueID != nil else {
            // The client left meanwhile: the replica's place it got is given back at once.
            if case .dispatched(let placement, _) = outcome { self.state.finish(placement, outcome: .clientGone) }
            return
        }
        x.queueID = nil
        switch outcome {
        case .dispatched(let placement, let waited):
            x.summary.queuedSeconds = waited
            x.placement = placement
            self.run(self.machine.dispatched())
        case .refused(let reason, let retryAfter, let waited):
            x.summary.queuedSeconds = waited
            x.retryAfter = retryAfter
            self.run(self.machine.queueRefused(reason))
        }
    }

    /// Answers the request with a local JSON document.
    func answer(_ x: Exchange, status: HTTPResponseStatus, json: JSONValue) {
        var bytes: [UInt8] = []
        json.write(to: &bytes)
        x.localAnswer = (Int(status.code), bytes, nil)
        self.run(self.machine.answerLocally())
    }

    /// Answers the request with a local error.
    func answer(_ x: Exchange, _ error: ProxyError) {
        x.localAnswer = (Int(error.status.code), error.body(anthropic: x.anthropic), error.retryAfter)
        self.run(self.machine.answerLocally())
    }

    // MARK: - Upstream

    /// Leases a connection to the placement's replica (`.connect`).
    func connect(fresh: Bool) {
        guard let x = self.exchange, let placement = x.placement, let loop = self.loop else { return }
        x.summary.replica = placement.replicaName
        x.summary.tier = placement.decision.tier
        x.summary.attempts = self.machine.attempts
        switch loop.transport.lease(placement.endpoint, fresh: fresh, settings: self.poolSettings) {
        case .ready(let lease):
            self.leased(x, lease)
        case .failed(let error):
            x.detail = error.description
            self.run(self.machine.connectFailed())
        case .pending(let future):
            // Captured strongly (a weak capture costs every client connection a side table): the
            // future always completes, by the connect timeout at the latest.
            future.assumeIsolated().whenComplete { result in
                guard self.exchange === x, x.placement === placement else {
                    if case .success(let lease) = result { lease.release() }
                    return
                }
                switch result {
                case .success(let lease):
                    self.leased(x, lease)
                case .failure(let error):
                    x.detail = "\(error)"
                    self.run(self.machine.connectFailed())
                }
            }
        }
    }

    func leased(_ x: Exchange, _ lease: any UpstreamLease) {
        x.lease = lease
        self.run(self.machine.connected(reused: lease.reused))
    }

    /// Writes the request to the leased connection (`.sendRequest`).
    func sendRequest() {
        guard let x = self.exchange, let head = x.head, let lease = x.lease, let placement = x.placement, let context else { return }
        if !context.channel.isWritable { lease.setReading(false) }
        // Responses: the replica names the response after the `request_id` the router gives it,
        // which names this replica (`StoredResponseID`): `{"request_id":"...",` replaces the body's
        // opening brace, and the rest goes as it came.
        var opening: [UInt8] = []
        var body = x.body
        if case .keyed(.responses) = x.route, case .success(let keys)? = x.keys, !keys.namesRequestID,
            let brace = body.readableBytesView.firstIndex(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }),
            body.readableBytesView[brace] == UInt8(ascii: "{")
        {
            if x.responseSerial == 0 { x.responseSerial = self.loop?.requestIDs.nextValue() ?? UInt64.random(in: 1 ... .max) }
            let id = StoredResponseID.make(tag: placement.endpoint.responseTag, request: x.responseSerial)
            opening = Array("{\"request_id\":\"\(id)\",".utf8)
            body.moveReaderIndex(to: brace + 1)
        }
        let length = opening.count + body.readableBytes
        // A small body goes out in the same buffer as the head: one write instead of two.
        let coalesce = length <= Self.coalesceBytes
        let buffers = self.loop?.buffers
        var requestHead = buffers?.take(capacity: 0, allocator: context.channel.allocator) ?? ByteBuffer()
        let access = self.settings.access
        ProxyHeads.upstreamRequest(
            head, endpoint: placement.endpoint, client: x.remote, requestID: x.requestID, bodyLength: length,
            reserve: coalesce ? length : opening.count, stripCredentials: access.apiKeys != nil && !access.forwardClientKey,
            authorization: access.upstreamAuthorization, proto: self.settings.tls ? "https" : "http", trustForwarded: self.trustedPeer,
            into: &requestHead)
        if !opening.isEmpty { requestHead.writeBytes(opening) }
        if coalesce {
            requestHead.writeImmutableBuffer(body)
            lease.send(head: requestHead, body: nil, isHead: head.methodIs("HEAD"), to: self)
        } else {
            lease.send(head: requestHead, body: body, isHead: head.methodIs("HEAD"), to: self)
        }
        buffers?.give(requestHead)
        let now = NIODeadline.now()
        x.sentAt = now
        x.firstByteDeadline = now + .nanoseconds(Int64(self.settings.upstream.firstByteTimeout * 1e9))
        x.stallDeadline = nil
        if case .success(let keys)? = x.keys, keys.stream, let seconds = placement.stallSeconds(self.settings.upstream.stall),
            seconds < self.settings.upstream.firstByteTimeout
        {
            x.stallDeadline = now + .nanoseconds(Int64(seconds * 1e9))
        }
    }

    /// Asks the routing core for another replica (`.retry`).
    func retry(after outcome: AttemptOutcome) {
        guard let x = self.exchange, let current = x.placement else { return }
        x.failed.append(current.replicaName)
        guard let next = self.state.retry(after: current, excluding: x.failed, keys: try? x.keys?.get(), budgeted: outcome != .replicaLost) else {
            self.run(self.machine.retryRefused())
            return
        }
        self.endAttempt(x, outcome)
        self.observer.retried(replica: current.replicaName, outcome: outcome)
        x.placement = next
        self.run(self.machine.retryGranted())
    }

    /// Places the request again on the same replica, on a fresh connection (`.reconnect`).
    func reconnect() {
        guard let x = self.exchange, let current = x.placement else { return }
        self.endAttempt(x, .staleConnection)
        x.placement = self.state.again(current, keys: try? x.keys?.get())
        self.connect(fresh: true)
    }

    func upstreamHead(_ response: HTTP1Head) {
        guard let x = self.exchange, x.placement != nil else { return }
        let isSSE = response.first(.contentType).map { response.equalsPrefix($0.value, "text/event-stream") } ?? false
        self.responseHead = response
        defer { self.responseHead = nil }
        self.run(
            self.machine.upstreamHead(status: response.status, chunked: response.chunked, contentLength: response.contentLength, isSSE: isSSE))
    }

    /// Prepares the client's response head from the replica's (`.forwardHead`).
    func forwardHead(_ plan: ExchangeMachine.ResponsePlan) {
        guard let x = self.exchange, let head = x.head, let response = self.responseHead, let placement = x.placement, let context else { return }
        x.plan = plan
        // Prefill is over: recorded when this read ends unless the answer ends first (then
        // `finish` accounts for it, one lock fewer for every answer that fits one read).
        x.firstBytePending = true
        x.firstByteAt = .now()
        x.lastActivity = x.firstByteAt!
        x.summary.status = plan.status
        x.summary.streamed = plan.isSSE
        var out = self.loop?.buffers.take(capacity: 0, allocator: context.channel.allocator) ?? ByteBuffer()
        ProxyHeads.clientResponse(
            response,
            request: head,
            framing: plan.framing,
            close: plan.close,
            endpoint: placement.endpoint,
            tier: placement.decision.tier,
            requestID: x.requestID,
            reserve: response.contentLength.map { $0 <= Self.coalesceBytes ? $0 : 0 } ?? 0,
            extra: x.cacheFields,
            into: &out
        )
        if x.cache != nil { self.startCapture(x, status: plan.status, contentType: response.first(.contentType).map { response.string($0.value) }) }
        // Held until the first body piece (or the end of this read) so both go out in one write.
        x.heldHead = out
    }

    /// Writes the response head if it is still held back.
    func releaseHead(_ context: ChannelHandlerContext, _ x: Exchange) {
        if let head = x.heldHead {
            x.heldHead = nil
            context.write(Self.wrapOutboundOut(head), promise: nil)
            self.loop?.buffers.give(head)
        }
    }

    func upstreamBody(_ piece: ByteBuffer) {
        guard let x = self.exchange, let plan = x.plan, let context else { return }
        x.lastActivity = .now()
        if x.firstBodyAt == nil { x.firstBodyAt = x.lastActivity }
        x.summary.responseBytes += piece.readableBytes
        if case .keyed = x.route { x.usage.feed(piece) }
        if x.capture != nil { self.capture(x, piece) }
        switch plan.framing {
        case .none:
            break
        case .length, .close:
            if var head = x.heldHead, piece.readableBytes <= Self.coalesceBytes {
                x.heldHead = nil
                head.writeImmutableBuffer(piece)
                context.write(Self.wrapOutboundOut(head), promise: nil)
                self.loop?.buffers.give(head)
                return
            }
            self.releaseHead(context, x)
            context.write(Self.wrapOutboundOut(piece), promise: nil)
        case .chunked:
            if plan.isSSE {
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
            // An event stream's head waits for its first event (it goes out with it, so the client
            // sees no later first token): until then a hung replica's request can still move.
            if x.plan?.isSSE != true { self.releaseHead(context, x) }
        }
        self.flush(context)
    }

    func upstreamEnd() {
        self.run(self.machine.upstreamEnd())
    }

    func upstreamFailed(_ error: UpstreamError) {
        guard let x = self.exchange else { return }
        x.lease = nil
        x.detail = error.description
        self.run(self.machine.upstreamFailed())
    }

    /// At the end of the loop's current batch of events (`FlushBatch`).
    func flush(_ context: ChannelHandlerContext) {
        if let loop = self.loop { loop.flushes.flush(context) } else { context.flush() }
    }

    /// After the loop's batch of writes (`FlushBatch`): bookkeeping the client need not wait for.
    func afterFlush(_ work: @escaping () -> Void) {
        if let loop = self.loop { loop.flushes.afterFlush(work) } else { work() }
    }

    // MARK: - Ending attempts and exchanges

    /// The current attempt ended: drop its connection if it still has one, release its load,
    /// tell passive health and the observers.
    func endAttempt(_ x: Exchange, _ outcome: AttemptOutcome) {
        if let lease = x.lease {
            x.lease = nil
            lease.drop()
        }
        guard let placement = x.placement else { return }
        x.placement = nil
        if outcome == .success {
            // An answer that went well: its load is released once the answer is out, and what it
            // took teaches the service model. A failure is accounted at once (a retry decides
            // next, and passive health must count it).
            let state = self.state
            let observation = self.observation(x)
            self.afterFlush { state.finish(placement, outcome: .success, observation: observation) }
            return
        }
        self.state.finish(placement, outcome: outcome)
        if outcome.isFailure {
            if case .serverError(let status) = outcome {
                x.summary.upstreamErrors.append(String(status))
            } else {
                x.summary.upstreamErrors.append(outcome.kind)
            }
            self.observer.attemptFailed(replica: placement.replicaName, outcome: outcome)
        }
    }

    /// What a successful attempt took, as the service model learns it: a stream's first token
    /// (its first body bytes), the whole answer, and the replica's own usage figures.
    func observation(_ x: Exchange) -> RouterState.Observation? {
        // Only a generated answer tells the replica's speed (a 4xx was refused before any work;
        // other routes generate nothing).
        guard let sent = x.sentAt, case .keyed = x.route, let status = x.plan?.status, (200..<300).contains(status) else { return nil }
        let now = NIODeadline.now()
        let first = x.plan?.isSSE == true ? x.firstBodyAt.map { Double(($0 - sent).nanoseconds) / 1e9 } : nil
        return RouterState.Observation(
            firstTokenSeconds: first, seconds: Double((now - sent).nanoseconds) / 1e9, promptTokens: x.usage.promptTokens,
            cachedTokens: x.usage.cachedTokens, outputTokens: x.usage.completionTokens)
    }

    /// The replica's answer is complete (`.finishResponse`).
    func finishResponse(outcome: AttemptOutcome, close: Bool) {
        guard let x = self.exchange, let context else { return }
        if let lease = x.lease {
            x.lease = nil
            lease.release()
        }
        self.endAttempt(x, outcome)
        if outcome == .success { self.storeCaptured(x) }
        self.releaseHead(context, x)
        var tail: ByteBuffer?
        if x.plan?.framing == .chunked {
            var end = context.channel.allocator.buffer(capacity: 64)
            if let rest = x.events.takeComplete(force: true) { end = ProxyHeads.chunk(rest, allocator: context.channel.allocator) }
            end.writeStaticString("0\r\n\r\n")
            tail = end
        }
        self.finishExchange(context, x, last: tail, close: close)
    }

    /// The router's own answer (`.respond`).
    func respond(_ error: ExchangeMachine.LocalError?, close: Bool, endAttempt: AttemptOutcome?) {
        guard let context else { return }
        let x = self.exchange ?? self.newExchange(head: nil)
        self.exchange = x
        if let endAttempt { self.endAttempt(x, endAttempt) }
        let status: Int
        let body: [UInt8]
        let retryAfter: Int?
        if let error {
            let e = self.proxyError(error, x)
            (status, body, retryAfter) = (Int(e.status.code), e.body(anthropic: x.anthropic), e.retryAfter)
        } else if let local = x.localAnswer {
            (status, body, retryAfter) = local
        } else {
            (status, body, retryAfter) = (500, ProxyError.badGateway("no answer").body, nil)
        }
        x.summary.status = status
        if error == nil, let events = x.paced, let first = events.first {
            // A cached stream with pacing: the head and first event now, the rest one by one.
            let out = ProxyHeads.localResponse(
                HTTPResponseStatus(statusCode: status), body: Array(first), retryAfter: nil, close: close, request: x.head, requestID: x.requestID,
                contentType: x.localType, extra: x.cacheFields, bodyBytes: body.count, allocator: context.channel.allocator)
            context.writeAndFlush(Self.wrapOutboundOut(out), promise: nil)
            self.replaying = true
            self.pace(context, x, events.dropFirst(), close: close)
            return
        }
        let out = ProxyHeads.localResponse(
            HTTPResponseStatus(statusCode: status), body: body, retryAfter: retryAfter, close: close, request: x.head, requestID: x.requestID,
            contentType: error == nil ? x.localType : nil, extra: x.cacheFields, allocator: context.channel.allocator)
        self.finishExchange(context, x, last: out, close: close)
    }

    /// An answer that started cannot become an error (`.endMidStream`).
    func endMidStream(_ error: ExchangeMachine.LocalError, sseEvent: Bool, close: Bool, endAttempt: AttemptOutcome?) {
        guard let x = self.exchange, let context else { return }
        if let endAttempt { self.endAttempt(x, endAttempt) }
        self.releaseHead(context, x)
        guard sseEvent else {
            self.finishExchange(context, x, last: nil, close: true)
            return
        }
        let event = context.channel.allocator.buffer(bytes: self.proxyError(error, x).sseEvent(anthropic: x.anthropic))
        var last: ByteBuffer
        if x.plan?.framing == .chunked {
            // Complete events already went out; a partial one is dropped rather than corrupted.
            last = ProxyHeads.chunk(event, allocator: context.channel.allocator)
            last.writeStaticString("0\r\n\r\n")
        } else {
            last = event
        }
        self.finishExchange(context, x, last: last, close: close)
    }

    /// The client left (`.abandon`).
    func abandon(endAttempt: AttemptOutcome?) {
        guard let x = self.exchange else { return }
        x.summary.clientGone = true
        if let id = x.queueID {
            x.queueID = nil
            self.state.leaveQueue(id: id)
        }
        if let lease = x.lease {
            // Cancels the replica's work by dropping its connection.
            x.lease = nil
            lease.drop()
        }
        if let endAttempt { self.endAttempt(x, endAttempt) }
        self.complete(x, status: x.summary.status == 0 ? 499 : x.summary.status)
    }

    /// The words of an error the router answers with.
    func proxyError(_ error: ExchangeMachine.LocalError, _ x: Exchange) -> ProxyError {
        let replica = x.summary.replica ?? "?"
        switch error {
        case .bodyTooLarge:
            return .bodyTooLarge(limit: self.settings.limits.maxBodyBytes)
        case .malformed(let status):
            return .malformed(status: status, x.detail ?? "malformed request")
        case .requestTimeout:
            return .requestTimeout()
        case .noReplica:
            return .noReplica(x.detail ?? "no healthy replica")
        case .badGateway:
            if self.machine.responseStarted { return .badGateway("replica \(replica) failed mid-stream: \(x.detail ?? "connection lost")") }
            return .badGateway("replica \(replica) failed (\(x.detail ?? "connection lost")) after \(self.machine.attempts) attempt(s)")
        case .gatewayTimeout:
            if self.machine.responseStarted { return .gatewayTimeout("no data from the replica for \(Int(self.settings.upstream.idleTimeout)) s") }
            if let detail = x.detail, x.summary.upstreamErrors.last == AttemptOutcome.stalled.kind {
                return .gatewayTimeout("\(detail), after \(self.machine.attempts) attempt(s)")
            }
            return .gatewayTimeout("replica \(replica) did not answer within \(Int(self.settings.upstream.firstByteTimeout)) s")
        case .overloaded(let reason):
            return .overloaded(reason, retryAfter: x.retryAfter ?? 1)
        }
    }

    /// Ends the current exchange: reports it, writes the last bytes, then closes or reads the next
    /// request (the machine has moved to `closed` or `idle`).
    func finishExchange(_ context: ChannelHandlerContext, _ x: Exchange, last: ByteBuffer?, close: Bool) {
        self.complete(x, status: x.summary.status)
        if close {
            self.inbound = nil
            let channel = context.channel
            context.writeAndFlush(Self.wrapOutboundOut(last ?? ByteBuffer())).assumeIsolated().whenComplete { _ in
                channel.close(promise: nil)
            }
            return
        }
        if let last { context.write(Self.wrapOutboundOut(last), promise: nil) }
        self.flush(context)
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
        x.summary.status = status
        x.summary.attempts = self.machine.attempts
        x.summary.seconds = Double((NIODeadline.now() - x.started).nanoseconds) / 1e9
        if let first = x.firstByteAt { x.summary.firstByteSeconds = Double((first - x.started).nanoseconds) / 1e9 }
        if let first = x.firstBodyAt { x.summary.firstTokenSeconds = Double((first - x.started).nanoseconds) / 1e9 }
        x.summary.usagePromptTokens = x.usage.promptTokens
        x.summary.usageCachedTokens = x.usage.cachedTokens
        x.summary.usageOutputTokens = x.usage.completionTokens
        if let result = x.cacheResult {
            x.summary.cache = result
            self.cache?.count(result)
        }
        if let (text, session) = x.insight {
            x.insight = nil
            let state = self.state
            let (prompt, cached) = (x.usage.promptTokens, x.usage.cachedTokens)
            self.afterFlush { state.observeInstruction(text, session: session, promptTokens: prompt, cachedTokens: cached) }
        }
        // The request's bytes are done with: zeroed where they lie (the receive buffer or the copy).
        x.body.scrubReadable()
        x.body = ByteBuffer()
        if case .success(let k)? = x.keys { k.leadingText.scrub() }
        // A request whose head never parsed is not reported (there is no request to speak of).
        guard let head = x.head else { return }
        x.head = nil
        self.parser.recycle(head)
        // Metrics and the access log after the answer's bytes went out; the exchange is freed there too.
        let observer = self.observer
        self.afterFlush { observer.requestFinished(x.summary) }
    }

    // MARK: - /v1/models

    func mergedModels(_ x: Exchange) {
        guard let context else { return }
        let state = self.state
        let models = self.models
        let promise = context.eventLoop.makePromise(of: JSONValue?.self)
        promise.completeWithTask { await models.merged(state: state) }
        promise.futureResult.assumeIsolated().whenComplete { result in
            guard self.exchange === x else { return }
            if case .success(.some(let value)) = result {
                self.answer(x, status: .ok, json: value)
            } else {
                self.answer(x, ProxyError.noReplica("no replica answered /v1/models"))
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
