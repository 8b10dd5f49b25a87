import FastJSON
import Foundation
import NIOCore
import NIOHTTP1
import ReplicaModel
import RoutingCore
import XXHash

/// One connection to an emulated replica: vLLM/SGLang endpoints, the admin API, faults.
final class EmulatorHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let replica: EmulatedReplica
    let maxBody = 64 << 20

    var head: HTTPRequestHead?
    var body = ByteBuffer()
    var tooLarge = false
    /// The generation in progress on this connection.
    var active: Generation?
    var keepAlive = true
    /// The API of the request being answered (its errors take that API's shape).
    var api: RequestAPI?

    /// A generation in progress (a class: token events update it in place, no copies).
    final class Generation {
        var id: Int
        var number: UInt64
        var input: EngineInput
        var output: [UInt8]
        var created: Int
        var requestID: String
        /// Responses: the id of the output message.
        var itemID = ""
        var cachedTokens = 0
        /// The events before the first token went out.
        var opened = false
        var sentTokens = 0
        var headerSent = false
        var chunks = 0
        /// Stop after this many chunks (die-mid-stream and stall-mid-stream faults).
        var stopAfter: Int?
        /// Whether stopping also closes the connection (die-mid-stream) or leaves it open (stall).
        var closeWhenStopped = true

        init(id: Int, number: UInt64, input: EngineInput, output: [UInt8], created: Int, requestID: String) {
            self.id = id
            self.number = number
            self.input = input
            self.output = output
            self.created = created
            self.requestID = requestID
        }
    }

    init(replica: EmulatedReplica) {
        self.replica = replica
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let h):
            self.head = h
            self.body.clear()
            self.tooLarge = false
            self.keepAlive = h.isKeepAlive
        case .body(var chunk):
            if self.body.readableBytes + chunk.readableBytes > self.maxBody {
                self.tooLarge = true
            } else {
                self.body.writeBuffer(&chunk)
            }
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            self.api = nil
            if self.tooLarge {
                self.error(context, .payloadTooLarge, "request body too large")
                return
            }
            self.route(context, head)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let g = self.active {
            self.replica.cancel(id: g.id)
            self.active = nil
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: - Routing

    func route(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        var path = Substring(head.uri)
        if let q = path.firstIndex(of: "?") { path = path[..<q] }
        let engine = self.replica.settings.engine
        switch (head.method, path) {
        case (.GET, "/health"), (.GET, "/ping"):
            _ = self.replica.begin(.health, method: "GET")
            self.health(context)
        case (.GET, "/health_generate"):
            self.health(context)
        case (.GET, "/v1/models"):
            self.json(context, .ok, self.models())
        case (.GET, "/metrics"):
            _ = self.replica.begin(.metrics, method: "GET")
            self.text(context, .ok, self.replica.metricsText(), contentType: "text/plain; version=0.0.4; charset=utf-8")
        case (.GET, "/version"):
            self.json(context, .ok, .object(["version": .string("0.32.0-cacheroute-emulator")]))
        case (.GET, "/load"):
            let load = self.replica.load()
            self.json(context, .ok, .object(["server_load": .int(Int64(load.waiting + load.running))]))
        case (.GET, "/v1/loads"), (.GET, "/loads"), (.GET, "/get_loads"):
            self.json(context, .ok, self.loads())
        case (.GET, "/get_load"):
            let load = self.replica.load()
            self.json(context, .ok, .array([.object(["dp_rank": .int(0), "num_reqs": .int(Int64(load.waiting + load.running)), "num_waiting_reqs": .int(Int64(load.waiting)), "num_tokens": .int(0)])]))
        case (.GET, "/server_info"), (.GET, "/get_server_info"):
            self.json(context, .ok, self.serverInfo())
        case (.GET, "/model_info"), (.GET, "/get_model_info"):
            self.json(context, .ok, self.modelInfo())
        case (.POST, "/v1/chat/completions"):
            self.generate(context, .chat, head)
        case (.POST, "/v1/completions"):
            self.generate(context, .completions, head)
        case (.POST, "/generate") where engine == .sglang:
            self.generate(context, .generate, head)
        case (.POST, "/v1/responses") where engine == .vllm:
            self.generate(context, .responses, head)
        case (.POST, "/v1/messages") where engine == .vllm:
            self.generate(context, .messages, head)
        case (.POST, "/v1/messages/count_tokens") where engine == .vllm:
            self.countTokens(context)
        case (_, _) where engine == .vllm && path.hasPrefix("/v1/responses/"):
            self.storedResponse(context, head.method, path.dropFirst("/v1/responses/".count))
        case (.POST, "/v1/chat/completions/render"):
            self.render(context, .chat)
        case (.POST, "/v1/completions/render"):
            self.render(context, .completions)
        case (.POST, "/tokenize"):
            _ = self.replica.begin(.tokenize, method: "POST")
            self.tokenize(context)
        case (.POST, "/reset_prefix_cache"), (.POST, "/flush_cache"):
            self.replica.resetCache()
            self.text(context, .ok, "", contentType: "text/plain")
        case (.GET, "/admin/faults"):
            self.json(context, .ok, self.replica.faults.json)
        case (.POST, "/admin/faults"), (.PUT, "/admin/faults"):
            self.updateFaults(context)
        case (.DELETE, "/admin/faults"):
            self.replica.setFaults(FaultPlan())
            self.json(context, .ok, FaultPlan().json)
        case (.GET, "/admin/stats"):
            self.json(context, .ok, self.statsJSON())
        default:
            self.error(context, .notFound, "no route for \(head.method) \(path)", type: "NotFoundError")
        }
    }

    // MARK: - Generation

    func generate(_ context: ChannelHandlerContext, _ api: RequestAPI, _ head: HTTPRequestHead) {
        let name: HTTPHandlerName
        switch api {
        case .chat: name = .chat
        case .completions: name = .completions
        case .generate: name = .generate
        case .responses: name = .responses
        case .messages: name = .messages
        }
        let (number, faults) = self.replica.begin(name, method: "POST")
        self.api = api
        let faulted = faults.applies(to: number)
        if faulted {
            self.replica.count { $0.faulted += 1 }
            switch faults.mode {
            case .error500:
                self.error(context, .internalServerError, "emulated internal error", type: "InternalServerError")
                return
            case .error503:
                self.error(context, .serviceUnavailable, "emulated overload", type: "ServiceUnavailableError")
                return
            case .hang:
                return
            case .close:
                context.close(promise: nil)
                return
            case .dieMidStream, .stallMidStream, .none:
                break
            }
        }
        let defaultMaxTokens = self.replica.settings.defaultMaxTokens
        let parsed = self.body.withUnsafeReadableBytes { EngineInput.parse(api: api, raw: $0, defaultMaxTokens: defaultMaxTokens) }
        var input: EngineInput
        switch parsed {
        case .success(let value):
            input = value
        case .failure(let error):
            self.replica.count { $0.errors += 1 }
            self.error(context, .badRequest, error.description)
            return
        }
        if api != .generate, let model = input.model, model != self.replica.settings.model {
            self.replica.count { $0.errors += 1 }
            self.error(context, .notFound, "The model `\(model)` does not exist.", type: "NotFoundError", param: "model")
            return
        }
        if api == .responses {
            // A continuation starts from the stored conversation, which only this replica has.
            var previous: [EngineInput.ChatMessage]?
            if let id = input.previousResponseID {
                let found = self.replica.storedResponse(id)
                guard let found else {
                    self.replica.count { $0.errors += 1 }
                    self.error(context, .notFound, "Response with id '\(id)' not found.", type: "invalid_request_error", param: "response_id")
                    return
                }
                previous = found.messages + [EngineInput.ChatMessage(role: "assistant", content: found.output)]
            }
            input.render(previous: previous)
        }
        if input.promptTokens + input.maxTokens > self.replica.settings.maxModelLen {
            self.replica.count { $0.errors += 1 }
            self.error(
                context,
                .badRequest,
                "This model's maximum context length is \(self.replica.settings.maxModelLen) tokens. However, you requested "
                    + "\(input.promptTokens + input.maxTokens) tokens (\(input.promptTokens) in the messages, \(input.maxTokens) in the completion)."
            )
            return
        }
        // As vLLM: "chatcmpl-" / "cmpl-" + the X-Request-Id header, else the body's request_id,
        // else a random id (SGLang's /generate: its `rid` as given).
        // Responses: the body's `request_id` is the response's id (else `resp_` and a random id).
        let prefix = api == .chat || api == .messages ? "chatcmpl-" : api == .completions ? "cmpl-" : api == .responses ? "resp_" : ""
        let header = api == .generate || api == .responses ? nil : head.headers.first(name: "x-request-id")
        let random = SplitMix64.mix(number ^ self.replica.idSalt).hex16
        let generation = Generation(
            id: Int(truncatingIfNeeded: number),
            number: number,
            input: input,
            output: OutputText.bytes(seed: number, tokens: input.maxTokens),
            created: Int(Date().timeIntervalSince1970),
            requestID: input.bodyRequestID ?? (prefix + (header ?? input.requestID ?? random))
        )
        generation.itemID = "msg_" + random
        if faulted, faults.mode == .dieMidStream || faults.mode == .stallMidStream {
            generation.stopAfter = faults.afterChunks
            generation.closeWhenStopped = faults.mode == .dieMidStream
        }
        self.active = generation
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        let sink: EngineSink = { event in
            eventLoop.execute {
                let (handler, context) = loopBound.value
                handler.engineEvent(context, event)
            }
        }
        if let result = self.replica.submit(input, id: generation.id, output: generation.output, sink: sink) {
            // Instant mode: the whole answer now.
            self.engineEvent(context, EngineEvent(id: generation.id, kind: .firstToken(cachedTokens: result.cachedTokens), time: 0))
            if input.maxTokens > 1 {
                self.engineEvent(context, EngineEvent(id: generation.id, kind: .token(index: input.maxTokens), time: 0))
            }
            self.engineEvent(context, EngineEvent(id: generation.id, kind: .finished, time: 0))
        }
    }

    func engineEvent(_ context: ChannelHandlerContext, _ event: EngineEvent) {
        guard let g = self.active, g.id == event.id else { return }
        switch event.kind {
        case .firstToken(let cached):
            g.cachedTokens = cached
            if g.input.stream {
                self.startStream(context)
                self.sendTokens(context, g, upTo: 1)
            }
        case .token(let index):
            if g.input.stream { self.sendTokens(context, g, upTo: index) }
        case .finished:
            self.active = nil
            if g.input.api == .responses, g.input.store, self.replica.settings.storeResponses {
                var json: [UInt8] = []
                AgentRenderer.response(g, model: self.replica.settings.model, finished: true, details: self.replica.settings.promptTokensDetails, into: &json)
                let entry = ResponseStore.Entry(messages: g.input.chatMessages ?? [], output: g.output, json: json)
                self.replica.store(response: g.requestID, entry)
            }
            if g.input.stream {
                self.sendTokens(context, g, upTo: g.input.maxTokens)
                self.endStream(context, g)
            } else {
                let body = ResponseRenderer.complete(g, model: self.replica.settings.model, details: self.replica.settings.promptTokensDetails)
                self.respond(context, .ok, contentType: "application/json", body: context.channel.allocator.buffer(bytes: body))
            }
            return
        case .rejected:
            self.active = nil
            self.error(context, .badRequest, "the prompt does not fit in the KV cache")
            return
        }
        if let die = g.stopAfter, g.chunks >= die {
            self.active = nil
            self.replica.cancel(id: g.id)
            if g.closeWhenStopped { context.close(promise: nil) }
        }
    }

    func startStream(_ context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/event-stream; charset=utf-8")
        headers.add(name: "cache-control", value: "no-cache")
        headers.add(name: "transfer-encoding", value: "chunked")
        if !self.keepAlive { headers.add(name: "connection", value: "close") }
        context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
    }

    func sendTokens(_ context: ChannelHandlerContext, _ g: Generation, upTo index: Int) {
        let target = min(index, g.input.maxTokens)
        guard target > g.sentTokens else { return }
        var buffer = context.channel.allocator.buffer(capacity: 256 * (target - g.sentTokens))
        while g.sentTokens < target {
            if !g.opened {
                // The events that open the answer (chat's assistant role, Responses and Messages' starts).
                if let die = g.stopAfter, g.chunks >= die { break }
                g.opened = true
                let s = self.replica.settings
                if ResponseRenderer.opening(g, model: s.model, details: s.promptTokensDetails, into: &buffer) { g.chunks += 1 }
            }
            if let die = g.stopAfter, g.chunks >= die { break }
            ResponseRenderer.streamChunk(g, tokenIndex: g.sentTokens, model: self.replica.settings.model, into: &buffer)
            g.sentTokens += 1
            g.chunks += 1
        }
        context.writeAndFlush(Self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    }

    func endStream(_ context: ChannelHandlerContext, _ g: Generation) {
        var buffer = context.channel.allocator.buffer(capacity: 512)
        ResponseRenderer.streamEnd(g, model: self.replica.settings.model, details: self.replica.settings.promptTokensDetails, into: &buffer)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        self.finishResponse(context)
    }

    // MARK: - Other endpoints

    func health(_ context: ChannelHandlerContext) {
        let faults = self.replica.faults
        switch faults.health {
        case .ok: self.text(context, .ok, "", contentType: "text/plain")
        case .fail: self.text(context, .serviceUnavailable, "unhealthy (emulated)", contentType: "text/plain")
        case .flap:
            if self.replica.nextHealthFlapFails() {
                self.text(context, .serviceUnavailable, "unhealthy (emulated, flapping)", contentType: "text/plain")
            } else {
                self.text(context, .ok, "", contentType: "text/plain")
            }
        case .hang: break
        case .slow:
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: .nanoseconds(Int64(faults.healthDelay * 1e9))) {
                let (handler, context) = loopBound.value
                handler.text(context, .ok, "", contentType: "text/plain")
            }
        }
    }

    /// `GET /v1/responses/{id}` and `POST /v1/responses/{id}/cancel`, as vLLM answers them.
    func storedResponse(_ context: ChannelHandlerContext, _ method: HTTPMethod, _ rest: Substring) {
        var id = rest
        let cancel = id.hasSuffix("/cancel")
        if cancel { id = id.dropLast("/cancel".count) }
        guard !id.isEmpty, !id.contains("/"), method == (cancel ? .POST : .GET) else {
            // FastAPI: the path exists for other methods only.
            self.json(context, id.contains("/") || id.isEmpty ? .notFound : .methodNotAllowed, .object(["detail": .string(id.contains("/") || id.isEmpty ? "Not Found" : "Method Not Allowed")]))
            return
        }
        _ = self.replica.begin(.responses, method: method.rawValue)
        let found = self.replica.storedResponse(String(id))
        guard let found else {
            self.error(context, .notFound, "Response with id '\(id)' not found.", type: "invalid_request_error", param: "response_id")
            return
        }
        if cancel {
            // Only background responses can be cancelled; every stored one here is finished.
            self.error(context, .badRequest, "Cannot cancel a synchronous response.", type: "invalid_request_error", param: "response_id")
            return
        }
        self.json(context, .ok, bytes: found.json)
    }

    /// `POST /v1/messages/count_tokens`: the prompt's tokens as the Messages request renders.
    func countTokens(_ context: ChannelHandlerContext) {
        _ = self.replica.begin(.countTokens, method: "POST")
        self.api = .messages
        var body = Array(self.body.readableBytesView)
        // count_tokens needs no max_tokens: give the parser one.
        if var value = try? JSONValue.parse(body), case .object(var members) = value, !members.contains(where: { $0.key == "max_tokens" }) {
            members.append(.init("max_tokens", .int(1)))
            value = .object(members)
            body = []
            value.write(to: &body)
        }
        do {
            let input = try EngineInput.parse(api: .messages, body: body)
            let n = Int64(input.promptTokens)
            self.json(context, .ok, .object(["input_tokens": .int(n), "context_management": .object(["original_input_tokens": .int(n)])]))
        } catch {
            self.error(context, .badRequest, error.description, type: "invalid_request_error")
        }
    }

    func render(_ context: ChannelHandlerContext, _ api: RequestAPI) {
        do {
            let input = try EngineInput.parse(api: api, body: Array(self.body.readableBytesView))
            let ids = OutputText.tokenIDs(input)
            self.json(context, .ok, .object([
                "request_id": .string("render-\(self.replica.nextRequestNumber())"),
                "token_ids": .array(ids.map { .int(Int64($0)) }),
                "features": .null,
            ]))
        } catch {
            self.error(context, .badRequest, error.description)
        }
    }

    func tokenize(_ context: ChannelHandlerContext) {
        let bytes = Array(self.body.readableBytesView)
        let api = RequestAPI.detect(body: bytes) ?? .completions
        do {
            let input = try EngineInput.parse(api: api, body: bytes)
            let ids = OutputText.tokenIDs(input)
            self.json(context, .ok, .object([
                "count": .int(Int64(ids.count)), "max_model_len": .int(Int64(self.replica.settings.maxModelLen)),
                "tokens": .array(ids.map { .int(Int64($0)) }), "token_strs": .null,
            ]))
        } catch {
            self.error(context, .badRequest, error.description)
        }
    }

    func updateFaults(_ context: ChannelHandlerContext) {
        do {
            let value = try JSONValue.parse(Array(self.body.readableBytesView))
            var plan = self.replica.faults
            try plan.update(from: value)
            self.replica.setFaults(plan)
            self.json(context, .ok, plan.json)
        } catch let error as EngineInputError {
            self.error(context, .badRequest, error.description)
        } catch {
            self.error(context, .badRequest, "invalid JSON: \(error)")
        }
    }

    func models() -> JSONValue {
        let m = self.replica.settings.model
        return .object([
            "object": .string("list"),
            "data": .array([
                .object([
                    "id": .string(m), "object": .string("model"), "created": .int(Int64(self.replica.createdUnix)),
                    "owned_by": .string(self.replica.settings.engine == .vllm ? "vllm" : "sglang"), "root": .string(m),
                    "parent": .null, "max_model_len": .int(Int64(self.replica.settings.maxModelLen)),
                ])
            ]),
        ])
    }

    func loads() -> JSONValue {
        let load = self.replica.load()
        return .object([
            "loads": .array([
                .object([
                    "dp_rank": .int(0), "worker_generation": .string("cacheroute-emulator"),
                    "num_running_reqs": .int(Int64(load.running)), "num_waiting_reqs": .int(Int64(load.waiting)),
                    "num_reqs": .int(Int64(load.running + load.waiting)), "num_tokens": .int(0), "token_usage": .double(load.kvUsage),
                ])
            ])
        ])
    }

    func serverInfo() -> JSONValue {
        let s = self.replica.settings
        let load = self.replica.load()
        return .object([
            "model_path": .string(s.model), "served_model_name": .string(s.model), "tokenizer_path": .string(s.model),
            "dp_size": .int(1), "tp_size": .int(1), "disaggregation_mode": .string("null"), "version": .string("0.5.0-cacheroute-emulator"),
            "max_total_num_tokens": .int(Int64(s.capacityTokens)), "page_size": .int(Int64(s.blockTokens)),
            "context_length": .int(Int64(s.maxModelLen)), "chunked_prefill_size": .int(Int64(s.timing.maxBatchedTokens)),
            "max_running_requests": .int(Int64(s.timing.maxRunning)),
            "internal_states": .array([.object(["load": .int(Int64(load.running + load.waiting))])]),
            "name": .string(s.name),
        ])
    }

    func modelInfo() -> JSONValue {
        let m = self.replica.settings.model
        return .object([
            "model_path": .string(m), "tokenizer_path": .string(m), "is_generation": .bool(true),
            "preferred_sampling_params": .null, "weight_version": .string("default"), "has_image_understanding": .bool(false),
            "has_audio_understanding": .bool(false), "model_type": .string("llama"), "architectures": .array([.string("LlamaForCausalLM")]),
        ])
    }

    func statsJSON() -> JSONValue {
        let s = self.replica.stats
        let cache = self.replica.cacheCounters
        let load = self.replica.load()
        return .object([
            "name": .string(self.replica.settings.name), "requests": .int(Int64(s.requests)), "completed": .int(Int64(s.completed)),
            "cancelled": .int(Int64(s.cancelled)), "errors": .int(Int64(s.errors)), "faulted": .int(Int64(s.faulted)),
            "active": .int(Int64(load.active)), "waiting": .int(Int64(load.waiting)), "running": .int(Int64(load.running)),
            "prompt_tokens": .int(Int64(s.promptTokens)), "cached_tokens": .int(Int64(s.cachedTokens)),
            "prefix_cache_queries": .int(Int64(cache.queried)), "prefix_cache_hits": .int(Int64(cache.hits)),
        ])
    }

    // MARK: - Writing

    func json(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ value: JSONValue) {
        var bytes: [UInt8] = []
        value.write(to: &bytes)
        self.json(context, status, bytes: bytes)
    }

    func json(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, bytes: [UInt8]) {
        self.respond(context, status, contentType: "application/json", body: context.channel.allocator.buffer(bytes: bytes))
    }

    func text(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ text: String, contentType: String) {
        self.respond(context, status, contentType: contentType, body: context.channel.allocator.buffer(string: text))
    }

    /// vLLM 0.32's error body: `{"error": {"message", "type", "param", "code"}}`, Anthropic's
    /// `{"type": "error", "error": {"type", "message"}}` on `/v1/messages`.
    func error(
        _ context: ChannelHandlerContext,
        _ status: HTTPResponseStatus,
        _ message: String,
        type: String = "BadRequestError",
        param: String? = nil
    ) {
        self.active = nil
        self.json(context, status, AgentRenderer.error(api: self.api, status: Int(status.code), message: message, type: type, param: param))
    }

    func respond(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, contentType: String, body: ByteBuffer) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: contentType)
        headers.add(name: "content-length", value: String(body.readableBytes))
        if !self.keepAlive { headers.add(name: "connection", value: "close") }
        context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        self.finishResponse(context)
    }

    func finishResponse(_ context: ChannelHandlerContext) {
        let keepAlive = self.keepAlive
        let channel = context.channel
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}
