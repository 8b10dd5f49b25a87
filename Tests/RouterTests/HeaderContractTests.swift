import CacheRouteTestSupport
import Foundation
import HTTPTransport
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import RouterConfig
import Admin
import CacheRouteRuntime
import DataPlane
import Discovery
import FleetState
import ReplicaProbes
import Telemetry
import RoutingCore
import Testing

/// A TCP server on 127.0.0.1 (any free port) for replicas written inside tests.
final class LoopbackServer: Sendable {
    let channel: any Channel

    init(channel: any Channel) {
        self.channel = channel
    }

    var port: Int { self.channel.localAddress?.port ?? 0 }

    /// `makeHandler` makes each accepted connection's handler (on its event loop).
    static func start(_ makeHandler: @escaping @Sendable () -> any ChannelHandler) async throws -> LoopbackServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(makeHandler()) }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return LoopbackServer(channel: channel)
    }

    func stop() async {
        try? await self.channel.close()
    }
}

/// A replica (served by `LoopbackServer` with its `Handler`) that records every request exactly
/// as it arrived (head text and body bytes) and answers `POST` with `response` (keep-alive),
/// `GET /health` with 200, anything else 404. Counts the connections it accepted.
final class RecordingReplica: Sendable {
    struct Request: Sendable {
        var head: String
        var body: [UInt8]

        /// The values of a field, by case-insensitive name, in order.
        func values(_ name: String) -> [String] {
            self.head.split(separator: "\r\n").dropFirst().compactMap { line in
                guard let colon = line.firstIndex(of: ":"), line[..<colon].lowercased() == name else { return nil }
                return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
    }

    let response: String
    let requests = NIOLockedValueBox<[Request]>([])
    let connections = NIOLockedValueBox(0)

    init(response: String) {
        self.response = response
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let replica: RecordingReplica
        var pending: [UInt8] = []

        init(_ replica: RecordingReplica) {
            self.replica = replica
        }

        func channelActive(context: ChannelHandlerContext) {
            self.replica.connections.withLockedValue { $0 += 1 }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.pending += Self.unwrapInboundIn(data).readableBytesView
            while let end = self.pending.firstRange(of: Array("\r\n\r\n".utf8)) {
                let head = String(decoding: self.pending[..<end.lowerBound], as: UTF8.self)
                var request = Request(head: head, body: [])
                let length = request.values("content-length").first.flatMap { Int($0) } ?? 0
                guard self.pending.count >= end.upperBound + length else { return }
                request.body = Array(self.pending[end.upperBound..<(end.upperBound + length)])
                self.pending.removeFirst(end.upperBound + length)
                let answer: String
                if head.hasPrefix("POST ") {
                    self.replica.requests.withLockedValue { $0.append(request) }
                    answer = self.replica.response
                } else {
                    answer = "HTTP/1.1 \(head.hasPrefix("GET /health ") ? "200 OK" : "404 Not Found")\r\ncontent-length: 0\r\n\r\n"
                }
                context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: answer)), promise: nil)
            }
        }
    }
}

@Suite(.serialized)
struct HeaderContractTests {
    @Test func headersCrossAsAProxyShouldAndConnectionsAreReused() async throws {
        let body = #"{"ok":true}"#
        let replica = RecordingReplica(
            response: "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n"
                + "connection: keep-alive, x-hop\r\nkeep-alive: timeout=5\r\nx-hop: secret\r\nx-end-to-end: kept\r\n\r\n\(body)"
        )
        let server = try await LoopbackServer.start { RecordingReplica.Handler(replica) }
        var config = testConfiguration([ReplicaSpec(name: "rec", url: "http://127.0.0.1:\(server.port)")])
        // The test client is a trusted proxy here: its forwarding fields are kept and extended.
        config.trustedProxies = [AddressRange("127.0.0.0/8")!]
        let router = try await RouterRuntime.start(config: config, configPath: nil, logger: TestSupport.logger)
        do {
            let prompt = chatBody(session: 5)
            // Raw bytes: an HTTP client would set Connection itself.
            let request = "POST /v1/chat/completions HTTP/1.1\r\nhost: router\r\ncontent-type: application/json\r\n"
                + "content-length: \(prompt.utf8.count)\r\nx-forwarded-for: 10.1.2.3\r\nconnection: keep-alive, x-client-hop\r\n"
                + "x-client-hop: secret\r\nte: trailers\r\nproxy-connection: keep-alive\r\nx-custom: kept\r\n"
                + "x-multi: a\r\nx-multi: b\r\n\r\n" + prompt
            for _ in 0..<20 {
                let client = try await RawConnection.connect(port: router.proxy.port)
                try await client.send(request)
                let text = try await client.wait { $0.hasSuffix(body) }
                await client.close()
                #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n") && text.hasSuffix(body))
                // Hop-by-hop fields of the replica's answer (and those its Connection names) stop here.
                let head = text.lowercased()
                #expect(!head.contains("x-hop") && !head.contains("keep-alive: timeout"), "\(text)")
                #expect(head.contains("\r\nx-end-to-end: kept\r\n"))
            }
            let seen = replica.requests.withLockedValue { $0 }
            #expect(seen.count == 20)
            let first = try #require(seen.first)
            #expect(first.body == Array(prompt.utf8), "the body is forwarded as the same bytes")
            #expect(first.values("host") == ["127.0.0.1:\(server.port)"])
            #expect(first.values("x-forwarded-for") == ["10.1.2.3, 127.0.0.1"])
            #expect(first.values("x-forwarded-proto") == ["http"])
            #expect(first.values("content-length") == ["\(prompt.utf8.count)"])
            #expect(first.values("x-custom") == ["kept"] && first.values("x-multi") == ["a", "b"])
            #expect(first.values("x-request-id").count == 1)
            for hop in ["connection", "x-client-hop", "te", "proxy-connection", "keep-alive", "transfer-encoding"] {
                #expect(first.values(hop).isEmpty, "\(hop) crossed to the replica")
            }
            // Pooled keep-alive connections: 20 requests, at most one connection per event loop.
            let loops = MultiThreadedEventLoopGroup.singleton.makeIterator().reduce(0) { n, _ in n + 1 }
            #expect(replica.connections.withLockedValue { $0 } <= loops + 1)
        } catch {
            Issue.record(error)
        }
        await router.stop()
        await server.stop()
    }

    /// From a client that is not a trusted proxy, X-Forwarded-For, X-Forwarded-Proto and Forwarded
    /// are what the router saw, whatever the client wrote; an absolute-form target reaches the
    /// replica in origin form; dot-segments are refused before anything is forwarded.
    @Test func untrustedForwardingFieldsAreReplacedAndTargetsAreOriginForm() async throws {
        let body = #"{"ok":true}"#
        let replica = RecordingReplica(response: "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)")
        let server = try await LoopbackServer.start { RecordingReplica.Handler(replica) }
        var config = testConfiguration([ReplicaSpec(name: "rec", url: "http://127.0.0.1:\(server.port)")])
        config.trustedProxies = [AddressRange("10.0.0.0/8")!, AddressRange("fd00::/8")!]
        let router = try await RouterRuntime.start(config: config, configPath: nil, logger: TestSupport.logger)
        let prompt = chatBody(session: 6)
        func send(_ target: String) async throws -> String {
            let client = try await RawConnection.connect(port: router.proxy.port)
            try await client.send(
                "POST \(target) HTTP/1.1\r\nhost: router\r\ncontent-type: application/json\r\ncontent-length: \(prompt.utf8.count)\r\n"
                    + "x-forwarded-for: 6.6.6.6\r\nx-forwarded-proto: https\r\nforwarded: for=6.6.6.6;proto=https\r\n\r\n" + prompt)
            let text = try await client.wait { $0.hasSuffix("}") }
            await client.close()
            return text
        }
        #expect(try await send("http://router.example/v1/chat/completions").hasPrefix("HTTP/1.1 200 OK"))
        #expect(try await send("/v1/../admin/replicas").hasPrefix("HTTP/1.1 400"))
        await router.stop()
        await server.stop()
        let seen = replica.requests.withLockedValue { $0 }
        #expect(seen.count == 1, "the dot-segment request reached no replica")
        let first = try #require(seen.first)
        #expect(first.head.hasPrefix("POST /v1/chat/completions HTTP/1.1\r\n"))
        #expect(first.values("x-forwarded-for") == ["127.0.0.1"])
        #expect(first.values("x-forwarded-proto") == ["http"])
        #expect(first.values("forwarded").isEmpty)
    }
}
