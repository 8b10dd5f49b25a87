import Access
import Admin
import CacheRouteRuntime
import CacheRouteTestSupport
import DataPlane
import FastJSON
import Foundation
import HTTPTransport
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import ReplicaEmulator
import RouterConfig
import RoutingCore
import Telemetry
import Testing

/// Client keys, the admin token, tenants: who may send, what reaches the replicas, what each
/// tenant may use.
@Suite(.serialized)
struct AuthTests {
    static let keysYAML = """
        - {key: sk-acme-0123456789, tenant: acme}
        - {key: sk-beta-0123456789, tenant: beta}
        - key: sk-noisy-0123456789
          tenant: noisy
        """

    /// A temporary directory with the keys file, an admin token and a replica key.
    static func files() throws -> (dir: String, keys: String, admin: String, replicaKey: String) {
        let dir = NSTemporaryDirectory() + "cacheroute-auth-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Self.keysYAML.write(toFile: dir + "/keys.yaml", atomically: true, encoding: .utf8)
        try "admin-token-s3cret\n".write(toFile: dir + "/admin.token", atomically: true, encoding: .utf8)
        try "replica-key-42\n".write(toFile: dir + "/replica.key", atomically: true, encoding: .utf8)
        return (dir, dir + "/keys.yaml", dir + "/admin.token", dir + "/replica.key")
    }

    /// With keys on: 10,000 requests with wrong, missing or malformed keys, over keep-alive
    /// connections, are all 401 in the API's own shape, none reaches the replica, and no key
    /// (good or bad) appears in any log line.
    @Test func badKeysAreRefusedAndNothingReachesAReplica() async throws {
        let f = try Self.files()
        defer { try? FileManager.default.removeItem(atPath: f.dir) }
        let replica = RecordingReplica(response: "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        let server = try await LoopbackServer.start { RecordingReplica.Handler(replica) }
        let records = NIOLockedValueBox<[(message: String, metadata: Logger.Metadata)]>([])
        let capture = Logger(label: "cacheroute.test") { _ in CapturingLogHandler(records: records) }
        var c = testConfiguration([ReplicaSpec(name: "rec", url: "http://127.0.0.1:\(server.port)")])
        c.auth.apiKeysFile = f.keys
        c.logging.accessLog = true
        let router = try await RouterRuntime.start(config: c, configPath: nil, logger: capture, accessLogger: capture)
        do {
            let body = chatBody(session: 3)
            let bad = [
                "authorization: Bearer sk-acme-012345678\r\n", "authorization: Bearer sk-acme-01234567890\r\n", "authorization: Basic c2stYWNtZQ==\r\n",
                "authorization: Bearer\r\n", "authorization: sk-acme-0123456789\r\n", "x-api-key: sk-wrong-0123456789\r\n", "x-api-key: \r\n",
                "authorization: bearer  \r\n", "", "x-other-key: sk-acme-0123456789\r\n",
                // A wrong Authorization is not rescued by a right x-api-key.
                "authorization: Bearer wrong\r\nx-api-key: sk-acme-0123456789\r\n",
            ]
            let total = 10_000
            let batch = 50
            // Pipelined, 50 requests per connection: the router answers them in order.
            let counts = try await withThrowingTaskGroup(of: [Int: Int].self) { group in
                for worker in 0..<4 {
                    group.addTask {
                        var counts: [Int: Int] = [:]
                        for first in stride(from: worker * batch, to: total, by: 4 * batch) {
                            let connection = try await RawConnection.connect(port: router.proxy.port)
                            var requests = ""
                            var paths: [String] = []
                            for i in first..<(first + batch) {
                                let path = i % 7 == 0 ? "/v1/messages" : "/v1/chat/completions"
                                paths.append(path)
                                requests += "POST \(path) HTTP/1.1\r\nhost: r\r\ncontent-type: application/json\r\n\(bad[i % bad.count])"
                                    + "content-length: \(body.utf8.count)\r\n\r\n\(body)"
                            }
                            try await connection.send(requests)
                            let text = try await connection.wait(timeout: 20) { $0.components(separatedBy: "HTTP/1.1 ").count - 1 == batch && $0.hasSuffix("}") }
                            await connection.close()
                            let answers = text.components(separatedBy: "HTTP/1.1 ").dropFirst()
                            #expect(answers.count == batch)
                            for (answer, path) in zip(answers, paths) {
                                counts[Int(answer.prefix(3)) ?? 0, default: 0] += 1
                                guard first < 200, let start = answer.range(of: "\r\n\r\n") else { continue }
                                // OpenAI's shape on chat, Anthropic's on Messages.
                                let json = try JSONValue.parse(Array(answer[start.upperBound...].utf8))
                                if path == "/v1/messages" {
                                    #expect(json["error"]?["type"] == .string("authentication_error"), "\(answer)")
                                } else {
                                    #expect(json["error"]?["code"] == .string("invalid_api_key"), "\(answer)")
                                }
                            }
                        }
                        return counts
                    }
                }
                return try await group.reduce(into: [Int: Int]()) { all, c in all.merge(c, uniquingKeysWith: +) }
            }
            #expect(counts == [401: total], "\(counts)")
            #expect(replica.requests.withLockedValue { $0.count } == 0, "a request without a valid key reached the replica")
            // One good key goes through, for contrast.
            let ok = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", body, headers: ["authorization": "Bearer sk-acme-0123456789"])
            #expect(ok.status == .ok && replica.requests.withLockedValue { $0.count } == 1)
            // /health stays open for load balancers.
            #expect(try await TestSupport.get(router.proxy.port, "/health").status == .ok)
            let metrics = String(decoding: router.metrics.render(), as: UTF8.self)
            #expect(metrics.contains(#"cacheroute_tenant_requests_total{tenant="unauthenticated",status="401"} 10000"#))
        } catch {
            Issue.record(error)
        }
        await router.stop()
        await server.stop()
        let lines = records.withLockedValue { $0 }
        #expect(lines.count > 10_000)
        for (message, metadata) in lines {
            let text = message + metadata.values.map(\.description).joined()
            #expect(!text.contains("sk-") && !text.contains("c2stYWNtZQ"), "a key in the log: \(text)")
        }
    }

    /// The client's key stops at the router; the replicas get their own key. With
    /// `forward_client_key` the client's goes on instead.
    @Test func theClientKeyStaysAndTheReplicaKeyIsSent() async throws {
        let f = try Self.files()
        defer { try? FileManager.default.removeItem(atPath: f.dir) }
        let replica = RecordingReplica(response: "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        let server = try await LoopbackServer.start { RecordingReplica.Handler(replica) }
        var c = testConfiguration([ReplicaSpec(name: "rec", url: "http://127.0.0.1:\(server.port)")])
        c.auth.apiKeysFile = f.keys
        c.upstream.apiKeyFile = f.replicaKey
        let router = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
        let body = chatBody(session: 1)
        #expect(try await TestSupport.post(router.proxy.port, "/v1/chat/completions", body, headers: ["authorization": "Bearer sk-acme-0123456789"]).status == .ok)
        #expect(try await TestSupport.post(router.proxy.port, "/v1/messages", body, headers: ["x-api-key": "sk-beta-0123456789"]).status == .ok)
        await router.stop()
        var seen = replica.requests.withLockedValue { $0 }
        #expect(seen.count == 2)
        for request in seen {
            #expect(request.values("authorization") == ["Bearer replica-key-42"], "\(request.head)")
            #expect(request.values("x-api-key").isEmpty, "\(request.head)")
        }

        // Forwarded as configured (and no replica key of its own: the client's Authorization goes as sent).
        c.upstream.apiKeyFile = nil
        c.auth.forwardClientKey = true
        let forwarding = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
        #expect(try await TestSupport.post(forwarding.proxy.port, "/v1/messages", body, headers: ["x-api-key": "sk-beta-0123456789"]).status == .ok)
        await forwarding.stop()
        seen = replica.requests.withLockedValue { $0 }
        #expect(seen.last?.values("x-api-key") == ["sk-beta-0123456789"])
        await server.stop()
    }

    /// `/admin/*` needs the admin token; `/metrics` too when configured; health checks never.
    @Test func theAdminPlaneNeedsItsToken() async throws {
        let f = try Self.files()
        defer { try? FileManager.default.removeItem(atPath: f.dir) }
        try await TestSupport.withEmulators(1) { servers in
            var c = testConfiguration([ReplicaSpec(name: "r1", url: "http://127.0.0.1:\(servers[0].port)")])
            c.auth.adminTokenFile = f.admin
            var router = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
            var port = router.admin!.port
            func get(_ path: String, _ token: String?) async throws -> Int {
                var request = HTTPClientRequest(host: "127.0.0.1", port: port, path: path)
                if let token { request.headers.add(name: "authorization", value: "Bearer \(token)") }
                return Int(try await TestSupport.client.execute(request, timeout: 5).status.code)
            }
            #expect(try await get("/admin/replicas", nil) == 401)
            #expect(try await get("/admin/replicas", "admin-token-s3cre") == 401)
            #expect(try await get("/admin/replicas", "admin-token-s3cret") == 200)
            // /admin/explain has its own body limit (limits.max_explain_body_bytes, 1 MiB).
            func explain(_ body: String) async throws -> Int {
                let request = HTTPClientRequest.post(
                    host: "127.0.0.1", port: port, path: "/admin/explain", json: Array(body.utf8), headers: ["authorization": "Bearer admin-token-s3cret"])
                return Int(try await TestSupport.client.execute(request, timeout: 10).status.code)
            }
            #expect(try await explain(chatBody(session: 1)) == 200)
            let big = #"{"model":"m","messages":[{"role":"user","content":""# + String(repeating: "x", count: 2 << 20) + #""}]}"#
            #expect(try await explain(big) == 413)
            #expect(try await explain(chatBody(session: 2)) == 200, "the connection's next request is read normally")
            #expect(try await get("/metrics", nil) == 200)
            #expect(try await get("/healthz", nil) == 200)
            await router.stop()
            c.auth.protectMetrics = true
            router = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
            port = router.admin!.port
            #expect(try await get("/metrics", nil) == 401)
            #expect(try await get("/metrics", "admin-token-s3cret") == 200)
            #expect(try await get("/healthz", nil) == 200)
            #expect(try await get("/readyz", nil) != 401)
            await router.stop()
        }
    }

    /// With `cache_salt: replace`, two tenants sending the same long prompt share nothing in the
    /// replica's prefix cache (its own usage counters say so), while each tenant hits its own.
    /// `refuse` turns away a request that brings its own salt.
    @Test func tenantsDoNotShareCacheEntries() async throws {
        let f = try Self.files()
        defer { try? FileManager.default.removeItem(atPath: f.dir) }
        try await TestSupport.withEmulators(1) { servers in
            var c = testConfiguration([ReplicaSpec(name: "r1", url: "http://127.0.0.1:\(servers[0].port)")])
            c.auth.apiKeysFile = f.keys
            c.tenants.cacheSalt = .replace
            var router = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
            func cached(_ key: String, salt: String? = nil) async throws -> (status: Int, prompt: Int, cached: Int) {
                var body = chatBody(session: 9)
                if let salt { body = String(body.dropLast()) + #","cache_salt":"\#(salt)"}"# }
                let r = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", body, headers: ["x-api-key": key])
                let json = try? JSONValue.parse(r.bodyBytes)
                let usage = json?["usage"]
                return (
                    Int(r.status.code), Int(usage?["prompt_tokens"]?.intValue ?? 0), Int(usage?["prompt_tokens_details"]?["cached_tokens"]?.intValue ?? 0)
                )
            }
            let a1 = try await cached("sk-acme-0123456789")
            let a2 = try await cached("sk-acme-0123456789")
            let b1 = try await cached("sk-beta-0123456789")
            let b2 = try await cached("sk-beta-0123456789")
            // A salt of the client's own is overridden: acme's request still hits acme's entries.
            let a3 = try await cached("sk-acme-0123456789", salt: "beta-guess")
            #expect(a1.status == 200 && a1.cached == 0 && a1.prompt > 500, "\(a1)")
            #expect(a2.cached >= a2.prompt - 32, "within a tenant: a full hit")
            #expect(b1.cached == 0, "across tenants: nothing cached")
            #expect(b2.cached >= b2.prompt - 32 && a3.cached >= a3.prompt - 32)
            await router.stop()

            c.tenants.cacheSalt = .refuse
            router = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
            #expect(try await cached("sk-acme-0123456789", salt: "mine").status == 400)
            #expect(try await cached("sk-acme-0123456789").status == 200)
            await router.stop()
        }
    }

    /// A tenant over its limit gets 429 with Retry-After; another tenant's requests through the
    /// same router all pass. Tenant labels on the metrics are the configured tenants and `other`.
    @Test func aTenantOverItsLimitIsRefusedAndOthersAreNot() async throws {
        let f = try Self.files()
        defer { try? FileManager.default.removeItem(atPath: f.dir) }
        try await TestSupport.withEmulators(2) { servers in
            var c = testConfiguration(servers.map { ReplicaSpec(name: $0.replica.settings.name, url: "http://127.0.0.1:\($0.port)") })
            c.tenants.limits["noisy"] = TenantLimit(requestsPerSecond: 2, burstSeconds: 1)
            c.tenants.limits["tokens"] = TenantLimit(promptTokensPerSecond: 1000, burstSeconds: 1)
            // Without keys, the tenant header names the tenant.
            let router = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
            let port = router.proxy.port
            var noisy: [Int: Int] = [:]
            var quiet: [Int: Int] = [:]
            var retryAfter: [String] = []
            let started = ContinuousClock.now
            for i in 0..<60 {
                let n = try await TestSupport.post(port, "/v1/chat/completions", chatBody(session: i), headers: ["x-tenant": "noisy"])
                noisy[Int(n.status.code), default: 0] += 1
                if n.status == .tooManyRequests { retryAfter += n.headers["retry-after"] }
                let q = try await TestSupport.post(port, "/v1/chat/completions", chatBody(session: i), headers: ["x-tenant": "quiet-\(i)"])
                quiet[Int(q.status.code), default: 0] += 1
            }
            let elapsed = Double((ContinuousClock.now - started).components.seconds) + 1
            #expect(quiet == [200: 60])
            // A bucket of 2 (1 s of 2 req/s), refilled at 2 per second while the loop ran.
            #expect((noisy[200] ?? 0) >= 2 && Double(noisy[200] ?? 0) <= 2 + 2 * elapsed, "\(noisy) in \(elapsed) s")
            #expect((noisy[200] ?? 0) + (noisy[429] ?? 0) == 60)
            #expect(!retryAfter.isEmpty && retryAfter.allSatisfy { Int($0).map { $0 >= 1 } ?? false })
            // Prompt tokens: the system prompt alone is ~600 tokens, so the second in a row is over.
            let t1 = try await TestSupport.post(port, "/v1/messages", chatBody(session: 1), headers: ["x-tenant": "tokens"])
            let t2 = try await TestSupport.post(port, "/v1/messages", chatBody(session: 2), headers: ["x-tenant": "tokens"])
            #expect(t1.status == .ok && t2.status == .tooManyRequests)
            let t2json = try JSONValue.parse(t2.bodyBytes)
            #expect(t2json["error"]?["type"] == .string("rate_limit_error"), "Anthropic's shape on Messages: \(t2.bodyText)")
            let metrics = String(decoding: router.metrics.render(), as: UTF8.self)
            let labels = Set(metrics.split(separator: "\n").filter { $0.hasPrefix("cacheroute_tenant_requests_total{") }.compactMap { line in
                line.split(separator: "\"").dropFirst().first.map(String.init)
            })
            #expect(labels == ["noisy", "other", "tokens"], "bounded: 60 quiet tenants are one label")
            if let (status, output) = try await TestSupport.promtool(metrics) { #expect(status == 0, "\(output)") }
            await router.stop()
        }
    }

    /// A keys file is read again with the configuration: a new key works after the reload, a
    /// removed one stops; a broken file is rejected and the old keys keep working.
    @Test func keysReloadWithTheConfiguration() async throws {
        let f = try Self.files()
        defer { try? FileManager.default.removeItem(atPath: f.dir) }
        try await TestSupport.withEmulators(1) { servers in
            let path = f.dir + "/router.yaml"
            try """
                listen: 127.0.0.1:0
                admin_listen: 127.0.0.1:0
                reload: {watch_file: false}
                auth: {api_keys_file: \(f.keys)}
                replicas: [{name: r1, url: 'http://127.0.0.1:\(servers[0].port)'}]
                """.write(toFile: path, atomically: true, encoding: .utf8)
            let router = try await RouterRuntime.start(config: try RouterConfiguration.load(path: path), configPath: path, logger: TestSupport.logger)
            func status(_ key: String) async throws -> Int {
                Int(try await TestSupport.post(router.proxy.port, "/v1/chat/completions", chatBody(session: 1), headers: ["x-api-key": key]).status.code)
            }
            #expect(try await status("sk-acme-0123456789") == 200)
            #expect(try await status("sk-new-key") == 401)
            try "- {key: sk-new-key, tenant: acme}\n".write(toFile: f.keys, atomically: true, encoding: .utf8)
            #expect(router.reload?.reload(reason: "test") == true)
            #expect(try await status("sk-acme-0123456789") == 401)
            #expect(try await status("sk-new-key") == 200)
            try "- {key: sk-other, tenant: }\n".write(toFile: f.keys, atomically: true, encoding: .utf8)
            #expect(router.reload?.reload(reason: "test") == false)
            #expect(try await status("sk-new-key") == 200)
            await router.stop()
        }
    }
}
