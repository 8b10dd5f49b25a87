import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A RESP2 value.
public enum RESPValue: Sendable, Equatable {
    case simple(String)
    case error(String)
    case integer(Int)
    case bulk([UInt8]?)
    case array([RESPValue]?)

    var bytes: [UInt8]? {
        switch self {
        case .bulk(let b): b
        case .simple(let s): Array(s.utf8)
        default: nil
        }
    }
}

public struct RedisError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Reads RESP2 values from bytes as they arrive.
struct RESPParser {
    /// One value from the front of `buffer`, consumed; nil (nothing consumed) until it is whole.
    static func parse(_ buffer: inout ByteBuffer) throws -> RESPValue? {
        var copy = buffer
        guard let value = try Self.value(&copy, depth: 0) else { return nil }
        buffer = copy
        return value
    }

    static func line(_ buffer: inout ByteBuffer) -> String? {
        let view = buffer.readableBytesView
        guard let cr = view.firstIndex(of: 0x0D), cr + 1 < view.endIndex, view[cr + 1] == 0x0A else { return nil }
        let text = String(decoding: view[view.startIndex..<cr], as: UTF8.self)
        buffer.moveReaderIndex(forwardBy: cr + 2 - view.startIndex)
        return text
    }

    static func value(_ buffer: inout ByteBuffer, depth: Int) throws -> RESPValue? {
        guard depth < 8 else { throw RedisError("RESP nested too deeply") }
        guard let type = buffer.readInteger(as: UInt8.self) else { return nil }
        guard let line = Self.line(&buffer) else { return nil }
        switch type {
        case UInt8(ascii: "+"): return .simple(line)
        case UInt8(ascii: "-"): return .error(line)
        case UInt8(ascii: ":"):
            guard let n = Int(line) else { throw RedisError("bad RESP integer '\(line)'") }
            return .integer(n)
        case UInt8(ascii: "$"):
            guard let n = Int(line), n >= -1, n <= 512 << 20 else { throw RedisError("bad RESP length '\(line)'") }
            if n == -1 { return .bulk(nil) }
            guard buffer.readableBytes >= n + 2, let bytes = buffer.readBytes(length: n) else { return nil }
            buffer.moveReaderIndex(forwardBy: 2)
            return .bulk(bytes)
        case UInt8(ascii: "*"):
            guard let n = Int(line), n >= -1, n <= 1 << 20 else { throw RedisError("bad RESP array length '\(line)'") }
            if n == -1 { return .array(nil) }
            var items: [RESPValue] = []
            items.reserveCapacity(n)
            for _ in 0..<n {
                guard let item = try Self.value(&buffer, depth: depth + 1) else { return nil }
                items.append(item)
            }
            return .array(items)
        default:
            throw RedisError("bad RESP type byte \(type)")
        }
    }

    static func encode(_ command: [[UInt8]], into out: inout ByteBuffer) {
        out.writeString("*\(command.count)\r\n")
        for part in command {
            out.writeString("$\(part.count)\r\n")
            out.writeBytes(part)
            out.writeStaticString("\r\n")
        }
    }
}

/// One Redis connection: commands pipelined, answers matched in order.
final class RedisHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = (command: [[UInt8]], promise: EventLoopPromise<RESPValue>)
    typealias OutboundOut = ByteBuffer

    var pending: [EventLoopPromise<RESPValue>] = []
    var head = 0
    var buffer: ByteBuffer?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let (command, answer) = Self.unwrapOutboundIn(data)
        var out = context.channel.allocator.buffer(capacity: 64 + command.reduce(0) { $0 + $1.count + 16 })
        RESPParser.encode(command, into: &out)
        self.pending.append(answer)
        context.write(Self.wrapOutboundOut(out), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = Self.unwrapInboundIn(data)
        if var b = self.buffer {
            b.writeBuffer(&incoming)
            self.buffer = b
        } else {
            self.buffer = incoming
        }
        do {
            while var b = self.buffer, b.readableBytes > 0, let value = try RESPParser.parse(&b) {
                self.buffer = b
                guard self.head < self.pending.count else { throw RedisError("an answer nobody asked for") }
                let promise = self.pending[self.head]
                self.head += 1
                if self.head > 64, self.head * 2 > self.pending.count {
                    self.pending.removeFirst(self.head)
                    self.head = 0
                }
                promise.succeed(value)
            }
            if self.buffer?.readableBytes == 0 { self.buffer = nil }
        } catch {
            context.fireErrorCaught(error)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.failAll(RedisError("\(error)"))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.failAll(RedisError("connection closed"))
        context.fireChannelInactive()
    }

    func failAll(_ error: RedisError) {
        let left = self.pending[self.head...]
        self.pending = []
        self.head = 0
        for p in left { p.fail(error) }
    }
}

/// A small Redis client: a few pipelined connections, every command bounded by a timeout, and
/// fail-fast while Redis is down (one connect attempt per second at most), so a missing Redis
/// costs a request nothing but the failed lookup.
public final class RedisClient: Sendable {
    struct Slot {
        var channel: (any Channel)?
        var connecting: EventLoopFuture<any Channel>?
        var lastAttempt: NIODeadline?
    }

    let host: String
    let port: Int
    let password: String?
    let timeout: TimeAmount
    let group: any EventLoopGroup
    let slots: NIOLockedValueBox<[Slot]>
    let next = NIOLockedValueBox(0)

    public init(host: String, port: Int, password: String?, timeoutSeconds: Double, connections: Int, group: any EventLoopGroup) {
        self.host = host
        self.port = port
        self.password = password
        self.timeout = .nanoseconds(Int64(timeoutSeconds * 1e9))
        self.group = group
        self.slots = NIOLockedValueBox(Array(repeating: Slot(), count: max(1, connections)))
    }

    /// Sends one command; the future fails on an error reply, a timeout or no connection.
    public func send(_ command: [[UInt8]]) -> EventLoopFuture<RESPValue> {
        let index = self.next.withLockedValue { n -> Int in
            n &+= 1
            return n
        }
        return self.channel(slot: index % self.slots.withLockedValue { $0.count }).flatMap { channel in
            let promise = channel.eventLoop.makePromise(of: RESPValue.self)
            let timer = channel.eventLoop.scheduleTask(in: self.timeout) { promise.fail(RedisError("timed out after \(self.timeout.nanoseconds / 1_000_000) ms")) }
            channel.writeAndFlush((command: command, promise: promise)).whenFailure { promise.fail(RedisError("\($0)")) }
            return promise.futureResult.always { _ in timer.cancel() }.flatMapThrowing { value in
                if case .error(let message) = value { throw RedisError(message) }
                return value
            }
        }
    }

    public func send(_ parts: String...) -> EventLoopFuture<RESPValue> {
        self.send(parts.map { Array($0.utf8) })
    }

    func channel(slot: Int) -> EventLoopFuture<any Channel> {
        let loop = self.group.next()
        enum Next {
            case ready(any Channel)
            case wait(EventLoopFuture<any Channel>)
            case refuse
            case connect
        }
        let now = NIODeadline.now()
        let next: Next = self.slots.withLockedValue { slots in
            if let c = slots[slot].channel, c.isActive { return .ready(c) }
            slots[slot].channel = nil
            if let f = slots[slot].connecting { return .wait(f) }
            if let last = slots[slot].lastAttempt, now - last < .seconds(1) { return .refuse }
            slots[slot].lastAttempt = now
            return .connect
        }
        switch next {
        case .ready(let c): return loop.makeSucceededFuture(c)
        case .wait(let f): return f
        case .refuse: return loop.makeFailedFuture(RedisError("not connected (Redis at \(self.host):\(self.port) was unreachable)"))
        case .connect: break
        }
        let future = ClientBootstrap(group: loop)
            .connectTimeout(self.timeout * 4)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(RedisHandler()) }
            }
            .connect(host: self.host, port: self.port)
            .flatMap { channel -> EventLoopFuture<any Channel> in
                guard let password = self.password else { return channel.eventLoop.makeSucceededFuture(channel) }
                let promise = channel.eventLoop.makePromise(of: RESPValue.self)
                channel.writeAndFlush((command: [Array("AUTH".utf8), Array(password.utf8)], promise: promise), promise: nil)
                return promise.futureResult.flatMapThrowing { value in
                    if case .error(let m) = value {
                        channel.close(promise: nil)
                        throw RedisError("AUTH failed: \(m)")
                    }
                    return channel
                }
            }
        self.slots.withLockedValue { $0[slot].connecting = future }
        future.whenComplete { result in
            self.slots.withLockedValue { slots in
                slots[slot].connecting = nil
                if case .success(let c) = result { slots[slot].channel = c }
            }
        }
        return future
    }

    public func close() {
        let channels = self.slots.withLockedValue { slots in slots.compactMap { $0.channel } }
        for c in channels { c.close(promise: nil) }
    }
}
