import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A request for `HTTPClient`.
public struct HTTPClientRequest: Sendable {
    public var host: String
    public var port: Int
    public var method: HTTPMethod
    public var path: String
    public var headers: HTTPHeaders
    public var body: ByteBuffer?
    /// Speak TLS with this context (an `https://` replica).
    public var tls: ClientTLS?

    public init(
        host: String, port: Int, method: HTTPMethod = .GET, path: String, headers: HTTPHeaders = [:], body: ByteBuffer? = nil, tls: ClientTLS? = nil
    ) {
        self.tls = tls
        self.host = host
        self.port = port
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
    }

    /// A JSON POST.
    public static func post(host: String, port: Int, path: String, json: [UInt8], headers: HTTPHeaders = [:]) -> HTTPClientRequest {
        var h = headers
        h.replaceOrAdd(name: "content-type", value: "application/json")
        return HTTPClientRequest(host: host, port: port, method: .POST, path: path, headers: h, body: ByteBuffer(bytes: json))
    }
}

/// A whole response.
public struct HTTPClientResponse: Sendable {
    public var status: HTTPResponseStatus
    public var headers: HTTPHeaders
    public var body: ByteBuffer

    public var bodyText: String { String(buffer: self.body) }
    public var bodyBytes: [UInt8] { Array(self.body.readableBytesView) }
}

/// Why a client request failed.
public struct HTTPClientError: Error, Sendable, Hashable, CustomStringConvertible {
    enum Code: Hashable, Sendable {
        case connect(String)
        case timeout
        case closed
        case tooLarge
    }

    let code: Code

    public static func connect(_ reason: String) -> HTTPClientError { HTTPClientError(code: .connect(reason)) }
    public static let timeout = HTTPClientError(code: .timeout)
    public static let closed = HTTPClientError(code: .closed)
    public static let tooLarge = HTTPClientError(code: .tooLarge)

    public var description: String {
        switch self.code {
        case .connect(let reason): "connection failed: \(reason)"
        case .timeout: "timed out"
        case .closed: "connection closed before the response ended"
        case .tooLarge: "response body too large"
        }
    }
}

/// A small HTTP/1.1 client for the control plane (probes, replay, tests): one connection per
/// request, the whole response or a stream of body chunks. The data plane has its own pooled
/// upstream connections.
public final class HTTPClient: Sendable {
    let group: any EventLoopGroup

    public init(group: any EventLoopGroup) {
        self.group = group
    }

    /// Sends a request and collects the response (at most `maxBody` bytes) within `timeout` seconds.
    public func execute(_ request: HTTPClientRequest, timeout: Double, maxBody: Int = 64 << 20) async throws -> HTTPClientResponse {
        let stream = try await self.stream(request, connectTimeout: timeout, responseTimeout: timeout)
        var body = ByteBuffer()
        for try await chunk in stream.body {
            guard body.readableBytes + chunk.readableBytes <= maxBody else {
                stream.cancel()
                throw HTTPClientError.tooLarge
            }
            var chunk = chunk
            body.writeBuffer(&chunk)
        }
        return HTTPClientResponse(status: stream.status, headers: stream.headers, body: body)
    }

    /// Sends a request and returns once the response head is in; the body follows as a stream.
    /// `responseTimeout` bounds the wait for the head (from when the request is sent) and every silence between chunks.
    public func stream(_ request: HTTPClientRequest, connectTimeout: Double, responseTimeout: Double) async throws -> HTTPClientStream {
        let (body, continuation) = AsyncThrowingStream<ByteBuffer, any Error>.makeStream()
        let head = self.group.any().makePromise(of: HTTPResponseHead.self)
        let handler = ResponseStreamHandler(head: head, body: continuation, idleTimeout: .nanoseconds(Int64(responseTimeout * 1e9)))
        let tls = request.tls
        let host = request.host
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: self.group)
                .connectTimeout(.nanoseconds(Int64(connectTimeout * 1e9)))
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls { try channel.pipeline.syncOperations.addHandler(try tls.handler(host: host)) }
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .connect(host: request.host, port: request.port)
                .get()
        } catch {
            head.fail(HTTPClientError.connect("\(request.host):\(request.port): \(error)"))
            throw HTTPClientError.connect("\(request.host):\(request.port): \(error)")
        }
        var headers = request.headers
        if !headers.contains(name: "host") { headers.add(name: "host", value: "\(request.host):\(request.port)") }
        headers.replaceOrAdd(name: "connection", value: "close")
        if let body = request.body {
            headers.replaceOrAdd(name: "content-length", value: String(body.readableBytes))
        } else if request.method == .POST || request.method == .PUT {
            headers.replaceOrAdd(name: "content-length", value: "0")
        }
        let requestHead = HTTPRequestHead(version: .http1_1, method: request.method, uri: request.path, headers: headers)
        channel.write(HTTPClientRequestPart.head(requestHead), promise: nil)
        if let body = request.body { channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil) }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let responseHead: HTTPResponseHead
        do {
            responseHead = try await head.futureResult.get()
        } catch {
            channel.close(promise: nil)
            throw error
        }
        return HTTPClientStream(status: responseHead.status, headers: responseHead.headers, body: body, channel: channel)
    }
}

/// A response whose body arrives as chunks.
public struct HTTPClientStream: Sendable {
    public var status: HTTPResponseStatus
    public var headers: HTTPHeaders
    public var body: AsyncThrowingStream<ByteBuffer, any Error>
    let channel: any Channel

    /// Closes the connection (the server sees the client go away).
    public func cancel() {
        self.channel.close(promise: nil)
    }
}

/// Delivers a response head to a promise and its body chunks to a stream. The response timeout
/// runs from the moment the request's end is written, so a caller that is slow to send (its task
/// waiting for a thread) is not charged for it.
final class ResponseStreamHandler: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    let head: EventLoopPromise<HTTPResponseHead>
    let body: AsyncThrowingStream<ByteBuffer, any Error>.Continuation
    let idleTimeout: TimeAmount
    var timer: Scheduled<Void>?
    var headSeen = false
    var done = false

    init(head: EventLoopPromise<HTTPResponseHead>, body: AsyncThrowingStream<ByteBuffer, any Error>.Continuation, idleTimeout: TimeAmount) {
        self.head = head
        self.body = body
        self.idleTimeout = idleTimeout
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = Self.unwrapOutboundIn(data), !self.done { self.arm(context) }
        context.write(data, promise: promise)
    }

    func arm(_ context: ChannelHandlerContext) {
        self.timer?.cancel()
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.timer = context.eventLoop.scheduleTask(in: self.idleTimeout) {
            let (handler, context) = loopBound.value
            handler.fail(HTTPClientError.timeout)
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let h):
            self.headSeen = true
            self.head.succeed(h)
            self.arm(context)
        case .body(let chunk):
            self.body.yield(chunk)
            self.arm(context)
        case .end:
            self.done = true
            self.timer?.cancel()
            self.body.finish()
            context.close(promise: nil)
        }
    }

    func fail(_ error: any Error) {
        guard !self.done else { return }
        self.done = true
        self.timer?.cancel()
        if !self.headSeen { self.head.fail(error) }
        self.body.finish(throwing: error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.fail(HTTPClientError.closed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A connection dropped in the middle of a body reaches the decoder as an EOF error.
        if let parserError = error as? HTTPParserError, parserError == .invalidEOFState {
            self.fail(HTTPClientError.closed)
        } else if let tls = TLSFailure(error) {
            self.fail(HTTPClientError.connect(tls.description))
        } else {
            self.fail(error)
        }
        context.close(promise: nil)
    }
}
