import FleetState
import ResponseCache
import HTTPTransport
import NIOCore
import RoutingCore

/// One request as the shell handles it: the bytes and resources the exchange machine's actions
/// work on (the decisions and their state are the machine's).
final class Exchange {
    /// Nil for a request whose head never parsed (400, 408, 431 answers), and once the exchange
    /// completed (the head's storage goes back to the connection's parser).
    var head: HTTP1Head?
    let started: NIODeadline
    let remote: String?
    let requestID: RequestID
    var body = ByteBuffer()
    var expectedBodyBytes = 0
    var route = RequestRoute.notFound
    var keys: Result<RequestKeys, KeyError>?
    /// The current attempt's placement.
    var placement: Placement?
    /// Replicas whose attempt failed (excluded from retries); empty unless one did.
    var failed: [String] = []
    /// The current attempt's connection.
    var lease: (any UpstreamLease)?
    /// The response head arrived; the routing core hears of it at the end of the read.
    var firstBytePending = false
    /// The response head, not written yet (it goes out with the first body bytes).
    var heldHead: ByteBuffer?
    var plan: ExchangeMachine.ResponsePlan?
    var events = SSEEventBuffer()
    var firstByteAt: NIODeadline?
    var firstBodyAt: NIODeadline?
    var firstByteDeadline: NIODeadline?
    /// A streamed request: when its attempt, still without an answer, is taken as stalled.
    var stallDeadline: NIODeadline?
    var lastActivity: NIODeadline
    var usage = UsageScanner()
    var summary: RequestSummary
    /// What the router answers itself when the machine says `respond` without an error.
    var localAnswer: (status: Int, body: [UInt8], retryAfter: Int?)?
    /// What went wrong, for the error message (a parse error, the last failure of a replica, why
    /// no replica was routable).
    var detail: String?
    /// Its id in the router's queue while it waits there.
    var queueID: UInt64?
    /// Seconds to tell a refused client to wait.
    var retryAfter: Int?
    /// When the current attempt's request went to the replica.
    var sentAt: NIODeadline?
    /// The response cache's key and policy, when the request uses the cache.
    var cache: CacheRequest?
    /// What the cache did (`x-cacheroute-cache`: hit-exact, hit-semantic, miss, bypass); nil: off.
    var cacheResult: String?
    /// Header lines the cache adds to the answer.
    var cacheFields: [UInt8] = []
    /// Semantic mode: the request's unit vector, stored with its answer.
    var cacheVector: [Float]?
    /// The answer's bytes as they pass, to store once complete (nil: not stored).
    var capture: [UInt8]?
    var captureType = ""
    /// A local answer's content type (nil: JSON) and extra header lines.
    var localType: String?
    /// A stream replayed from the cache with pacing: its events, written one per interval.
    var paced: [ArraySlice<UInt8>]?
    /// A sampled request's canonical instruction bytes and session kind, for the prefix
    /// diagnostics once its answer (and usage) is in; dropped then.
    var insight: (text: [UInt8], session: String)?
    /// Responses: the number in the ids of the response the router asks replicas for (0: none yet).
    var responseSerial: UInt64 = 0

    /// Its errors take the Anthropic shape (`/v1/messages`).
    var anthropic: Bool {
        switch self.route {
        case .keyed(.messages), .methodNotAllowed(.messages), .countTokens: true
        default: false
        }
    }

    init(head: HTTP1Head?, started: NIODeadline, remote: String?, requestID: RequestID) {
        self.head = head
        self.started = started
        self.remote = remote
        self.requestID = requestID
        self.lastActivity = started
        self.summary = RequestSummary(route: "local", method: head?.methodString ?? "-", path: "-")
        self.summary.requestID = requestID
        self.summary.client = remote
    }

    /// Adds a piece of the request body: the first whole body is kept as the slice it came in.
    func appendBody(_ piece: ByteBuffer) {
        if self.body.readableBytes == 0, piece.readableBytes >= self.expectedBodyBytes {
            self.body = piece
            return
        }
        var piece = piece
        if self.body.readableBytes == 0 {
            self.body = ByteBufferAllocator().buffer(capacity: max(self.expectedBodyBytes, piece.readableBytes))
        }
        let original = piece
        self.body.writeBuffer(&piece)
        // Copied: the piece's bytes in the receive buffer are zeroed there (nothing reads them again).
        original.scrubReadable()
    }
}

extension ByteBuffer {
    /// Zeroes the readable bytes in place, shared by every slice of the storage (no copy-on-write):
    /// for request bytes nothing reads any more, so freed or pooled memory does not keep prompts.
    func scrubReadable() {
        self.withUnsafeReadableBytes { raw in
            guard let base = raw.baseAddress, raw.count > 0 else { return }
            UnsafeMutableRawPointer(mutating: base).initializeMemory(as: UInt8.self, repeating: 0, count: raw.count)
        }
    }
}
