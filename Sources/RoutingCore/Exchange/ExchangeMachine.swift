/// The life of the requests on one client connection, as a pure state machine (in the manner of
/// AsyncHTTPClient's `HTTPConnectionPool.StateMachine`): the proxy's shell feeds it what
/// happened (a head parsed, a body done, a replica's head, a failure, a deadline, the client
/// leaving) and runs the action it returns. Every decision about an exchange is made here: when
/// to route, whether a failure goes to another replica or to the client, how the answer is framed,
/// how a broken stream ends, when the connection closes. The shell only does the I/O.
///
/// One exchange at a time (HTTP/1.1); pipelined requests wait for the current one to end.
public struct ExchangeMachine: Sendable {
    /// What the machine needs of the configuration.
    public struct Settings: Sendable, Equatable {
        public var retry: RetrySettings
        public var maxBodyBytes: Int

        public init(retry: RetrySettings = RetrySettings(), maxBodyBytes: Int = 32 << 20) {
            self.retry = retry
            self.maxBodyBytes = maxBodyBytes
        }
    }

    /// Where the connection is.
    public enum Phase: Sendable, Equatable {
        /// Waiting for a request head.
        case idle
        /// Head in, reading the body.
        case receiving
        /// The request is being answered (by a replica or the router).
        case working
        case closed
    }

    /// Where the current exchange's attempt on a replica is.
    public enum AttemptState: Sendable, Equatable {
        /// No attempt: not placed yet, answered locally, or ended.
        case none
        /// Waiting in the router's queue for a replica with room.
        case queued
        /// Waiting for a connection to the replica.
        case connecting
        /// The request went out on a connection (`reused`: a pooled one).
        case awaitingHead(reused: Bool)
        /// The replica's head is forwarded; its body streams to the client.
        case streaming
        /// A retry was asked for (after this outcome); `granted` or `refused` decides.
        case retrying(AttemptOutcome)
    }

    /// How an answer reaches the client, decided when the replica's head arrives.
    public struct ResponsePlan: Sendable, Equatable {
        public var status: Int
        public var framing: ClientFraming
        /// A Server-Sent Events stream: only whole events are passed on, so a failure can end it
        /// with an error event.
        public var isSSE: Bool
        /// The connection closes after this answer.
        public var close: Bool

        public init(status: Int, framing: ClientFraming, isSSE: Bool, close: Bool) {
            self.status = status
            self.framing = framing
            self.isSSE = isSSE
            self.close = close
        }
    }

    /// The errors the router answers with itself.
    public enum LocalError: Sendable, Equatable {
        case bodyTooLarge
        case malformed(status: Int)
        case requestTimeout
        case noReplica
        /// The replica failed (connect, reset, broken stream) and no retry was possible.
        case badGateway
        /// The replica did not answer in time.
        case gatewayTimeout
        /// The router's queue refused the request (full, or it waited too long).
        case overloaded(QueueRejection)
    }

    /// What the shell does next.
    public enum Action: Sendable, Equatable {
        case none
        /// Write `100 Continue`, then read the body.
        case sendContinue
        /// Key the request and place it; answer with `placed` or `noReplica` (or answer locally).
        case route
        /// Get a connection to the placement's replica (`fresh`: not from the pool); answer with
        /// `connected` or `connectFailed`.
        case connect(fresh: Bool)
        /// Write the request on the connection.
        case sendRequest
        /// Ask for another replica. Granted: end the current attempt with the outcome (drop its
        /// connection), adopt the new placement, then `retryGranted`. Refused: `retryRefused`.
        case retry(AttemptOutcome)
        /// The pooled connection was stale: end the attempt (`staleConnection`), place the same
        /// request on the same replica again, then `connect(fresh: true)` follows.
        case reconnect
        /// Forward the replica's head (held until the first body bytes) per the plan.
        case forwardHead(ResponsePlan)
        /// The replica's answer is complete: give the connection back, end the attempt with
        /// `outcome`, write the end of the body, then close or wait for the next request.
        case finishResponse(outcome: AttemptOutcome, close: Bool)
        /// Answer with the router's own error (or a local answer when `error` is nil). End the
        /// attempt first when `endAttempt` is set (and drop its connection).
        case respond(LocalError?, close: Bool, endAttempt: AttemptOutcome?)
        /// An answer already started cannot become an error: end it with an SSE error event when
        /// `sseEvent` (after the last whole event, closing the chunked body when chunked), else
        /// cut it by closing. Ends the attempt first when `endAttempt` is set.
        case endMidStream(LocalError, sseEvent: Bool, close: Bool, endAttempt: AttemptOutcome?)
        /// The client left: drop the replica's connection, end the attempt when `endAttempt`,
        /// report the request.
        case abandon(endAttempt: AttemptOutcome?)
        /// Close a connection with nothing in progress.
        case close
    }

    public var settings: Settings
    public private(set) var phase = Phase.idle
    public private(set) var attempt = AttemptState.none
    /// Attempts of the current exchange on replicas (a stale-connection retry is not one).
    public private(set) var attempts = 0
    /// The plan of the answer once the replica's head went out (nil before).
    public private(set) var response: ResponsePlan?
    /// Graceful shutdown: close after the current answer.
    public private(set) var quiescing = false
    var staleRetried = false
    var keepAlive = true
    var requestMinorVersion = 1
    var requestIsHead = false
    /// The replica's head, held while a retry of its 5xx is asked for.
    var pendingHead: ResponsePlan?

    public init(settings: Settings) {
        self.settings = settings
    }

    /// Whether an answer has started reaching the client (nothing can be retried after that).
    public var responseStarted: Bool { self.response != nil }

    // MARK: - The request

    /// What the shell knows of a request once its head is parsed.
    public struct RequestStart: Sendable, Equatable {
        public var contentLength: Int?
        /// No body to read (or already complete).
        public var bodyComplete: Bool
        public var keepAlive: Bool
        public var minorVersion: Int
        public var isHead: Bool
        /// `Expect: 100-continue` with no body bytes received yet.
        public var expectsContinue: Bool

        public init(contentLength: Int?, bodyComplete: Bool, keepAlive: Bool, minorVersion: Int = 1, isHead: Bool = false, expectsContinue: Bool = false) {
            self.contentLength = contentLength
            self.bodyComplete = bodyComplete
            self.keepAlive = keepAlive
            self.minorVersion = minorVersion
            self.isHead = isHead
            self.expectsContinue = expectsContinue
        }
    }

    /// A request head was parsed.
    public mutating func requestHead(_ start: RequestStart) -> Action {
        guard self.phase == .idle else { return .none }
        self.phase = .receiving
        self.attempt = .none
        self.attempts = 0
        self.response = nil
        self.staleRetried = false
        self.pendingHead = nil
        self.keepAlive = start.keepAlive
        self.requestMinorVersion = start.minorVersion
        self.requestIsHead = start.isHead
        if let length = start.contentLength, length > self.settings.maxBodyBytes {
            return self.respond(.bodyTooLarge, close: true)
        }
        if start.bodyComplete {
            self.phase = .working
            return .route
        }
        return start.expectsContinue ? .sendContinue : .none
    }

    /// Body bytes arrived (`total` so far); `complete` when the body has ended.
    public mutating func bodyReceived(total: Int, complete: Bool) -> Action {
        guard self.phase == .receiving else { return .none }
        if total > self.settings.maxBodyBytes { return self.respond(.bodyTooLarge, close: true) }
        guard complete else { return .none }
        self.phase = .working
        return .route
    }

    /// The head or body could not be parsed: framing is lost, so the connection closes.
    public mutating func malformed(status: Int) -> Action {
        guard self.phase == .idle || self.phase == .receiving else { return .none }
        self.phase = .working
        return self.respond(.malformed(status: status), close: true)
    }

    /// The client's deadline passed (for its head, its body, or an idle keep-alive connection).
    /// `buffered`: bytes of a next request have arrived.
    public mutating func clientDeadline(buffered: Bool) -> Action {
        switch self.phase {
        case .idle where !buffered:
            self.phase = .closed
            return .close
        case .idle, .receiving:
            self.phase = .working
            return self.respond(.requestTimeout, close: true)
        case .working, .closed:
            return .none
        }
    }

    // MARK: - Placement and the attempt

    /// The request was placed on a replica (first attempt or after a granted retry).
    public mutating func placed() -> Action {
        guard self.phase == .working, self.response == nil else { return .none }
        self.attempts += 1
        self.attempt = .connecting
        return .connect(fresh: false)
    }

    /// The request waits in the router's queue (no replica has room).
    public mutating func queued() -> Action {
        guard self.phase == .working, self.attempt == .none, self.response == nil else { return .none }
        self.attempt = .queued
        return .none
    }

    /// A replica took the queued request.
    public mutating func dispatched() -> Action {
        guard self.phase == .working, self.attempt == .queued else { return .none }
        self.attempt = .none
        return self.placed()
    }

    /// The queue refused the request, at once or after its deadline.
    public mutating func queueRefused(_ reason: QueueRejection) -> Action {
        guard self.phase == .working, self.attempt == .queued || self.attempt == .none, self.response == nil else { return .none }
        return self.respond(.overloaded(reason), close: false)
    }

    /// No replica can take the request.
    public mutating func noReplica() -> Action {
        guard self.phase == .working else { return .none }
        return self.respond(.noReplica, close: false)
    }

    /// The router answers the request itself (a local route, or the merged model list).
    public mutating func answerLocally() -> Action {
        guard self.phase == .working else { return .none }
        return self.respond(nil, close: false)
    }

    /// A connection to the replica is ready (`reused`: from the pool).
    public mutating func connected(reused: Bool) -> Action {
        guard self.phase == .working, self.attempt == .connecting else { return .none }
        self.attempt = .awaitingHead(reused: reused)
        return .sendRequest
    }

    /// No connection to the replica could be made.
    public mutating func connectFailed() -> Action {
        guard self.phase == .working, self.attempt == .connecting else { return .none }
        return self.failedBeforeHead(.connectFailure)
    }

    /// The replica's response head arrived.
    ///   - chunked / contentLength: its body framing.
    ///   - isSSE: `Content-Type: text/event-stream`.
    public mutating func upstreamHead(status: Int, chunked: Bool, contentLength: Int?, isSSE: Bool) -> Action {
        guard self.phase == .working, case .awaitingHead = self.attempt else { return .none }
        let plan = self.plan(status: status, chunked: chunked, contentLength: contentLength, isSSE: isSSE)
        if status >= 500, RetryPolicy.allows(.serverError(status), attempts: self.attempts, settings: self.settings.retry) {
            self.pendingHead = plan
            self.attempt = .retrying(.serverError(status))
            return .retry(.serverError(status))
        }
        return self.forward(plan)
    }

    func plan(status: Int, chunked: Bool, contentLength: Int?, isSSE: Bool) -> ResponsePlan {
        let framing: ClientFraming
        if self.requestIsHead || status == 204 || status == 304 {
            framing = .none
        } else if !chunked, contentLength != nil {
            framing = .length
        } else {
            framing = self.requestMinorVersion >= 1 ? .chunked : .close
        }
        return ResponsePlan(status: status, framing: framing, isSSE: isSSE, close: !self.keepAlive || framing == .close || self.quiescing)
    }

    mutating func forward(_ plan: ResponsePlan) -> Action {
        self.response = plan
        self.attempt = .streaming
        return .forwardHead(plan)
    }

    /// The retry asked for was granted: the request has a new placement.
    public mutating func retryGranted() -> Action {
        guard self.phase == .working, case .retrying = self.attempt else { return .none }
        self.pendingHead = nil
        return self.placed()
    }

    /// The retry asked for was refused (no candidate left, or the budget is spent).
    public mutating func retryRefused() -> Action {
        guard self.phase == .working, case .retrying(let outcome) = self.attempt else { return .none }
        if let head = self.pendingHead {
            // A 5xx nobody else can answer: the client gets the replica's own answer.
            self.pendingHead = nil
            return self.forward(head)
        }
        self.attempt = .none
        return self.respond(outcome == .timeout || outcome == .stalled ? .gatewayTimeout : .badGateway, close: false, endAttempt: outcome)
    }

    /// The connection to the replica failed (reset, closed, malformed answer).
    public mutating func upstreamFailed() -> Action {
        guard self.phase == .working else { return .none }
        switch self.attempt {
        case .streaming:
            return self.endMidStream(.badGateway, endAttempt: .brokenStream)
        case .awaitingHead(let reused):
            if reused, !self.staleRetried {
                // A pooled connection the replica had already closed: once more, fresh, same replica.
                self.staleRetried = true
                self.attempt = .connecting
                return .reconnect
            }
            return self.failedBeforeHead(.connectFailure)
        case .connecting:
            return self.failedBeforeHead(.connectFailure)
        case .none, .retrying, .queued:
            return .none
        }
    }

    mutating func failedBeforeHead(_ outcome: AttemptOutcome) -> Action {
        if RetryPolicy.allows(outcome, attempts: self.attempts, settings: self.settings.retry) {
            self.attempt = .retrying(outcome)
            return .retry(outcome)
        }
        self.attempt = .none
        return self.respond(outcome == .timeout || outcome == .stalled ? .gatewayTimeout : .badGateway, close: false, endAttempt: outcome)
    }

    /// The shell gives the attempt up for `outcome` (`.replicaLost`: its replica left rotation;
    /// `.stalled`: it missed its stall deadline) while nothing of it reached the client: before
    /// the replica's head, or (`answerUnsent`) with an event stream's head still held for its
    /// first event. As if no head had come, the request goes elsewhere when retries allow.
    public mutating func giveUp(_ outcome: AttemptOutcome, answerUnsent: Bool = false) -> Action {
        guard self.phase == .working else { return .none }
        switch self.attempt {
        case .awaitingHead, .connecting:
            return self.failedBeforeHead(outcome)
        case .streaming where answerUnsent:
            self.response = nil
            return self.failedBeforeHead(outcome)
        case .none, .retrying, .queued, .streaming:
            return .none
        }
    }

    /// No response head within the first-byte deadline.
    public mutating func firstByteTimeout() -> Action {
        guard self.phase == .working, case .awaitingHead = self.attempt else { return .none }
        return self.failedBeforeHead(.timeout)
    }

    /// The replica went silent mid-answer for longer than the idle timeout.
    public mutating func upstreamSilent() -> Action {
        guard self.phase == .working, self.attempt == .streaming else { return .none }
        return self.endMidStream(.gatewayTimeout, endAttempt: .timeout)
    }

    /// The replica's answer ended.
    public mutating func upstreamEnd() -> Action {
        guard self.phase == .working, self.attempt == .streaming, let plan = self.response else { return .none }
        self.attempt = .none
        let close = plan.close || self.quiescing
        self.phase = close ? .closed : .idle
        return .finishResponse(outcome: plan.status >= 500 ? .serverError(plan.status) : .success, close: close)
    }

    // MARK: - The client

    /// The client closed its connection.
    public mutating func clientGone() -> Action {
        defer { self.phase = .closed }
        guard self.phase == .working || self.phase == .receiving else { return .none }
        switch self.attempt {
        case .connecting, .awaitingHead, .streaming:
            self.attempt = .none
            return .abandon(endAttempt: .clientGone)
        case .retrying(let outcome):
            self.attempt = .none
            return .abandon(endAttempt: outcome)
        case .none, .queued:
            return .abandon(endAttempt: nil)
        }
    }

    /// Graceful shutdown began. `buffered`: bytes of a next request have arrived.
    public mutating func quiesce(buffered: Bool) -> Action {
        self.quiescing = true
        guard self.phase == .idle, !buffered else { return .none }
        self.phase = .closed
        return .close
    }

    // MARK: - Answers

    /// An error (or a local answer) for the client: before the answer started a whole response,
    /// after it an end of the stream.
    mutating func respond(_ error: LocalError?, close: Bool, endAttempt: AttemptOutcome? = nil) -> Action {
        if self.response != nil { return self.endMidStream(error ?? .badGateway, endAttempt: endAttempt) }
        let closing = close || self.quiescing || !self.keepAlive
        self.phase = closing ? .closed : .idle
        self.attempt = .none
        return .respond(error, close: closing, endAttempt: endAttempt)
    }

    mutating func endMidStream(_ error: LocalError, endAttempt: AttemptOutcome?) -> Action {
        let plan = self.response ?? ResponsePlan(status: 502, framing: .close, isSSE: false, close: true)
        let sse = plan.isSSE && (plan.framing == .chunked || plan.framing == .close)
        // A body that cannot carry an error event is cut: only closing tells the client.
        let close = !sse || plan.close || self.quiescing
        self.phase = close ? .closed : .idle
        self.attempt = .none
        return .endMidStream(error, sseEvent: sse, close: close, endAttempt: endAttempt)
    }
}

/// How the client's response body is delimited.
public enum ClientFraming: Sendable, Equatable {
    /// No body (HEAD, 204, 304).
    case none
    /// The replica's Content-Length, bytes passed through.
    case length
    /// Re-chunked: each piece from the replica becomes a chunk (chunked or unlimited replica
    /// bodies to HTTP/1.1 clients). The stream can then always end cleanly.
    case chunked
    /// Delimited by closing the connection (an HTTP/1.0 client and a body of unknown length).
    case close
}
