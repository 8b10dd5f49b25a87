import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A small stub resolver: asks one DNS server over UDP (retrying once), and over TCP when the
/// answer was truncated (large SRV sets). Enough for discovery of a headless Service; it does
/// not walk search domains, so names are fully qualified.
public struct DNSResolver: Sendable {
    public var host: String
    public var port: Int
    public var timeout: Double
    let group: any EventLoopGroup

    public init(host: String, port: Int = 53, timeout: Double = 2, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.host = host
        self.port = port
        self.timeout = timeout
        self.group = group
    }

    /// The resolver of `/etc/resolv.conf` (its first `nameserver`), else 127.0.0.1.
    public static func system() -> DNSResolver {
        DNSResolver(host: Self.systemNameserver() ?? "127.0.0.1")
    }

    static func systemNameserver(path: String = "/etc/resolv.conf") -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let text = String(cString: line).split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" })
            if text.count >= 2, text[0] == "nameserver" { return String(text[1]) }
        }
        return nil
    }

    /// Parses `host:port` or `[v6]:port` (port 53 when absent).
    public static func server(_ text: String) -> (host: String, port: Int)? {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if rest.isEmpty { return (host, 53) }
            guard rest.hasPrefix(":"), let port = Int(rest.dropFirst()), (1...65535).contains(port) else { return nil }
            return (host, port)
        }
        let parts = text.split(separator: ":")
        switch parts.count {
        case 1: return (String(parts[0]), 53)
        case 2:
            guard let port = Int(parts[1]), (1...65535).contains(port) else { return nil }
            return (String(parts[0]), port)
        default: return (text, 53)  // a bare IPv6 address
        }
    }

    public func query(_ name: String, _ type: DNSRecordType) async throws -> DNSResponse {
        let id = UInt16.random(in: 0...UInt16.max)
        let message = try DNSMessage.query(id: id, name: name, type: type)
        var lastError: any Error = DNSError("no answer from \(self.host):\(self.port)")
        for _ in 0..<2 {
            do {
                let response = try await self.udp(message, id: id)
                if response.truncated { return try await self.tcp(message, id: id) }
                return response
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    func udp(_ message: [UInt8], id: UInt16) async throws -> DNSResponse {
        let address = try SocketAddress.makeAddressResolvingHost(self.host, port: self.port)
        let promise = self.group.any().makePromise(of: [UInt8].self)
        let bindHost = address.protocol == .inet6 ? "::" : "0.0.0.0"
        let channel = try await DatagramBootstrap(group: self.group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(DatagramCollector(id: id, promise: promise)) }
            }
            .bind(host: bindHost, port: 0)
            .get()
        defer { channel.close(promise: nil) }
        let timeout = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(self.timeout * 1e9))) {
            promise.fail(DNSError("no answer from \(self.host):\(self.port) within \(self.timeout) s"))
        }
        defer { timeout.cancel() }
        try await channel.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: ByteBuffer(bytes: message))).get()
        return try DNSMessage.parse(try await promise.futureResult.get())
    }

    func tcp(_ message: [UInt8], id: UInt16) async throws -> DNSResponse {
        let promise = self.group.any().makePromise(of: [UInt8].self)
        let channel = try await ClientBootstrap(group: self.group)
            .connectTimeout(.nanoseconds(Int64(self.timeout * 1e9)))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(StreamCollector(promise: promise)) }
            }
            .connect(host: self.host, port: self.port)
            .get()
        defer { channel.close(promise: nil) }
        let timeout = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(self.timeout * 1e9))) {
            promise.fail(DNSError("no TCP answer from \(self.host):\(self.port) within \(self.timeout) s"))
        }
        defer { timeout.cancel() }
        var framed = ByteBuffer()
        framed.writeInteger(UInt16(message.count))
        framed.writeBytes(message)
        try await channel.writeAndFlush(framed).get()
        let response = try DNSMessage.parse(try await promise.futureResult.get())
        guard response.id == id else { throw DNSError("DNS answer for another query") }
        return response
    }
}

/// Takes the first datagram answering query `id`.
final class DatagramCollector: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let id: UInt16
    let promise: EventLoopPromise<[UInt8]>

    init(id: UInt16, promise: EventLoopPromise<[UInt8]>) {
        self.id = id
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = Array(Self.unwrapInboundIn(data).data.readableBytesView)
        guard bytes.count >= 2, UInt16(bytes[0]) << 8 | UInt16(bytes[1]) == self.id else { return }
        self.promise.succeed(bytes)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.promise.fail(error)
    }
}

/// Reads one length-prefixed DNS message from a TCP stream.
final class StreamCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let promise: EventLoopPromise<[UInt8]>
    var buffer = ByteBuffer()

    init(promise: EventLoopPromise<[UInt8]>) {
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = Self.unwrapInboundIn(data)
        self.buffer.writeBuffer(&chunk)
        guard let length = self.buffer.getInteger(at: self.buffer.readerIndex, as: UInt16.self),
            self.buffer.readableBytes >= 2 + Int(length)
        else { return }
        self.buffer.moveReaderIndex(forwardBy: 2)
        self.promise.succeed(self.buffer.readBytes(length: Int(length)) ?? [])
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.promise.fail(DNSError("DNS server closed the connection"))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.promise.fail(error)
    }
}
