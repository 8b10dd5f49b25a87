import CacheStore
import FleetState
import NIOCore
import ResponseCache
import RoutingCore

/// The response-cache step of a request, between limits and placement: look up, answer a hit
/// like a replica would, or let the request go on and capture its answer to store.
extension ClientConnection {
    /// Decides whether the cache applies, strips the body's `cache` member, and looks up; then
    /// serves the hit or calls `proceed` (placement).
    func consultCache(
        _ cache: CacheLayer, _ x: Exchange, api: RequestAPI, tenant: String, header: (String) -> String?, then proceed: @escaping () -> Void
    ) {
        let settings = self.settings.cache
        let analysis = x.body.withUnsafeReadableBytes { body in
            CachePolicy.analyze(api: api, path: api.path, body: body, tenant: tenant, header: header, settings: settings)
        }
        if let strip = analysis.strip {
            // Replicas never see the cache's own member.
            var body = ByteBufferAllocator().buffer(capacity: x.body.readableBytes)
            let view = x.body.readableBytesView
            body.writeBytes(view[view.startIndex..<(view.startIndex + strip.lowerBound)])
            body.writeBytes(view[(view.startIndex + strip.upperBound)...])
            let original = x.body
            x.body = body
            original.scrubReadable()
        }
        switch analysis.decision {
        case .off:
            proceed()
        case .bypass(let reason):
            x.cacheResult = "bypass"
            x.cacheFields = Array("x-cacheroute-cache: bypass\r\nx-cacheroute-cache-reason: \(Self.fieldValue(reason))\r\n".utf8)
            proceed()
        case .use(let request):
            x.cache = request
            guard let loop = self.context?.eventLoop else { return }
            cache.lookup(request, on: loop).assumeIsolated().whenComplete { result in
                // The client may have left meanwhile.
                guard self.exchange === x else { return }
                let found = (try? result.get()) ?? .miss
                if let answer = found.answer {
                    self.serveHit(x, answer, request: request, similarity: found.similarity, matched: found.matched)
                    return
                }
                x.cacheVector = found.vector
                x.cacheResult = "miss"
                var fields = "x-cacheroute-cache: miss\r\nx-cacheroute-cache-key: \(request.key)\r\n"
                if let reason = request.noStoreReason { fields += "x-cacheroute-cache-reason: \(Self.fieldValue(reason))\r\n" }
                x.cacheFields = Array(fields.utf8)
                proceed()
            }
        }
    }

    /// A header value from free text: printable ASCII only.
    static func fieldValue(_ text: String) -> String {
        String(text.unicodeScalars.filter { $0.value >= 0x20 && $0.value < 0x7F }.map(Character.init))
    }

    /// Answers with a stored answer, fresh ids and time, as the router's own response.
    /// A semantic hit names the entry it served (`matched`) as its key: the one to delete.
    func serveHit(_ x: Exchange, _ answer: CachedAnswer, request: CacheRequest, similarity: Double?, matched: CacheKey?) {
        let now = CacheLayer.wallClock()
        let body = Replay.body(answer, api: request.api, id: Replay.freshID(like: answer.id), now: Int(now))
        let result = similarity == nil ? "hit-exact" : "hit-semantic"
        x.cacheResult = result
        var fields = "x-cacheroute-cache: \(result)\r\nage: \(Int(max(0, now - answer.storedAt)))\r\nx-cacheroute-cache-key: \(matched ?? request.key)\r\n"
        if let similarity { fields += "x-cacheroute-cache-similarity: \((similarity * 10000).rounded() / 10000)\r\n" }
        x.cacheFields = Array(fields.utf8)
        x.localType = answer.contentType
        x.summary.streamed = answer.form == .stream
        if answer.form == .stream, self.settings.cache.streamPacingSeconds > 0 { x.paced = Replay.events(body) }
        x.localAnswer = (200, body, nil)
        self.run(self.machine.answerLocally())
    }

    /// Starts capturing the answer when it can be stored (a 200 to a request that stores).
    func startCapture(_ x: Exchange, status: Int, contentType: String?) {
        guard let request = x.cache, request.store, status == 200 else {
            x.capture = nil
            return
        }
        x.capture = []
        x.captureType = contentType ?? "application/json"
    }

    func capture(_ x: Exchange, _ piece: ByteBuffer) {
        guard x.capture != nil else { return }
        if x.capture!.count + piece.readableBytes > self.settings.cache.maxEntryBytes {
            x.capture = nil
            self.cache?.refused(AnswerRefusal.tooLarge.rawValue)
            return
        }
        piece.withUnsafeReadableBytes { x.capture!.append(contentsOf: $0) }
    }

    /// The answer went out whole: store it (after the client's bytes are flushed).
    func storeCaptured(_ x: Exchange) {
        guard let cache = self.cache, let request = x.cache, let bytes = x.capture else { return }
        x.capture = nil
        let form: AnswerForm = x.plan?.isSSE == true ? .stream : .json
        let type = x.captureType
        let vector = x.cacheVector
        let limit = self.settings.cache.maxEntryBytes
        self.afterFlush { cache.store(request, form: form, contentType: type, body: bytes, vector: vector, maxEntryBytes: limit) }
    }

    /// Writes a paced replay's events one per `stream_pacing`, then ends the exchange.
    func pace(_ context: ChannelHandlerContext, _ x: Exchange, _ events: ArraySlice<ArraySlice<UInt8>>, close: Bool) {
        guard let next = events.first else {
            self.replaying = false
            self.finishExchange(context, x, last: nil, close: close)
            return
        }
        let delay = TimeAmount.nanoseconds(Int64(self.settings.cache.streamPacingSeconds * 1e9))
        context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
            guard let context = self.context, self.exchange === x else {
                self.replaying = false
                return
            }
            context.writeAndFlush(Self.wrapOutboundOut(context.channel.allocator.buffer(bytes: next)), promise: nil)
            self.pace(context, x, events.dropFirst(), close: close)
        }
    }
}
