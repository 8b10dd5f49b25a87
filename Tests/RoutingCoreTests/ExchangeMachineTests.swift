import RoutingCore
import Testing

/// Every transition of the exchange machine, as tables: a sequence of events, the action the
/// last one gives and the phase it leaves. No sockets: the shell's tests drive the I/O.
@Suite struct ExchangeMachineTests {
    enum Event: Sendable, CustomStringConvertible {
        case head(ExchangeMachine.RequestStart)
        case body(total: Int, complete: Bool)
        case malformed(Int)
        case clientDeadline(buffered: Bool)
        case placed
        case noReplica
        case local
        case connected(reused: Bool)
        case connectFailed
        case upstreamHead(status: Int, chunked: Bool = false, length: Int? = 10, sse: Bool = false)
        case retryGranted
        case retryRefused
        case queued
        case dispatched
        case queueRefused(QueueRejection)
        case upstreamFailed
        case firstByteTimeout
        case replicaLost
        case stalled
        case upstreamSilent
        case upstreamEnd
        case clientGone
        case quiesce(buffered: Bool)

        var description: String { String(describing: self) }
    }

    /// A POST with a complete body on a keep-alive HTTP/1.1 connection.
    static let post = ExchangeMachine.RequestStart(contentLength: 10, bodyComplete: true, keepAlive: true)
    /// The events that bring a request to the point where its replica's answer streams.
    static let streaming: [Event] = [.head(post), .placed, .connected(reused: false), .upstreamHead(status: 200)]
    static let sseStreaming: [Event] = [.head(post), .placed, .connected(reused: false), .upstreamHead(status: 200, chunked: true, length: nil, sse: true)]

    static func apply(_ m: inout ExchangeMachine, _ e: Event) -> ExchangeMachine.Action {
        switch e {
        case .head(let start): m.requestHead(start)
        case .body(let total, let complete): m.bodyReceived(total: total, complete: complete)
        case .malformed(let status): m.malformed(status: status)
        case .clientDeadline(let buffered): m.clientDeadline(buffered: buffered)
        case .placed: m.placed()
        case .noReplica: m.noReplica()
        case .local: m.answerLocally()
        case .connected(let reused): m.connected(reused: reused)
        case .connectFailed: m.connectFailed()
        case .upstreamHead(let status, let chunked, let length, let sse): m.upstreamHead(status: status, chunked: chunked, contentLength: length, isSSE: sse)
        case .retryGranted: m.retryGranted()
        case .retryRefused: m.retryRefused()
        case .queued: m.queued()
        case .dispatched: m.dispatched()
        case .queueRefused(let reason): m.queueRefused(reason)
        case .upstreamFailed: m.upstreamFailed()
        case .firstByteTimeout: m.firstByteTimeout()
        case .replicaLost: m.giveUp(.replicaLost)
        case .stalled: m.giveUp(.stalled)
        case .upstreamSilent: m.upstreamSilent()
        case .upstreamEnd: m.upstreamEnd()
        case .clientGone: m.clientGone()
        case .quiesce(let buffered): m.quiesce(buffered: buffered)
        }
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var events: [Event]
        var action: ExchangeMachine.Action
        var phase: ExchangeMachine.Phase
        var retries = 2
        var testDescription: String { self.name }
    }

    static func plan(_ status: Int, _ framing: ClientFraming, sse: Bool = false, close: Bool = false) -> ExchangeMachine.ResponsePlan {
        ExchangeMachine.ResponsePlan(status: status, framing: framing, isSSE: sse, close: close)
    }

    static let cases: [Case] = [
        // The request arrives.
        Case(name: "a complete request is routed", events: [.head(post)], action: .route, phase: .working),
        Case(
            name: "a body still to come is read", events: [.head(.init(contentLength: 10, bodyComplete: false, keepAlive: true))], action: .none,
            phase: .receiving),
        Case(
            name: "Expect: 100-continue is answered",
            events: [.head(.init(contentLength: 10, bodyComplete: false, keepAlive: true, expectsContinue: true))], action: .sendContinue,
            phase: .receiving),
        Case(
            name: "a declared body over the limit is refused and closes",
            events: [.head(.init(contentLength: 1 << 30, bodyComplete: false, keepAlive: true))],
            action: .respond(.bodyTooLarge, close: true, endAttempt: nil), phase: .closed),
        Case(
            name: "a body growing over the limit is refused",
            events: [.head(.init(contentLength: nil, bodyComplete: false, keepAlive: true)), .body(total: 64 << 20, complete: false)],
            action: .respond(.bodyTooLarge, close: true, endAttempt: nil), phase: .closed),
        Case(
            name: "a partial body waits", events: [.head(.init(contentLength: 10, bodyComplete: false, keepAlive: true)), .body(total: 5, complete: false)],
            action: .none, phase: .receiving),
        Case(
            name: "a completed body is routed",
            events: [.head(.init(contentLength: 10, bodyComplete: false, keepAlive: true)), .body(total: 10, complete: true)], action: .route,
            phase: .working),
        Case(name: "a malformed head closes", events: [.malformed(400)], action: .respond(.malformed(status: 400), close: true, endAttempt: nil), phase: .closed),
        Case(
            name: "a malformed body closes", events: [.head(.init(contentLength: nil, bodyComplete: false, keepAlive: true)), .malformed(400)],
            action: .respond(.malformed(status: 400), close: true, endAttempt: nil), phase: .closed),
        Case(name: "an idle connection past its deadline closes", events: [.clientDeadline(buffered: false)], action: .close, phase: .closed),
        Case(
            name: "a head too slow gets 408", events: [.clientDeadline(buffered: true)], action: .respond(.requestTimeout, close: true, endAttempt: nil),
            phase: .closed),
        Case(
            name: "a body too slow gets 408", events: [.head(.init(contentLength: 10, bodyComplete: false, keepAlive: true)), .clientDeadline(buffered: false)],
            action: .respond(.requestTimeout, close: true, endAttempt: nil), phase: .closed),
        Case(name: "the client deadline means nothing while working", events: [.head(post), .clientDeadline(buffered: false)], action: .none, phase: .working),

        // Placement and the attempt.
        Case(name: "a placed request connects", events: [.head(post), .placed], action: .connect(fresh: false), phase: .working),
        Case(name: "no replica: 503", events: [.head(post), .noReplica], action: .respond(.noReplica, close: false, endAttempt: nil), phase: .idle),
        Case(name: "a local answer keeps the connection", events: [.head(post), .local], action: .respond(nil, close: false, endAttempt: nil), phase: .idle),
        Case(
            name: "a local answer to an HTTP/1.0 client closes", events: [.head(.init(contentLength: nil, bodyComplete: true, keepAlive: false)), .local],
            action: .respond(nil, close: true, endAttempt: nil), phase: .closed),
        Case(name: "a connection sends the request", events: [.head(post), .placed, .connected(reused: true)], action: .sendRequest, phase: .working),
        Case(name: "a failed connect is retried", events: [.head(post), .placed, .connectFailed], action: .retry(.connectFailure), phase: .working),
        Case(
            name: "a failed connect with no retries left is 502", events: [.head(post), .placed, .connectFailed],
            action: .respond(.badGateway, close: false, endAttempt: .connectFailure), phase: .idle, retries: 0),
        Case(
            name: "a granted retry connects again", events: [.head(post), .placed, .connectFailed, .retryGranted], action: .connect(fresh: false),
            phase: .working),
        Case(
            name: "a refused retry of a failed connect is 502", events: [.head(post), .placed, .connectFailed, .retryRefused],
            action: .respond(.badGateway, close: false, endAttempt: .connectFailure), phase: .idle),
        Case(
            name: "retries stop after the configured number",
            events: [.head(post), .placed, .connectFailed, .retryGranted, .connectFailed, .retryGranted, .connectFailed],
            action: .respond(.badGateway, close: false, endAttempt: .connectFailure), phase: .idle),
        Case(
            name: "a stale pooled connection goes once more, fresh", events: [.head(post), .placed, .connected(reused: true), .upstreamFailed],
            action: .reconnect, phase: .working),
        Case(
            name: "a stale connection twice is a failure",
            events: [.head(post), .placed, .connected(reused: true), .upstreamFailed, .connected(reused: true), .upstreamFailed],
            action: .retry(.connectFailure), phase: .working),
        Case(
            name: "a fresh connection that fails before the head is retried", events: [.head(post), .placed, .connected(reused: false), .upstreamFailed],
            action: .retry(.connectFailure), phase: .working),
        Case(
            name: "no head in time is 504, not retried", events: [.head(post), .placed, .connected(reused: false), .firstByteTimeout],
            action: .respond(.gatewayTimeout, close: false, endAttempt: .timeout), phase: .idle),

        // The router's queue.
        Case(name: "a request with no replica with room waits", events: [.head(post), .queued], action: .none, phase: .working),
        Case(name: "a queued request that gets a replica connects", events: [.head(post), .queued, .dispatched], action: .connect(fresh: false), phase: .working),
        Case(
            name: "a queue past its deadline refuses with 503", events: [.head(post), .queued, .queueRefused(.timeout)],
            action: .respond(.overloaded(.timeout), close: false, endAttempt: nil), phase: .idle),
        Case(
            name: "a full queue refuses at once", events: [.head(post), .queueRefused(.full)], action: .respond(.overloaded(.full), close: false, endAttempt: nil),
            phase: .idle),
        Case(name: "a client leaving the queue", events: [.head(post), .queued, .clientGone], action: .abandon(endAttempt: nil), phase: .closed),
        Case(name: "a dispatch after the client left means nothing", events: [.head(post), .queued, .clientGone, .dispatched], action: .none, phase: .closed),
        Case(name: "a queue event out of place means nothing", events: [.head(post), .placed, .dispatched], action: .none, phase: .working),

        // The replica's answer.
        Case(name: "a 200 with a length is passed through", events: streaming, action: .forwardHead(plan(200, .length)), phase: .working),
        Case(
            name: "a chunked answer is re-chunked", events: [.head(post), .placed, .connected(reused: false), .upstreamHead(status: 200, chunked: true, length: nil)],
            action: .forwardHead(plan(200, .chunked)), phase: .working),
        Case(name: "an SSE stream is chunked by events", events: sseStreaming, action: .forwardHead(plan(200, .chunked, sse: true)), phase: .working),
        Case(
            name: "an unlimited answer to HTTP/1.0 is delimited by closing",
            events: [.head(.init(contentLength: nil, bodyComplete: true, keepAlive: false, minorVersion: 0)), .placed, .connected(reused: false),
                .upstreamHead(status: 200, chunked: true, length: nil)],
            action: .forwardHead(plan(200, .close, close: true)), phase: .working),
        Case(
            name: "a HEAD request's answer has no body",
            events: [.head(.init(contentLength: nil, bodyComplete: true, keepAlive: true, isHead: true)), .placed, .connected(reused: false),
                .upstreamHead(status: 200)],
            action: .forwardHead(plan(200, .none)), phase: .working),
        Case(
            name: "a 204 has no body", events: [.head(post), .placed, .connected(reused: false), .upstreamHead(status: 204, length: nil)],
            action: .forwardHead(plan(204, .none)), phase: .working),
        Case(
            name: "a 4xx is the replica's answer", events: [.head(post), .placed, .connected(reused: false), .upstreamHead(status: 404)],
            action: .forwardHead(plan(404, .length)), phase: .working),
        Case(
            name: "a 5xx before the first byte asks for a retry", events: [.head(post), .placed, .connected(reused: false), .upstreamHead(status: 503)],
            action: .retry(.serverError(503)), phase: .working),
        Case(
            name: "a 5xx nobody else can answer is passed on",
            events: [.head(post), .placed, .connected(reused: false), .upstreamHead(status: 503), .retryRefused],
            action: .forwardHead(plan(503, .length)), phase: .working),
        Case(
            name: "a 5xx with no retries left is passed on", events: [.head(post), .placed, .connected(reused: false), .upstreamHead(status: 500)],
            action: .forwardHead(plan(500, .length)), phase: .working, retries: 0),
        Case(
            name: "a retried 5xx connects elsewhere",
            events: [.head(post), .placed, .connected(reused: false), .upstreamHead(status: 503), .retryGranted], action: .connect(fresh: false),
            phase: .working),
        Case(name: "the end of an answer keeps the connection", events: streaming + [.upstreamEnd], action: .finishResponse(outcome: .success, close: false), phase: .idle),
        Case(
            name: "the end of a 5xx answer counts against the replica",
            events: [.head(post), .placed, .connected(reused: false), .upstreamHead(status: 500), .upstreamEnd],
            action: .finishResponse(outcome: .serverError(500), close: false), phase: .idle, retries: 0),
        Case(
            name: "the end of an answer to a closing client closes",
            events: [.head(.init(contentLength: nil, bodyComplete: true, keepAlive: false)), .placed, .connected(reused: false), .upstreamHead(status: 200),
                .upstreamEnd],
            action: .finishResponse(outcome: .success, close: true), phase: .closed),
        Case(
            name: "a broken SSE stream ends with an error event", events: sseStreaming + [.upstreamFailed],
            action: .endMidStream(.badGateway, sseEvent: true, close: false, endAttempt: .brokenStream), phase: .idle),
        Case(
            name: "a broken plain body is cut", events: streaming + [.upstreamFailed],
            action: .endMidStream(.badGateway, sseEvent: false, close: true, endAttempt: .brokenStream), phase: .closed),
        Case(
            name: "a silent stream ends with a timeout event", events: sseStreaming + [.upstreamSilent],
            action: .endMidStream(.gatewayTimeout, sseEvent: true, close: false, endAttempt: .timeout), phase: .idle),
        Case(name: "silence before the head is not the idle timeout", events: [.head(post), .placed, .connected(reused: false), .upstreamSilent], action: .none, phase: .working),
        Case(name: "a first-byte timeout after the head means nothing", events: streaming + [.firstByteTimeout], action: .none, phase: .working),
        Case(
            name: "a replica lost while waiting for the head: retried elsewhere", events: [.head(post), .placed, .connected(reused: false), .replicaLost],
            action: .retry(.replicaLost), phase: .working),
        Case(name: "a replica lost while connecting: retried too", events: [.head(post), .placed, .replicaLost], action: .retry(.replicaLost), phase: .working),
        Case(name: "a replica lost once its answer streams: nothing (bytes went out)", events: streaming + [.replicaLost], action: .none, phase: .working),
        Case(
            name: "a stalled replica: retried elsewhere", events: [.head(post), .placed, .connected(reused: false), .stalled],
            action: .retry(.stalled), phase: .working),
        Case(
            name: "stalled with no retry left: 504", events: [.head(post), .placed, .connected(reused: false), .stalled, .retryRefused],
            action: .respond(.gatewayTimeout, close: false, endAttempt: .stalled), phase: .idle),
        Case(name: "a stall once the answer streams means nothing", events: streaming + [.stalled], action: .none, phase: .working),
        Case(name: "a second head is ignored", events: streaming + [.upstreamHead(status: 200)], action: .none, phase: .working),

        // The client.
        Case(name: "a client leaving an idle connection", events: [.clientGone], action: .none, phase: .closed),
        Case(
            name: "a client leaving mid-body", events: [.head(.init(contentLength: 10, bodyComplete: false, keepAlive: true)), .clientGone],
            action: .abandon(endAttempt: nil), phase: .closed),
        Case(
            name: "a client leaving while the replica works cancels it", events: [.head(post), .placed, .connected(reused: false), .clientGone],
            action: .abandon(endAttempt: .clientGone), phase: .closed),
        Case(name: "a client leaving mid-stream", events: streaming + [.clientGone], action: .abandon(endAttempt: .clientGone), phase: .closed),
        Case(name: "shutdown closes an idle connection", events: [.quiesce(buffered: false)], action: .close, phase: .closed),
        Case(name: "shutdown waits for a request being read", events: [.quiesce(buffered: true)], action: .none, phase: .idle),
        Case(
            name: "shutdown lets the answer finish, then closes", events: [.head(post), .placed, .quiesce(buffered: false), .connected(reused: false),
                .upstreamHead(status: 200)],
            action: .forwardHead(plan(200, .length, close: true)), phase: .working),
        Case(
            name: "an answer that ends during shutdown closes", events: streaming + [.quiesce(buffered: false), .upstreamEnd],
            action: .finishResponse(outcome: .success, close: true), phase: .closed),
    ]

    @Test(arguments: Self.cases)
    func transition(_ c: Case) {
        var m = ExchangeMachine(settings: .init(retry: RetrySettings(retries: c.retries), maxBodyBytes: 32 << 20))
        var last = ExchangeMachine.Action.none
        for event in c.events { last = Self.apply(&m, event) }
        #expect(last == c.action, "\(c.events)")
        #expect(m.phase == c.phase)
    }

    @Test func keepAliveServesTheNextRequestFromAFreshState() {
        var m = ExchangeMachine(settings: .init())
        for event in Self.streaming + [.upstreamEnd] { _ = Self.apply(&m, event) }
        #expect(m.phase == .idle)
        let action = m.requestHead(Self.post)
        #expect(action == .route)
        #expect(m.attempts == 0 && !m.responseStarted && m.attempt == .none)
        let connect = m.placed()
        #expect(connect == .connect(fresh: false))
        #expect(m.attempts == 1)
    }

    @Test func attemptsCountRetriesButNotStaleConnections() {
        var m = ExchangeMachine(settings: .init())
        for event: Event in [.head(Self.post), .placed, .connected(reused: true), .upstreamFailed] { _ = Self.apply(&m, event) }
        #expect(m.attempts == 1)
        for event: Event in [.connected(reused: false), .upstreamHead(status: 502), .retryGranted] { _ = Self.apply(&m, event) }
        #expect(m.attempts == 2)
    }

    @Test func eventsOutOfPlaceChangeNothing() {
        var m = ExchangeMachine(settings: .init())
        for event: Event in [.placed, .connected(reused: false), .connectFailed, .upstreamHead(status: 200), .retryGranted, .retryRefused, .upstreamFailed, .upstreamEnd, .noReplica, .local, .body(total: 1, complete: true)] {
            let action = Self.apply(&m, event)
            #expect(action == .none, "\(event)")
            #expect(m.phase == .idle)
        }
    }
}

/// The retry policy: which outcomes go elsewhere, how many times, within what budget.
@Suite struct RetryPolicyTests {
    @Test(arguments: [
        (AttemptOutcome.connectFailure, 1, true), (.serverError(503), 1, true), (.serverError(500), 3, false), (.connectFailure, 3, false),
        (.timeout, 1, false), (.brokenStream, 1, false), (.clientGone, 1, false), (.staleConnection, 1, false), (.success, 1, false),
    ])
    func retryableOutcomes(outcome: AttemptOutcome, attempts: Int, allowed: Bool) {
        #expect(RetryPolicy.allows(outcome, attempts: attempts, settings: RetrySettings(retries: 2)) == allowed)
    }

    @Test func theBudgetRefillsWithRequestsAndTime() {
        var p = RetryPolicy(settings: RetrySettings(retries: 2, budget: 0.5, minPerSecond: 1), now: 0)
        var granted: [Bool] = []
        for _ in 0..<11 { granted.append(p.withdraw()) }
        #expect(granted == Array(repeating: true, count: 10) + [false])
        p.deposit(now: 0)  // one request: half a retry
        granted = [p.withdraw()]
        p.deposit(now: 0)
        granted.append(p.withdraw())
        p.deposit(now: 3)  // three seconds: three more, plus the request's half
        for _ in 0..<4 { granted.append(p.withdraw()) }
        #expect(granted == [false, true, true, true, true, false])
    }

    @Test func theBudgetIsCapped() {
        var p = RetryPolicy(settings: RetrySettings(retries: 2, budget: 1, minPerSecond: 2), now: 0)
        p.deposit(now: 1000)
        var n = 0
        while p.withdraw() { n += 1 }
        #expect(n == 20)
    }
}

/// Passive health: which outcomes count, the ejection schedule, and what probes end.
@Suite struct FleetHealthTests {
    static let settings = HealthSettings(failureThreshold: 2, successThreshold: 2, ejectAfterFailures: 3, ejectionSeconds: 10, maxEjectionSeconds: 25)

    @Test func failuresEjectAndTheEjectionDoublesUpToItsLimit() {
        var h = FleetHealth(settings: Self.settings)
        h.retain(["a", "b"], now: 0)
        let ejected = [h.record(.connectFailure, on: "a", now: 1), h.record(.serverError(500), on: "a", now: 1), h.record(.timeout, on: "a", now: 1)]
        #expect(ejected == [false, false, true])
        #expect(!h.isRoutable("a", now: 5) && h.isRoutable("b", now: 5))
        #expect(h.nextEjectionEnd == 11)
        #expect(h.ejectionEnded(now: 11) && h.isRoutable("a", now: 11))
        h.advanceEjections(now: 11)
        #expect(h.nextEjectionEnd == nil)
        for _ in 0..<3 { _ = h.record(.brokenStream, on: "a", now: 12) }
        #expect(h.nextEjectionEnd == 32)  // 20 s: doubled
        h.advanceEjections(now: 32)
        for _ in 0..<3 { _ = h.record(.connectFailure, on: "a", now: 33) }
        #expect(h.nextEjectionEnd == 58)  // 25 s: the limit
    }

    @Test(arguments: [AttemptOutcome.clientGone, .staleConnection, .success])
    func outcomesThatSayNothingAgainstTheReplica(outcome: AttemptOutcome) {
        var h = FleetHealth(settings: Self.settings)
        h.retain(["a"], now: 0)
        var ejected = false
        for _ in 0..<10 { ejected = h.record(outcome, on: "a", now: 1) || ejected }
        #expect(!ejected)
        #expect(h["a"]?.requestFailures == 0)
    }

    @Test func aSuccessResetsTheFailureRun() {
        var h = FleetHealth(settings: Self.settings)
        h.retain(["a"], now: 0)
        _ = h.record(.connectFailure, on: "a", now: 1)
        _ = h.record(.connectFailure, on: "a", now: 1)
        _ = h.record(.success, on: "a", now: 1)
        let ejected = h.record(.connectFailure, on: "a", now: 1)
        #expect(!ejected)
    }

    @Test func probesTakeAReplicaDownAndBackWithHysteresis() {
        var h = FleetHealth(settings: Self.settings)
        h.retain(["a"], now: 0)
        var seen: [String] = []
        for (t, ok) in [(0.0, true), (1, false), (2, false), (3, true), (4, true)] {
            let (state, routability) = h.probe("a", success: ok, error: ok ? nil : "x", now: t)
            seen.append("\(state?.rawValue ?? "-") \(routability)")
        }
        #expect(seen == ["up false", "- false", "down true", "- false", "up true"])
    }
}

/// The fleet router: retries go to the next candidate not yet tried, within the budget; an
/// ejection rebuilds the snapshot; membership merges configured, discovered and probed.
@Suite struct FleetRouterTests {
    static func specs(_ n: Int) -> [ReplicaSpec] { (1...n).map { ReplicaSpec(name: "r\($0)", url: "http://127.0.0.1:\(8000 + $0)") } }
    static let body = Array(#"{"model":"m","messages":[{"role":"user","content":"hello there"}]}"#.utf8)

    func keys(_ rules: KeyingRules) -> Result<RequestKeys, KeyError> {
        KeyExtractor.extract(api: .chat, body: Self.body, header: { _ in nil }, rules: rules)
    }

    @Test func retriesWalkTheCandidatesAndSkipWhatFailed() throws {
        var core = FleetRouter(settings: FleetSettings(), replicas: Self.specs(4))
        let keys = self.keys(core.settings.routing.keying)
        let routed = core.route(keys, now: 0).placement
        let first = try #require(routed)
        var tried = [first.replicaName]
        var current = first
        for _ in 0..<3 {
            let retried = core.retry(after: current, excluding: tried, keys: try keys.get(), now: 0)
            let next = try #require(retried)
            #expect(!tried.contains(next.replicaName))
            tried.append(next.replicaName)
            current = next
        }
        #expect(Set(tried).count == 4)
        let none = core.retry(after: current, excluding: tried, keys: try keys.get(), now: 0)
        #expect(none == nil)
    }

    @Test func retriesStopWhenTheBudgetIsSpent() throws {
        var core = FleetRouter(settings: FleetSettings(retry: RetrySettings(retries: 2, budget: 0, minPerSecond: 0)), replicas: Self.specs(3))
        let keys = self.keys(core.settings.routing.keying)
        var granted = 0
        for _ in 0..<20 {
            let routed = core.route(keys, now: 0).placement
            let p = try #require(routed)
            if core.retry(after: p, excluding: [p.replicaName], keys: try keys.get(), now: 0) != nil { granted += 1 }
        }
        #expect(granted == 10)  // the initial tokens, then nothing
    }

    @Test func anEjectionRebuildsTheSnapshotAndItsEndBringsTheReplicaBack() throws {
        var core = FleetRouter(
            settings: FleetSettings(health: HealthSettings(ejectAfterFailures: 2, ejectionSeconds: 5)), replicas: Self.specs(2))
        let keys = self.keys(core.settings.routing.keying)
        let routed = core.route(keys, now: 0).placement
        let p = try #require(routed)
        let version = core.version
        let first = core.finish(p, outcome: .connectFailure, now: 1)
        #expect(!first)
        let again = core.route(keys, now: 1).placement
        let q = try #require(again)
        #expect(q.replicaName == p.replicaName)
        let second = core.finish(q, outcome: .connectFailure, now: 1)
        #expect(second)
        #expect(core.version == version + 1)
        #expect(core.fleet.routableCount == 1)
        let elsewhere = core.route(keys, now: 2).placement
        #expect(elsewhere?.replicaName != p.replicaName)
        _ = core.route(keys, now: 6)
        #expect(core.fleet.routableCount == 2)
    }

    @Test func membershipMergesConfiguredDiscoveredAndProbedModels() {
        var core = FleetRouter(settings: FleetSettings(), replicas: Self.specs(1))
        var changed = core.setDiscovered([ReplicaSpec(name: "d1", url: "http://10.0.0.1:8000"), ReplicaSpec(name: "r1", url: "http://10.9.9.9:1")], now: 0)
        #expect(changed)
        #expect(core.fleet.replicas.map(\.name) == ["r1", "d1"])
        #expect(core.fleet.endpoints[0].url?.port == 8001)  // the configured one wins
        changed = core.observeModels("d1", models: ["m"], now: 0)
        #expect(changed)
        changed = core.observeModels("d1", models: ["m"], now: 0)
        #expect(!changed)
        #expect(core.fleet.replicas[1].models == ["m"])
        changed = core.setDiscovered([ReplicaSpec(name: "d1", url: "http://10.0.0.1:8000")], now: 0)
        #expect(changed)
        #expect(core.fleet.replicas.map(\.name) == ["r1", "d1"])
    }

    @Test func aReplicaWithAnUnusableURLIsNeverRoutable() {
        let core = FleetRouter(settings: FleetSettings(), replicas: [ReplicaSpec(name: "bad", url: "ftp://x"), ReplicaSpec(name: "ok", url: "http://h:1")])
        #expect(core.fleet.routable == [false, true])
        #expect(core.fleet.endpoints[0].urlError != nil)
    }
}
