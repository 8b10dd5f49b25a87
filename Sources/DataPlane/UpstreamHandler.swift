import HTTPTransport
import NIOCore

/// Speaks HTTP/1.1 to a replica on raw bytes: writes a request head and body prepared by the
/// proxy, parses the response head, reads the body by its framing and hands the pieces to the
/// request that owns the connection, then is ready for the next request. Confined to its
/// channel's event loop like any handler; made before the channel so the pool can keep it.
final class UpstreamHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum State {
        /// No request outstanding.
        case idle
        /// Request written, waiting for the response head.
        case head
        /// Reading the response body.
        case body
        case failed
    }

    /// The request using the connection. Held strongly (a weak reference would give every client
    /// connection a side table and slow down each of its retains); cleared when the response ends
    /// or fails, and by the request when it drops the connection.
    var delegate: (any UpstreamDelegate)?
    var context: ChannelHandlerContext?
    var state = State.idle
    var parser: HTTP1HeadParser
    var reader = BodyReader.none
    var buffer: ByteBuffer?
    var requestIsHead = false
    /// The last response allows reuse (HTTP/1.1, no `Connection: close`, delimited body).
    var keepAlive = true
    /// Told when the channel closes (the pool forgets the connection).
    var onClose: ((UpstreamHandler) -> Void)?

    let flushes: FlushBatch

    init(maxHeadBytes: Int, flushes: FlushBatch) {
        self.parser = HTTP1HeadParser(kind: .response, maxBytes: maxHeadBytes)
        self.flushes = flushes
    }

    var reusable: Bool { self.state == .idle && self.keepAlive }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Writes a request (head bytes, then the body) and waits for its response.
    func send(head: ByteBuffer, body: ByteBuffer?, isHead: Bool) {
        guard let context, self.state == .idle else {
            self.fail(UpstreamError.closed)
            return
        }
        self.state = .head
        self.requestIsHead = isHead
        context.write(Self.wrapOutboundOut(head), promise: nil)
        if let body, body.readableBytes > 0 { context.write(Self.wrapOutboundOut(body), promise: nil) }
        self.flushes.flush(context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = Self.unwrapInboundIn(data)
        if var pending = self.buffer, pending.readableBytes > 0 {
            pending.writeBuffer(&incoming)
            self.buffer = nil
            self.process(&pending)
            if pending.readableBytes > 0 { self.buffer = pending }
        } else {
            self.buffer = nil
            self.process(&incoming)
            if incoming.readableBytes > 0 { self.buffer = incoming }
        }
    }

    private func process(_ bytes: inout ByteBuffer) {
        while bytes.readableBytes > 0 {
            switch self.state {
            case .idle:
                // Bytes nobody asked for: the connection cannot be trusted any more.
                self.fail(UpstreamError(description: "the replica sent bytes outside a response"))
                return
            case .failed:
                bytes.moveReaderIndex(to: bytes.writerIndex)
                return
            case .head:
                let head: HTTP1Head
                do {
                    guard let parsed = try self.parser.parse(&bytes) else { return }
                    head = parsed
                } catch {
                    self.fail(UpstreamError(description: "malformed response: \(error.description)"))
                    return
                }
                if head.status < 200 {
                    // 100 Continue and other interim answers precede the real one; 101 is never asked for.
                    if head.status == 101 { self.fail(UpstreamError(description: "unexpected protocol switch")) }
                    continue
                }
                self.keepAlive = head.isKeepAlive
                self.reader = BodyReader.response(head, requestIsHead: self.requestIsHead)
                if case .untilClose = self.reader { self.keepAlive = false }
                self.state = .body
                self.delegate?.upstreamHead(head)
                self.parser.recycle(head)
                if self.reader.isComplete { self.complete() }
            case .body:
                let done: Bool
                do {
                    done = try self.reader.read(&bytes) { piece in self.delegate?.upstreamBody(piece) }
                } catch {
                    self.fail(UpstreamError(description: "malformed response body: \(error.description)"))
                    return
                }
                if done { self.complete() }
            }
        }
    }

    private func complete() {
        self.state = .idle
        let delegate = self.delegate
        self.delegate = nil
        delegate?.upstreamEnd()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.delegate?.upstreamReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if self.state == .body, case .untilClose = self.reader {
            // A body delimited by the connection's end has ended.
            self.keepAlive = false
            self.complete()
        }
        self.fail(UpstreamError.closed)
        self.onClose?(self)
        self.onClose = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.fail(UpstreamError(description: TLSFailure(error)?.description ?? "\(error)"))
    }

    private func fail(_ error: UpstreamError) {
        self.state = .failed
        self.keepAlive = false
        let delegate = self.delegate
        self.delegate = nil
        delegate?.upstreamFailed(error)
        self.context?.close(promise: nil)
    }
}
