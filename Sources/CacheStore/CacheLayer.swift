import Access
import Atomics
import FastJSON
import HTTPTransport
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import ResponseCache
import RoutingCore
import XXHash

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What a lookup found.
public struct CacheLookup: Sendable {
    public var answer: CachedAnswer?
    /// A semantic hit's cosine similarity.
    public var similarity: Double?
    /// The request's unit vector (semantic mode), kept to store the answer with.
    public var vector: [Float]?
    /// A semantic hit: the key of the earlier request whose answer it is.
    public var matched: CacheKey?

    public static let miss = CacheLookup(answer: nil, similarity: nil, vector: nil, matched: nil)
}

/// The response-cache layer before placement: looks up and stores answers in memory or in a
/// shared Redis, and asks an embeddings endpoint for the semantic cache's vectors.
///
/// Whatever fails here (Redis down, slow or full; the embeddings endpoint; a corrupt entry)
/// fails the lookup or the store only: the request goes on to the fleet, the failure is counted
/// and logged at most once per `logInterval`.
public final class CacheLayer: Sendable {
    let backend: CacheBackend
    let memory: MemoryStore?
    let redis: RedisClient?
    let redisPrefix: String
    let semantic: SemanticSettings
    let embeddings: (url: ReplicaURL, path: String)?
    /// `https://` embeddings: verified against the system store.
    let embeddingsTLS: ClientTLS?
    let http: HTTPClient
    let index: NIOLockedValueBox<SemanticIndex>
    /// Redis mode: when this router last read each gate's shared vectors.
    let synced = NIOLockedValueBox<[UInt64: NIODeadline]>([:])
    let counters = NIOLockedValueBox(CacheStats())
    let embeddingsInFlight = ManagedAtomic<Int>(0)
    let logger: Logger
    let lastLogged = NIOLockedValueBox<[String: (at: NIODeadline, suppressed: Int)]>([:])
    static let logInterval: TimeAmount = .seconds(10)
    let clock: @Sendable () -> Double

    /// - redisPassword: read from `cache.redis.password_file` with the other secrets (`AccessPolicy`).
    public init(
        settings: CacheSettings, redisPassword: String? = nil, group: any EventLoopGroup, logger: Logger, clock: @escaping @Sendable () -> Double
    ) throws {
        self.backend = settings.backend
        self.logger = logger
        self.clock = clock
        self.semantic = settings.semantic
        self.http = HTTPClient(group: group)
        self.index = NIOLockedValueBox(SemanticIndex(maxPerGate: settings.semantic.maxEntriesPerScope, maxVectors: settings.semantic.maxVectors))
        switch settings.backend {
        case .memory:
            self.memory = MemoryStore(maxBytes: settings.maxBytes)
            self.redis = nil
        case .redis:
            self.memory = nil
            self.redis = RedisClient(
                host: settings.redis.host, port: settings.redis.port, password: redisPassword, timeoutSeconds: settings.redis.timeoutSeconds,
                connections: settings.redis.connections, group: group)
        }
        self.redisPrefix = settings.redis.keyPrefix
        if let text = settings.semantic.embeddingsURL {
            switch ReplicaURL.parse(text) {
            case .success(let url): self.embeddings = (url, url.pathPrefix.isEmpty ? "/v1/embeddings" : url.pathPrefix)
            case .failure(let e): throw RedisError("cache.semantic.embeddings_url: \(e)")
            }
        } else {
            self.embeddings = nil
        }
        self.embeddingsTLS = self.embeddings?.url.tls == true ? try ClientTLS(ClientTLSSettings()) : nil
    }

    /// Unix time in seconds (entries' ages and expiry are wall-clock: Redis shares them).
    public static func wallClock() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    public func shutdown() {
        self.redis?.close()
    }

    // MARK: - Counting

    public func count(_ result: String) {
        self.counters.withLockedValue { $0.results[result, default: 0] += 1 }
    }

    public func refused(_ reason: String) {
        self.counters.withLockedValue { $0.refused[reason, default: 0] += 1 }
    }

    public func stats() -> CacheStats {
        var s = self.counters.withLockedValue { $0 }
        if let m = self.memory {
            let u = m.usage
            (s.bytes, s.entries, s.evictions) = (u.bytes, u.entries, u.evictions)
        }
        s.vectors = self.index.withLockedValue { $0.count }
        return s
    }

    /// Counts a failure and logs it, at most once per interval per kind.
    func failed(_ kind: String, _ error: any Error) {
        self.counters.withLockedValue { c in
            if kind == "redis" { c.redisErrors += 1 } else { c.embeddingErrors += 1 }
        }
        let now = NIODeadline.now()
        let suppressed: Int? = self.lastLogged.withLockedValue { logged in
            if let last = logged[kind], now - last.at < Self.logInterval {
                logged[kind]!.suppressed += 1
                return nil
            }
            let n = logged[kind]?.suppressed ?? 0
            logged[kind] = (now, 0)
            return n
        }
        if let suppressed {
            self.logger.warning(
                "response cache: \(kind) failed; requests go to the fleet",
                metadata: ["error": "\(error)", "failures_not_logged": "\(suppressed)"])
        }
    }

    // MARK: - Lookup

    func storageKey(_ key: CacheKey, _ form: AnswerForm) -> String {
        self.redis == nil ? key.storageKey(form) : self.redisPrefix + "r:" + key.storageKey(form)
    }

    /// Reads a key's answer in `form`, else in the other form converted (`FormConversion`), in
    /// one store round trip; a corrupt entry is deleted and taken as a miss.
    func fetch(_ key: CacheKey, _ form: AnswerForm, api: RequestAPI, on loop: any EventLoop) -> EventLoopFuture<CachedAnswer?> {
        let other: AnswerForm = form == .json ? .stream : .json
        let forms = FormConversion.converts(api: api, from: other, to: form) ? [form, other] : [form]
        let names = forms.map { self.storageKey(key, $0) }
        let raw: EventLoopFuture<[[UInt8]?]>
        if let memory {
            raw = loop.makeSucceededFuture(memory.get(names, now: self.clock()))
        } else if let redis {
            raw = redis.send([Array("MGET".utf8)] + names.map { Array($0.utf8) }).hop(to: loop).map { value in
                guard case .array(let items?) = value else { return [] }
                return items.map { $0.bytes }
            }.flatMapErrorThrowing { error in
                self.failed("redis", error)
                return []
            }
        } else {
            raw = loop.makeSucceededFuture([])
        }
        return raw.map { found in
            for (name, bytes) in zip(names, found) {
                guard let bytes else { continue }
                guard let answer = CachedAnswer.decode(bytes) else {
                    self.counters.withLockedValue { $0.corrupt += 1 }
                    self.delete(name)
                    continue
                }
                guard answer.expiresAt > self.clock(), let served = FormConversion.convert(answer, api: api, to: form) else { continue }
                return served
            }
            return nil
        }
    }

    func delete(_ name: String) {
        if let memory { memory.delete(name) }
        if let redis { redis.send([Array("DEL".utf8), Array(name.utf8)]).whenFailure { self.failed("redis", $0) } }
    }

    /// Exact, then (semantic mode) the nearest earlier request within the gates.
    public func lookup(_ request: CacheRequest, on loop: any EventLoop) -> EventLoopFuture<CacheLookup> {
        let form: AnswerForm = request.stream ? .stream : .json
        let exact: EventLoopFuture<CachedAnswer?> = request.lookup ? self.fetch(request.key, form, api: request.api, on: loop) : loop.makeSucceededFuture(nil)
        return exact.flatMap { found in
            if let found { return loop.makeSucceededFuture(CacheLookup(answer: found, similarity: nil, vector: nil, matched: nil)) }
            guard let query = request.semantic, self.embeddings != nil else { return loop.makeSucceededFuture(.miss) }
            return self.embed(query.text, on: loop).flatMap { vector in
                guard let vector else { return loop.makeSucceededFuture(.miss) }
                let missed = CacheLookup(answer: nil, similarity: nil, vector: vector, matched: nil)
                guard request.lookup else { return loop.makeSucceededFuture(missed) }
                return self.syncGate(query.gate, on: loop).flatMap {
                    let now = self.clock()
                    guard let near = self.index.withLockedValue({ $0.nearest(gate: query.gate, to: vector, now: now) }),
                        near.similarity >= request.threshold
                    else { return loop.makeSucceededFuture(missed) }
                    return self.fetch(near.entry.key, form, api: request.api, on: loop).map { answer in
                        guard let answer else {
                            // Its answer expired or was deleted.
                            self.index.withLockedValue { $0.remove(near.entry.key) }
                            return missed
                        }
                        return CacheLookup(answer: answer, similarity: near.similarity, vector: vector, matched: near.entry.key)
                    }
                }
            }
        }
    }

    // MARK: - Embeddings

    /// The unit vector of `text`, or nil (no endpoint, over budget, failed, slow).
    func embed(_ text: String, on loop: any EventLoop) -> EventLoopFuture<[Float]?> {
        guard let (url, path) = self.embeddings else { return loop.makeSucceededFuture(nil) }
        guard self.embeddingsInFlight.loadThenWrappingIncrement(ordering: .relaxed) < self.semantic.maxConcurrent else {
            self.embeddingsInFlight.wrappingDecrement(ordering: .relaxed)
            self.failed("embedding", RedisError("over cache.semantic.max_concurrent"))
            return loop.makeSucceededFuture(nil)
        }
        var body: [UInt8] = []
        JSONValue.object(["model": .string(self.semantic.model), "input": .string(text)]).write(to: &body)
        var request = HTTPClientRequest.post(host: url.host, port: url.port, path: path, json: body)
        request.tls = self.embeddingsTLS
        let started = NIODeadline.now()
        let timeout = self.semantic.timeoutSeconds
        let promise = loop.makePromise(of: [Float]?.self)
        let http = self.http
        promise.completeWithTask {
            defer { self.embeddingsInFlight.wrappingDecrement(ordering: .relaxed) }
            do {
                let response = try await http.execute(request, timeout: timeout, maxBody: 8 << 20)
                guard response.status == .ok else { throw RedisError("embeddings endpoint answered \(response.status.code)") }
                guard let doc = try? JSONValue.parse(response.bodyBytes), let values = doc["data"]?[0]?["embedding"]?.arrayValue else {
                    throw RedisError("embeddings answer has no data[0].embedding")
                }
                let vector = values.compactMap { $0.doubleValue.map(Float.init) }
                guard vector.count == values.count, let unit = SemanticIndex.normalized(vector) else {
                    throw RedisError("embeddings answer is not a vector of numbers")
                }
                let seconds = Double((NIODeadline.now() - started).nanoseconds) / 1e9
                self.counters.withLockedValue { $0.observeEmbedding(seconds: seconds) }
                return unit
            } catch {
                self.failed("embedding", error)
                return nil
            }
        }
        return promise.futureResult
    }

    // MARK: - Shared vectors (Redis)

    func gateKey(_ gate: UInt64) -> [UInt8] { Array((self.redisPrefix + "sem:" + gate.hex16).utf8) }

    /// Redis mode: refreshes this router's copy of a gate's vectors when it is older than `sync`.
    func syncGate(_ gate: UInt64, on loop: any EventLoop) -> EventLoopFuture<Void> {
        guard let redis else { return loop.makeSucceededVoidFuture() }
        let now = NIODeadline.now()
        let due = self.synced.withLockedValue { synced -> Bool in
            if let last = synced[gate], now - last < .nanoseconds(Int64(self.semantic.syncSeconds * 1e9)) { return false }
            if synced.count > 100_000 { synced.removeAll() }
            synced[gate] = now
            return true
        }
        guard due else { return loop.makeSucceededVoidFuture() }
        return redis.send([Array("LRANGE".utf8), self.gateKey(gate), Array("0".utf8), Array("-1".utf8)]).hop(to: loop).map { value in
            guard case .array(let items?) = value else { return }
            let entries = items.compactMap { $0.bytes.flatMap(Self.decodeVector) }
            self.index.withLockedValue { $0.replace(gate: gate, with: entries) }
        }.flatMapErrorThrowing { error in
            self.failed("redis", error)
        }
    }

    static func encodeVector(_ e: SemanticIndex.Entry) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(32 + 4 * e.vector.count)
        for v in [e.key.scope, e.key.high, e.key.low, e.expiresAt.bitPattern] { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        for f in e.vector { withUnsafeBytes(of: f.bitPattern.littleEndian) { out += $0 } }
        return out
    }

    static func decodeVector(_ bytes: [UInt8]) -> SemanticIndex.Entry? {
        guard bytes.count >= 36, (bytes.count - 32) % 4 == 0 else { return nil }
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) } }
        var vector: [Float] = []
        vector.reserveCapacity((bytes.count - 32) / 4)
        var at = 32
        while at < bytes.count {
            let bits = (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << (8 * UInt32($1)) }
            vector.append(Float(bitPattern: bits))
            at += 4
        }
        return SemanticIndex.Entry(key: CacheKey(scope: u64(0), high: u64(8), low: u64(16)), vector: vector, expiresAt: Double(bitPattern: u64(24)))
    }

    // MARK: - Storing

    /// Stores a complete answer (checked by `AnswerCheck`); what cannot be stored is counted.
    public func store(_ request: CacheRequest, form: AnswerForm, contentType: String, body: [UInt8], vector: [Float]?, maxEntryBytes: Int) {
        guard body.count <= maxEntryBytes else { return self.refused(AnswerRefusal.tooLarge.rawValue) }
        let identity: AnswerCheck.Identity
        switch AnswerCheck.inspect(api: request.api, form: form, body: body) {
        case .success(let i): identity = i
        case .failure(let why): return self.refused(why.rawValue)
        }
        let now = self.clock()
        let expires = now + request.ttlSeconds
        let answer = CachedAnswer(
            form: form, contentType: contentType, storedAt: now, expiresAt: expires, id: identity.id, created: identity.created, vector: vector ?? [],
            body: body)
        let bytes = answer.encoded()
        let name = self.storageKey(request.key, form)
        self.counters.withLockedValue { $0.stores += 1 }
        if let memory { memory.set(name, bytes, expiresAt: expires) }
        if let redis {
            let ms = String(max(1, Int(request.ttlSeconds * 1000)))
            redis.send([Array("SET".utf8), Array(name.utf8), bytes, Array("PX".utf8), Array(ms.utf8)]).whenFailure { self.failed("redis", $0) }
        }
        guard let vector, let query = request.semantic else { return }
        let entry = SemanticIndex.Entry(key: request.key, vector: vector, expiresAt: expires)
        self.index.withLockedValue { $0.insert(gate: query.gate, entry) }
        if let redis {
            let list = self.gateKey(query.gate)
            let keep = String(self.semantic.maxEntriesPerScope)
            redis.send([Array("RPUSH".utf8), list, Self.encodeVector(entry)]).whenFailure { self.failed("redis", $0) }
            redis.send([Array("LTRIM".utf8), list, Array("-\(keep)".utf8), Array("-1".utf8)]).whenFailure { self.failed("redis", $0) }
            let ms = String(max(1, Int(request.ttlSeconds * 1000)))
            redis.send([Array("PEXPIRE".utf8), list, Array(ms.utf8)]).whenFailure { self.failed("redis", $0) }
        }
    }

    // MARK: - Invalidation

    /// Deletes every entry (nil, nil), a scope's (model and tenant), or those whose key (as
    /// `x-cacheroute-cache-key` shows it) starts with `keyPrefix`. The number of answers deleted.
    public func invalidate(scope: UInt64?, keyPrefix: String?, on loop: any EventLoop) -> EventLoopFuture<Int> {
        func matches(_ key: CacheKey) -> Bool {
            if let scope, key.scope != scope { return false }
            if let keyPrefix, !key.description.hasPrefix(keyPrefix) { return false }
            return true
        }
        self.index.withLockedValue { $0.removeAll(where: matches) }
        if scope == nil, keyPrefix == nil { self.synced.withLockedValue { $0.removeAll() } }
        if let memory {
            let n = memory.deleteAll { name in
                if let scope, !name.hasPrefix(scope.hex16) { return false }
                if let keyPrefix, !name.hasPrefix(keyPrefix) { return false }
                return true
            }
            return loop.makeSucceededFuture(n)
        }
        guard let redis else { return loop.makeSucceededFuture(0) }
        var pattern = self.redisPrefix + "r:"
        if let scope { pattern += scope.hex16 + ":" }
        if let keyPrefix, scope == nil || keyPrefix.hasPrefix(scope!.hex16) {
            pattern = self.redisPrefix + "r:" + Self.globEscaped(keyPrefix)
        }
        pattern += "*"
        let all = scope == nil && keyPrefix == nil
        return self.scanDelete(redis, pattern: pattern, cursor: "0", deleted: 0, on: loop).flatMap { n in
            guard all else { return loop.makeSucceededFuture(n) }
            return self.scanDelete(redis, pattern: self.redisPrefix + "sem:*", cursor: "0", deleted: 0, on: loop).map { _ in n }
        }
    }

    static func globEscaped(_ s: String) -> String {
        var out = ""
        for c in s {
            if "*?[]\\".contains(c) { out.append("\\") }
            out.append(c)
        }
        return out
    }

    func scanDelete(_ redis: RedisClient, pattern: String, cursor: String, deleted: Int, on loop: any EventLoop) -> EventLoopFuture<Int> {
        redis.send("SCAN", cursor, "MATCH", pattern, "COUNT", "1000").hop(to: loop).flatMap { value in
            guard case .array(let parts?) = value, parts.count == 2, let next = parts[0].bytes.map({ String(decoding: $0, as: UTF8.self) }),
                case .array(let keys?) = parts[1]
            else { return loop.makeFailedFuture(RedisError("unexpected SCAN answer")) }
            let names = keys.compactMap { $0.bytes }
            let deletion: EventLoopFuture<Int> =
                names.isEmpty
                ? loop.makeSucceededFuture(0)
                : redis.send([Array("DEL".utf8)] + names).hop(to: loop).map { if case .integer(let n) = $0 { n } else { 0 } }
            return deletion.flatMap { n in
                next == "0" ? loop.makeSucceededFuture(deleted + n) : self.scanDelete(redis, pattern: pattern, cursor: next, deleted: deleted + n, on: loop)
            }
        }
    }
}
