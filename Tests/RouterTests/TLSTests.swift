import Access
import Admin
import DataPlane
import Telemetry
import CacheRouteRuntime
import CacheRouteTestSupport
import FastJSON
import Foundation
import HTTPTransport
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import ReplicaEmulator
import ReplicaProbes
import RouterConfig
import RoutingCore
import Testing

/// TLS on both sides, with certificates `openssl` makes at test time (skipped without openssl).
@Suite(.serialized)
struct TLSTests {
    /// Emulated replicas serving HTTPS with `certificates`, names r1...rN.
    static func tlsEmulators(_ count: Int, cert: String, key: String) async throws -> [EmulatorServer] {
        var servers: [EmulatorServer] = []
        for i in 0..<count {
            var settings = EmulatorSettings()
            settings.name = "r\(i + 1)"
            settings.instant = true
            servers.append(try await EmulatorServer.start(settings: settings, port: 0, tls: try ServerTLS(ServerTLSFiles(certFile: cert, keyFile: key)), logger: TestSupport.logger))
        }
        return servers
    }

    static func post(_ port: Int, tls: ClientTLS, host: String = "localhost", headers: HTTPHeaders = [:], _ body: String = chatBody(session: 1)) async throws -> HTTPClientResponse {
        var request = HTTPClientRequest.post(host: host, port: port, path: "/v1/chat/completions", json: Array(body.utf8), headers: headers)
        request.tls = tls
        return try await TestSupport.client.execute(request, timeout: 10)
    }

    /// `openssl s_client` against `port` with `arguments`; the output (nil without openssl).
    static func sClient(_ port: Int, _ arguments: [String]) async throws -> String? {
        guard let openssl = TestSupport.which("openssl") else { return nil }
        return try await TestSupport.run(openssl, ["s_client", "-connect", "127.0.0.1:\(port)"] + arguments, input: "", timeout: 20).output
    }

    /// The serial of the certificate the listener on `port` presents now (hex, as openssl prints it).
    static func servedSerial(_ port: Int, ca: String) async throws -> String? {
        guard let output = try await Self.sClient(port, ["-CAfile", ca, "-showcerts"]),
            let begin = output.range(of: "-----BEGIN CERTIFICATE-----"), let end = output.range(of: "-----END CERTIFICATE-----", range: begin.upperBound..<output.endIndex),
            let openssl = TestSupport.which("openssl")
        else { return nil }
        let pem = String(output[begin.lowerBound..<end.upperBound]) + "\n"
        let x509 = try await TestSupport.run(openssl, ["x509", "-noout", "-serial"], input: pem)
        return x509.output.split(separator: "=").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
    }

    @Test func tlsToClientsAndToReplicasWithVerifiedCertificates() async throws {
        guard let certs = try await TestCertificates.make() else { return }
        defer { certs.remove() }
        let servers = try await Self.tlsEmulators(2, cert: certs.certFile, key: certs.keyFile)
        // One replica by address (verified against the certificate's IP entry, no SNI), one by name.
        var c = testConfiguration([
            ReplicaSpec(name: "r1", url: "https://127.0.0.1:\(servers[0].port)"), ReplicaSpec(name: "r2", url: "https://localhost:\(servers[1].port)"),
        ])
        c.upstream.tls.caFile = certs.caFile
        c.tls = ServerTLSFiles(certFile: certs.certFile, keyFile: certs.keyFile)
        c.adminTLS = ServerTLSFiles(certFile: certs.certFile, keyFile: certs.keyFile)
        let router = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
        do {
            let client = try ClientTLS(ClientTLSSettings(caFile: certs.caFile))
            var replicas = Set<String>()
            for session in 0..<24 {
                // No shared instructions: sessions spread over the ring.
                let body = #"{"model":"cacheroute-demo","max_tokens":2,"messages":[{"role":"user","content":"question \#(session)"}]}"#
                let r = try await Self.post(router.proxy.port, tls: client, body)
                #expect(r.status == .ok, "\(r.bodyText)")
                replicas.formUnion(r.headers["x-cacheroute-replica"])
            }
            #expect(replicas == ["r1", "r2"], "both https replicas served")
            // The probes use the same transport: both replicas are up, with metrics scraped.
            var admin = HTTPClientRequest(host: "127.0.0.1", port: router.admin!.port, path: "/admin/replicas", tls: client)
            admin.headers.add(name: "host", value: "localhost")
            let report = try JSONValue.parse(try await TestSupport.client.execute(admin, timeout: 5).bodyBytes)
            for replica in report["replicas"]?.arrayValue ?? [] {
                #expect(replica["routable"] == .bool(true) && replica["last_probe_error"] == .null, "\(replica)")
            }
            // Plain HTTP to a TLS listener gets no answer; a client that does not trust the CA is refused.
            #expect(await (try? TestSupport.get(router.proxy.port, "/health", timeout: 2)) == nil)
            let stranger = try ClientTLS(ClientTLSSettings())
            #expect(await (try? Self.post(router.proxy.port, tls: stranger)) == nil)

            if let old = try await Self.sClient(router.proxy.port, ["-tls1_1"]),
                let v12 = try await Self.sClient(router.proxy.port, ["-tls1_2", "-CAfile", certs.caFile, "-alpn", "http/1.1"]),
                let v13 = try await Self.sClient(router.proxy.port, ["-tls1_3", "-CAfile", certs.caFile])
            {
                // Below TLS 1.2: refused in the handshake. 1.2 with an ECDHE AEAD suite and ALPN http/1.1; 1.3.
                #expect(old.contains("alert protocol version") || old.contains("no protocols available") || old.contains("unsupported protocol"), "\(old)")
                #expect(v12.contains("Protocol  : TLSv1.2") || v12.contains("TLSv1.2"), "\(v12)")
                #expect(v12.contains("ECDHE") && (v12.contains("GCM") || v12.contains("CHACHA20")), "\(v12)")
                #expect(v12.contains("ALPN protocol: http/1.1") && v12.contains("Verify return code: 0 (ok)"), "\(v12)")
                #expect(v13.contains("TLSv1.3") && v13.contains("Verify return code: 0 (ok)"), "\(v13)")
            }
        } catch {
            Issue.record(error)
        }
        await router.stop()
        for s in servers { await s.stop() }
    }

    @Test func aReplicaWithAnUntrustedCertificateIsRefusedAndReported() async throws {
        guard let certs = try await TestCertificates.make() else { return }
        defer { certs.remove() }
        let rogue = try await certs.untrusted()
        let trusted = try await Self.tlsEmulators(1, cert: certs.certFile, key: certs.keyFile)
        let untrusted = try await Self.tlsEmulators(1, cert: rogue.cert, key: rogue.key)
        var c = testConfiguration([
            ReplicaSpec(name: "good", url: "https://127.0.0.1:\(trusted[0].port)"), ReplicaSpec(name: "rogue", url: "https://127.0.0.1:\(untrusted[0].port)"),
        ])
        c.upstream.tls.caFile = certs.caFile
        c.health.interval = 0.1
        c.health.thresholds.failureThreshold = 1
        let router = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
        let probes = Task { try? await router.probes.run() }
        do {
            // Until the probes mark it down, requests routed to it fail over to the good replica.
            for session in 0..<20 {
                let r = try await TestSupport.post(router.proxy.port, "/v1/chat/completions", chatBody(session: session))
                #expect(r.status == .ok && r.headers["x-cacheroute-replica"] == ["good"], "\(r.bodyText)")
            }
            try await Task.sleep(for: .milliseconds(500))
            let report = try JSONValue.parse(try await TestSupport.get(router.admin!.port, "/admin/replicas").bodyBytes)
            let entry = report["replicas"]?.arrayValue?.first { $0["name"] == .string("rogue") }
            #expect(entry?["routable"] == .bool(false))
            let error = entry?["last_probe_error"]?.stringValue ?? ""
            #expect(error.contains("CERTIFICATE_VERIFY_FAILED"), "\(error)")
            #expect(entry?["health"] == .string("down"))
        } catch {
            Issue.record(error)
        }
        probes.cancel()
        await router.stop()
        for s in trusted + untrusted { await s.stop() }
    }

    @Test func aRenewedCertificateSwapsInUnderLoadWithNoFailedRequest() async throws {
        guard let certs = try await TestCertificates.make(serial: 0x1001) else { return }
        defer { certs.remove() }
        try await TestSupport.withEmulators(2) { servers in
            let path = certs.directory + "/router.yaml"
            let replicas = servers.map { "  - {name: \($0.replica.settings.name), url: 'http://127.0.0.1:\($0.port)'}" }.joined(separator: "\n")
            try """
                listen: 127.0.0.1:0
                admin_listen: 127.0.0.1:0
                logging: {access_log: false}
                reload: {watch_file: true, poll_interval: 100ms}
                tls: {cert_file: \(certs.certFile), key_file: \(certs.keyFile)}
                replicas:
                \(replicas)
                """.write(toFile: path, atomically: true, encoding: .utf8)
            let router = try await RouterRuntime.start(config: try RouterConfiguration.load(path: path), configPath: path, logger: TestSupport.logger)
            // The file watcher notices the renewed files (the configuration itself does not change).
            let watcher = Task { try? await router.reload?.run() }
            let port = router.proxy.port
            #expect(try await Self.servedSerial(port, ca: certs.caFile) == "1001")
            let client = try ClientTLS(ClientTLSSettings(caFile: certs.caFile))
            let stop = NIOLockedValueBox(false)
            // Four clients, each a new connection (a new handshake) per request, around the swap.
            let statuses = try await withThrowingTaskGroup(of: [Int].self) { group in
                for worker in 0..<4 {
                    group.addTask {
                        var statuses: [Int] = []
                        var i = 0
                        while !stop.withLockedValue({ $0 }) || i < 20 {
                            let r = try? await Self.post(port, tls: client, chatBody(session: worker * 100 + i % 7))
                            statuses.append(Int(r?.status.code ?? 0))
                            i += 1
                        }
                        return statuses
                    }
                }
                try await Task.sleep(for: .milliseconds(300))
                try await certs.renew(serial: 0x2002)
                var swapped = false
                for _ in 0..<50 where !swapped {
                    try await Task.sleep(for: .milliseconds(100))
                    swapped = try await Self.servedSerial(port, ca: certs.caFile) == "2002"
                }
                #expect(swapped, "the watcher reloaded the renewed certificate")
                stop.withLockedValue { $0 = true }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(statuses.count >= 80 && statuses.allSatisfy { $0 == 200 }, "\(statuses.filter { $0 != 200 })")
            #expect(try await Self.servedSerial(port, ca: certs.caFile) == "2002")
            // A key that does not match the certificate is rejected; the renewed pair keeps serving.
            let otherKey = certs.directory + "/ca.key"
            try """
                listen: 127.0.0.1:0
                admin_listen: 127.0.0.1:0
                reload: {watch_file: false}
                tls: {cert_file: \(certs.certFile), key_file: \(otherKey)}
                replicas:
                \(replicas)
                """.write(toFile: path, atomically: true, encoding: .utf8)
            watcher.cancel()
            #expect(router.reload?.reload(reason: "test") == false)
            #expect(try await Self.servedSerial(port, ca: certs.caFile) == "2002")
            #expect(try await Self.post(port, tls: client).status == .ok)
            await router.stop()
        }
    }

    @Test func mutualTLSRequiresAClientCertificateFromTheCA() async throws {
        guard let certs = try await TestCertificates.make() else { return }
        defer { certs.remove() }
        try await TestSupport.withEmulators(1) { servers in
            var c = testConfiguration([ReplicaSpec(name: "r1", url: "http://127.0.0.1:\(servers[0].port)")])
            c.tls = ServerTLSFiles(certFile: certs.certFile, keyFile: certs.keyFile, clientCAFile: certs.caFile)
            let router = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
            let anonymous = try ClientTLS(ClientTLSSettings(caFile: certs.caFile))
            let known = try ClientTLS(ClientTLSSettings(caFile: certs.caFile, certFile: certs.certFile, keyFile: certs.keyFile))
            #expect(await (try? Self.post(router.proxy.port, tls: anonymous)) == nil)
            #expect(try await Self.post(router.proxy.port, tls: known).status == .ok)
            await router.stop()
        }
    }

    /// The official `openai` client over TLS (its httpx verifying against the test CA), with a key.
    @Test func theOpenAIClientTalksToTheRouterOverTLS() async throws {
        guard let certs = try await TestCertificates.make() else { return }
        defer { certs.remove() }
        try await TestSupport.withEmulators(2) { servers in
            let keys = certs.directory + "/keys.yaml"
            try "- {key: sk-test-acme, tenant: acme}\n".write(toFile: keys, atomically: true, encoding: .utf8)
            var c = testConfiguration(servers.map { ReplicaSpec(name: $0.replica.settings.name, url: "http://127.0.0.1:\($0.port)") })
            c.tls = ServerTLSFiles(certFile: certs.certFile, keyFile: certs.keyFile)
            c.auth.apiKeysFile = keys
            let router = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
            let script = """
                import openai, ssl, sys
                ctx = ssl.create_default_context(cafile="\(certs.caFile)")
                c = openai.OpenAI(base_url="https://localhost:\(router.proxy.port)/v1", api_key="sk-test-acme", max_retries=0, http_client=openai.DefaultHttpxClient(verify=ctx))
                r = c.chat.completions.create(model="cacheroute-demo", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
                assert r.usage.completion_tokens == 3, r
                s = c.chat.completions.create(model="cacheroute-demo", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True)
                assert len("".join(ch.choices[0].delta.content or "" for ch in s if ch.choices)) == 16
                bad = openai.OpenAI(base_url="https://localhost:\(router.proxy.port)/v1", api_key="sk-wrong", max_retries=0, http_client=openai.DefaultHttpxClient(verify=ctx))
                try:
                    bad.chat.completions.create(model="cacheroute-demo", messages=[{"role": "user", "content": "hi"}])
                    sys.exit("expected AuthenticationError")
                except openai.AuthenticationError as e:
                    assert e.body["code"] == "invalid_api_key", e.body
                print("ok")
                """
            if let (status, output) = try await TestSupport.python(script, requires: "openai") {
                #expect(status == 0 && output.contains("ok"), "\(output)")
            }
            await router.stop()
        }
    }
}
