import CacheStore
import FastJSON
import FleetState
import HTTPTransport
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ResponseCache
import RouterConfig
import RoutingCore
import ServiceLifecycle

/// The admin listener (keep it off the public network): Prometheus `/metrics`, `/healthz`
/// (the process serves), `/readyz` (the first probe round is done and a replica is routable),
/// `/admin/replicas` (health, load, probed signals) and `/admin/explain` (a request body in, the
/// decision with live state out; nothing is committed).
public final class AdminServer: Service, Sendable {
    public let server: HTTPServer
    let logger: Logger

    init(server: HTTPServer, logger: Logger) {
        self.server = server
        self.logger = logger
    }

    /// - Parameters:
    ///   - metrics: the Prometheus exposition text, made per scrape.
    ///   - isReady: whether the first probe round is done.
    public static func start(
        state: RouterState,
        metrics: @escaping @Sendable () -> [UInt8],
        isReady: @escaping @Sendable () -> Bool,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        tls: ServerTLS? = nil,
        cache: CacheLayer? = nil,
        logger: Logger
    ) async throws -> AdminServer {
        let address = state.config.adminListen
        let server = try await HTTPServer.bind(
            group: group, host: address.host, port: address.port, limits: HTTPServerLimits(maxConnections: 256), tls: tls, logger: logger
        ) { _ in
            [AdminHandler(state: state, metrics: metrics, isReady: isReady, cache: cache)]
        }
        logger.info("admin listening", metadata: ["listen": "\(address.host):\(server.port)", "tls": "\(tls == nil ? "off" : "on")"])
        return AdminServer(server: server, logger: logger)
    }

    public var port: Int { self.server.port }

    public func run() async throws {
        try? await gracefulShutdown()
        await self.server.shutdown(gracefulWithin: 1)
    }

    public func stop() async {
        await self.server.shutdown(gracefulWithin: 0.5)
    }
}

final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let state: RouterState
    let metrics: @Sendable () -> [UInt8]
    let isReady: @Sendable () -> Bool
    let cache: CacheLayer?
    var head: HTTPRequestHead?
    var body = ByteBuffer()
    /// The body went past `limits.max_explain_body_bytes`: the rest is read and dropped, the answer is 413.
    var bodyTooLarge = false
    /// `limits.max_explain_body_bytes`, read once per request.
    var bodyLimit = 0

    init(state: RouterState, metrics: @escaping @Sendable () -> [UInt8], isReady: @escaping @Sendable () -> Bool, cache: CacheLayer? = nil) {
        self.cache = cache
        self.state = state
        self.metrics = metrics
        self.isReady = isReady
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let h):
            self.head = h
            self.body.clear()
            self.bodyTooLarge = false
            self.bodyLimit = self.state.config.limits.maxExplainBodyBytes
        case .body(var chunk):
            guard !self.bodyTooLarge else { return }
            if self.body.readableBytes + chunk.readableBytes <= self.bodyLimit {
                self.body.writeBuffer(&chunk)
            } else {
                self.bodyTooLarge = true
                self.body = ByteBuffer()
            }
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            if self.bodyTooLarge {
                self.json(
                    context, head, .payloadTooLarge, .object(["error": .string("the body exceeds limits.max_explain_body_bytes (\(self.bodyLimit) bytes)")]))
                return
            }
            self.route(context, head)
        }
    }

    func route(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        var path = Substring(head.uri)
        if let q = path.firstIndex(of: "?") { path = path[..<q] }
        // The admin token (`auth.admin_token_file`) guards /admin/* (and /metrics if configured);
        // health checks stay open for orchestrators.
        let access = self.state.access
        let guarded = path.hasPrefix("/admin/") || (path == "/metrics" && access.protectMetrics)
        if guarded, !access.adminAllowed(authorization: head.headers.first(name: "authorization")) {
            var headers = HTTPHeaders()
            headers.add(name: "www-authenticate", value: "Bearer realm=\"cacheroute-admin\"")
            self.json(
                context, head, .unauthorized,
                .object(["error": .string("this endpoint needs the admin token: send 'Authorization: Bearer <token>' (auth.admin_token_file)")]),
                headers: headers)
            return
        }
        switch (head.method, path) {
        case (.GET, "/metrics"):
            self.respond(context, head, .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: self.metrics())
        case (.GET, "/healthz"):
            self.json(context, head, .ok, .object(["status": .string("ok")]))
        case (.GET, "/readyz"):
            let routable = self.state.fleet.routableCount
            let probed = self.isReady()
            let ready = probed && routable > 0
            let reason = !probed ? "first probe round not finished" : routable == 0 ? "no routable replica" : "ready"
            self.json(context, head, ready ? .ok : .serviceUnavailable, .object(["status": .string(reason), "routable_replicas": .int(Int64(routable))]))
        case (.GET, "/admin/replicas"):
            let queue = self.state.queueReport(drain: false)
            self.json(
                context, head, .ok,
                .object([
                    "replicas": .array(self.state.replicaReport().map { Self.replicaJSON($0, now: self.state.now()) }),
                    "queue": .object([
                        "depth": .int(Int64(queue.depth)), "bytes": .int(Int64(queue.bytes)), "queued_total": .int(Int64(queue.queued)),
                        "refused_total": .object(QueueRejection.allCases.map { .init($0.rawValue, .int(Int64(queue.refused[$0] ?? 0))) }),
                    ]),
                ]))
        case (.POST, "/admin/explain"):
            self.explain(context, head)
        case (.GET, "/admin/prefixes"):
            self.json(context, head, .ok, self.state.prefixReport().json)
        case (.DELETE, "/admin/cache"):
            self.invalidateCache(context, head)
        default:
            self.json(
                context, head, .notFound,
                .object(["error": .string("no such endpoint; try /metrics, /healthz, /readyz, /admin/replicas, /admin/prefixes, POST /admin/explain, DELETE /admin/cache")]))
        }
    }

    static func replicaJSON(_ r: ReplicaReport, now: Double) -> JSONValue {
        func num(_ v: Double?) -> JSONValue { v.map { $0.isFinite ? .double($0) : .null } ?? .null }
        func int(_ v: Int?) -> JSONValue { v.map { .int(Int64($0)) } ?? .null }
        let p = r.probe
        return .object([
            "name": .string(r.spec.name),
            "url": .string(r.endpoint.url?.description ?? r.spec.url),
            "engine": .string(r.spec.engine.rawValue),
            "weight": .double(r.spec.weight),
            "models": .array((r.spec.models.isEmpty ? (p.models ?? []) : r.spec.models).map { .string($0) }),
            "routable": .bool(r.routable),
            "health": .string(r.health.state.rawValue),
            "consecutive_probe_failures": .int(Int64(r.health.consecutiveFailures)),
            "ejected": .bool(r.health.ejectedUntil != nil && !r.routable && r.health.state != .down),
            "ejections": .int(Int64(r.health.ejectionsTotal)),
            "in_flight": .int(Int64(r.load.inFlight)),
            "pending_prefill_tokens": .int(Int64(r.load.pendingPrefillTokens)),
            "queue_depth": int(p.waiting),
            "running": int(p.running),
            "kv_cache_usage": num(p.kvUsage),
            "prefix_cache_hit_ratio": num(p.hitRatio),
            "cache_tokens": int(r.spec.cacheTokens ?? p.cacheTokens),
            "last_probe_error": (r.endpoint.urlError ?? p.lastError).map { .string($0) } ?? .null,
            "prefill_tokens_per_second": .double(r.speed.prefillTokensPerSecond.rounded()),
            "learned_prefill_tokens_per_second": num(r.learned.map { $0.prefillTokensPerSecond.rounded() }),
            "decode_seconds_per_token": .double((r.speed.decodeSecondsPerToken * 1e5).rounded() / 1e5),
            "concurrency_limit": num(r.learned?.concurrencyLimit.map { ($0 * 10).rounded() / 10 }),
            "speed_samples": .int(Int64(r.learned?.prefillSamples ?? 0)),
            "last_error": r.health.lastError.map { .string($0) } ?? .null,
            "prefix_index_entries": .int(Int64(r.indexBlocks)),
            "predicted_cached_tokens": .int(Int64(r.truth.predictedTokens)),
            "reported_cached_tokens": .int(Int64(r.truth.reportedTokens)),
            "cache_resets": .object(CacheResetReason.allCases.map { .init($0.rawValue, .int(Int64(r.truth.resets[$0] ?? 0))) }),
            // The last predicted hits that came back uncached (newest last); hashes and counts only.
            "recent_mispredictions": .array(
                r.truth.recent.map { m in
                    .object([
                        "seconds_ago": .double(((now - m.at) * 10).rounded() / 10), "predicted_cached_tokens": .int(Int64(m.predictedTokens)),
                        "reported_cached_tokens": .int(Int64(m.reportedTokens)), "prompt_tokens": .int(Int64(m.promptTokens)),
                    ])
                }),
        ])
    }

    func explain(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        let bytes = Array(self.body.readableBytesView)
        // The API: ?api=chat|completions|generate|responses|messages (or a path), else guessed from the body.
        var named: String?
        if let q = head.uri.firstIndex(of: "?") {
            for pair in head.uri[head.uri.index(after: q)...].split(separator: "&") where pair.hasPrefix("api=") {
                named = String(pair.dropFirst(4))
            }
        }
        let api = named.flatMap { RequestAPI(rawValue: $0) ?? RequestAPI(path: $0) } ?? RequestAPI.detect(body: bytes) ?? .chat
        let headers = head.headers
        let lookup: (String) -> String? = { headers.first(name: $0) }
        let settings = self.state.proxySettings
        let keys = KeyExtractor.extract(api: api, body: bytes, header: lookup, rules: settings.keying)
        let (decision, fleet, routing) = self.state.explain(keys, header: lookup)
        self.respond(context, head, .ok, contentType: "application/json", body: Array(decision.report(keys: keys, fleet: fleet, settings: routing).pretty.utf8))
    }

    /// `DELETE /admin/cache`: every entry; `?model=M&tenant=T`: one scope (tenant defaults to
    /// none); `?key=PREFIX`: the entries whose `x-cacheroute-cache-key` starts with it.
    func invalidateCache(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        guard let cache = self.cache else {
            self.json(context, head, .conflict, .object(["error": .string("the response cache is off (cache.enabled)")]))
            return
        }
        var query: [String: String] = [:]
        if let q = head.uri.firstIndex(of: "?") {
            for pair in head.uri[head.uri.index(after: q)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                query[String(parts[0])] = parts.count > 1 ? (String(parts[1]).removingPercentEncoding() ?? String(parts[1])) : ""
            }
        }
        let unknown = query.keys.filter { !["model", "tenant", "key"].contains($0) }
        if !unknown.isEmpty {
            self.json(context, head, .badRequest, .object(["error": .string("unknown parameter '\(unknown.sorted()[0])'; use model and tenant (a scope) or key (a key prefix)")]))
            return
        }
        if let key = query["key"], key.isEmpty || !key.allSatisfy({ $0.isHexDigit || $0 == ":" }) {
            self.json(context, head, .badRequest, .object(["error": .string("key must be a prefix of an x-cacheroute-cache-key (hex digits and ':')")]))
            return
        }
        let scope = query["model"].map { CacheKey.scope(model: $0, tenant: query["tenant"] ?? "") }
        let loop = context.eventLoop
        cache.invalidate(scope: scope, keyPrefix: query["key"].map { $0.lowercased() }, on: loop).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let n):
                self.json(context, head, .ok, .object(["deleted": .int(Int64(n))]))
            case .failure(let error):
                self.json(context, head, .serviceUnavailable, .object(["error": .string("the cache store failed: \(error)")]))
            }
        }
    }

    func json(_ context: ChannelHandlerContext, _ head: HTTPRequestHead, _ status: HTTPResponseStatus, _ value: JSONValue, headers: HTTPHeaders = [:]) {
        var out: [UInt8] = []
        value.write(to: &out)
        out.append(0x0A)
        self.respond(context, head, status, contentType: "application/json", body: out, headers: headers)
    }

    func respond(
        _ context: ChannelHandlerContext, _ head: HTTPRequestHead, _ status: HTTPResponseStatus, contentType: String, body: [UInt8],
        headers extra: HTTPHeaders = [:]
    ) {
        var headers = extra
        headers.add(name: "content-type", value: contentType)
        headers.add(name: "content-length", value: String(body.count))
        if !head.isKeepAlive { headers.add(name: "connection", value: "close") }
        context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        let keepAlive = head.isKeepAlive
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}

extension String {
    /// `%XX` sequences decoded (nil when one is malformed); `+` is a space.
    func removingPercentEncoding() -> String? {
        var out: [UInt8] = []
        var bytes = Array(self.utf8)[...]
        while let b = bytes.first {
            bytes = bytes.dropFirst()
            if b == UInt8(ascii: "+") {
                out.append(0x20)
            } else if b == UInt8(ascii: "%") {
                guard bytes.count >= 2, let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) else { return nil }
                out.append(v)
                bytes = bytes.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
