import Access
import Foundation
import RouterConfig
import ResponseCache
import RoutingCore
import Testing

struct ConfigTests {
    func parse(_ yaml: String) throws(ConfigErrors) -> RouterConfiguration {
        try RouterConfiguration.parse(yaml: yaml, file: "test.yaml")
    }

    func errors(_ yaml: String) -> [String] {
        do {
            _ = try self.parse(yaml)
            return []
        } catch {
            return error.errors.map(\.description)
        }
    }

    @Test func theSmallestConfigIsValidAndDefaultsEverythingElse() throws {
        let c = try self.parse("""
            listen: 127.0.0.1:8080
            admin_listen: 127.0.0.1:9090
            replicas:
              - name: r1
                url: http://127.0.0.1:8001
            """)
        #expect(c.listen == ListenAddress(host: "127.0.0.1", port: 8080))
        #expect(c.replicas == [ReplicaSpec(name: "r1", url: "http://127.0.0.1:8001")])
        #expect(c.routing == RoutingSettings())
        #expect(c.upstream == UpstreamSettings())
        #expect(c.limits.maxBodyBytes == 32 << 20)
    }

    @Test func theReferenceConfigIsValidAndStatesTheDefaults() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Config/cacheroute.yaml").path
        let c = try RouterConfiguration.load(path: path)
        #expect(c.replicas.count == 4)
        // The reference file writes out every default: it must agree with the code.
        var defaults = RouterConfiguration()
        defaults.replicas = c.replicas
        #expect(c == defaults)
    }

    @Test func everyKeyIsRead() throws {
        let c = try self.parse("""
            listen: "[::1]:8081"
            admin_listen: :9091
            threads: 3
            replicas:
              - {name: a, url: "http://10.0.0.1:8000/prefix/", weight: 2.5, models: [m1, m2], engine: sglang, cache_tokens: 1000}
            routing:
              block_bytes: 512
              bytes_per_token: 3
              max_key_bytes: 1MiB
              instruction: {min_bytes: 1KiB, group_size: 3, raw_prompt_bytes: 100}
              session: {headers: [X-Conv], body_fields: [user, metadata.id], raw_prompt_bytes: 2KiB}
              load: {factor: 2, prefill_tokens_per_second: 9000, seconds_per_in_flight: 10ms, max_waiting: null, max_kv_usage: 0.9, default_cache_tokens: 7, max_candidates: 4}
              spill: {rps_per_replica: 3, window: 5s, narrow_below: 0.5, hold: 1m, max_tracked_keys: 100}
              ring: {vnodes: 64}
              pinned:
                - {name: p, replicas: [a], match: {header: {name: X-Tenant, value: gold}, prefix: "Hi\\n", model: m1}}
            upstream: {connect_timeout: 500ms, first_byte_timeout: 1h, idle_timeout: 30s, retries: 1, retry_budget: 0.1, retry_min_per_second: 1, max_connections_per_replica: 8, keepalive: 5s}
            limits: {max_body_bytes: 2MiB, max_header_bytes: 8KiB, max_connections: 50, header_timeout: 1s, body_timeout: 2s, idle_timeout: 3s}
            health: {interval: 1s, timeout: 200ms, scrape_metrics: false, metrics_timeout: 1s, failure_threshold: 4, success_threshold: 3, eject_after_failures: 0, ejection: 1s, max_ejection: 2s}
            logging: {level: debug, format: json, access_log: false}
            shutdown: {drain_timeout: 5s}
            reload: {watch_file: false, poll_interval: 500ms}
            discovery:
              - {dns: vllm.svc.local, record: srv, port: 9000, interval: 30s, name_prefix: v, server: "127.0.0.1:5353", weight: 2, models: [m1], engine: vllm, cache_tokens: 5}
            """)
        #expect(c.listen.host == "::1" && c.adminListen == ListenAddress(host: "0.0.0.0", port: 9091))
        #expect(c.threads == 3)
        #expect(c.replicas[0].weight == 2.5 && c.replicas[0].models == ["m1", "m2"] && c.replicas[0].engine == .sglang)
        #expect(try ReplicaURL.parse(c.replicas[0].url).get() == ReplicaURL(host: "10.0.0.1", port: 8000, pathPrefix: "/prefix"))
        #expect(c.routing.keying.blockBytes == 512 && c.routing.keying.maxKeyBytes == 1 << 20)
        #expect(c.routing.keying.sessionHeaders == ["x-conv"] && c.routing.keying.sessionBodyFields == ["user", "metadata.id"])
        #expect(c.routing.placement.maxWaiting == nil && c.routing.placement.maxKVUsage == 0.9)
        #expect(c.routing.placement.secondsPerInFlight == 0.01)
        #expect(c.routing.placement.spill.holdSeconds == 60)
        #expect(c.routing.placement.pinned.first?.prefix == Array(#"Hi\n"#.utf8))
        #expect(c.routing.placement.pinned.first?.header?.name == "x-tenant")
        #expect(c.upstream.firstByteTimeout == 3600 && c.upstream.connectTimeout == 0.5)
        #expect(c.limits.maxHeaderBytes == 8192)
        #expect(c.health.thresholds.successThreshold == 3 && !c.health.scrapeMetrics)
        #expect(c.logging.format == .json && c.shutdown.drainSeconds == 5 && !c.reload.watchFile)
        #expect(c.discovery.first?.record == .srv && c.discovery.first?.server == "127.0.0.1:5353")
    }

    @Test func accessKeys() throws {
        let c = try RouterConfiguration.parse(yaml: """
            replicas: [{url: 'https://vllm.internal'}, {url: 'http://10.0.0.2:8000'}]
            discovery: [{dns: vllm.svc.local, scheme: https}]
            tls: {cert_file: /etc/c/tls.crt, key_file: /etc/c/tls.key, client_ca_file: /etc/c/ca.crt}
            admin_tls: {cert_file: /etc/c/admin.crt, key_file: /etc/c/admin.key}
            auth: {api_keys_file: /etc/c/keys.yaml, forward_client_key: true, admin_token_file: /etc/c/admin.token, protect_metrics: true}
            tenants:
              header: X-Team
              cache_salt: refuse
              default_limit: {requests_per_second: 5}
              limits:
                - {tenant: acme, requests_per_second: 50, prompt_tokens_per_second: 200000, burst: 500ms}
              max_tracked: 100
            upstream:
              api_key_file: /etc/c/vllm.key
              tls: {ca_file: /etc/c/fleet-ca.crt, cert_file: /etc/c/me.crt, key_file: /etc/c/me.key, server_name: vllm.internal, dangerously_skip_verification: false}
            """, file: "test.yaml")
        #expect(try ReplicaURL.parse(c.replicas[0].url).get() == ReplicaURL(host: "vllm.internal", port: 443, tls: true))
        #expect(try !ReplicaURL.parse(c.replicas[1].url).get().tls)
        #expect(c.discovery.first?.tls == true)
        #expect(c.tls == ServerTLSFiles(certFile: "/etc/c/tls.crt", keyFile: "/etc/c/tls.key", clientCAFile: "/etc/c/ca.crt"))
        #expect(c.adminTLS?.clientCAFile == nil && c.adminTLS?.certFile == "/etc/c/admin.crt")
        #expect(c.auth.apiKeysFile == "/etc/c/keys.yaml" && c.auth.forwardClientKey && c.auth.protectMetrics)
        #expect(c.tenants.header == "x-team" && c.queue.tenantHeader == "x-team" && c.tenants.cacheSalt == .refuse)
        #expect(c.tenants.defaultLimit == TenantLimit(requestsPerSecond: 5))
        #expect(c.tenants.limits["acme"] == TenantLimit(requestsPerSecond: 50, promptTokensPerSecond: 200_000, burstSeconds: 0.5))
        #expect(c.upstream.apiKeyFile == "/etc/c/vllm.key" && c.upstream.tls.serverName == "vllm.internal" && c.upstream.tls.caFile == "/etc/c/fleet-ca.crt")
        #expect(Set(c.referencedFiles).count == 11)
        // The defaults: plain HTTP, no keys, no isolation, no limits.
        let d = try RouterConfiguration.parse(yaml: "replicas: [{url: 'http://a:1'}]\n", file: "test.yaml")
        #expect(d.tls == nil && d.adminTLS == nil && d.auth == AuthSettings() && d.tenants == TenantSettings() && d.referencedFiles.isEmpty)
    }

    @Test(arguments: [
        ("replicas:\n  - name: r1\n    url: x\n", "test.yaml:3:10: replicas[0].url: expected an http:// or https:// URL"),
        ("replicas:\n  - name: r1\n    url: ftp://a:1\n", "test.yaml:3:10: replicas[0].url: expected an http:// or https:// URL"),
        ("replicas: [{url: 'http://a:1'}]\ntls: {cert_file: a.crt}\n", "tls: missing required key 'key_file'"),
        ("replicas: [{url: 'http://a:1'}]\ntls: {cert_file: a.crt, key_file: a.key, client_ca: c}\n", "tls.client_ca: unknown key 'client_ca' (allowed: cert_file, key_file, client_ca_file)"),
        ("replicas: [{url: 'http://a:1'}]\nauth: {protect_metrics: true}\n", "auth.protect_metrics: protecting /metrics needs 'admin_token_file'"),
        ("replicas: [{url: 'http://a:1'}]\ntenants: {cache_salt: always}\n", "tenants.cache_salt: expected off, replace or refuse, got 'always'"),
        ("replicas: [{url: 'http://a:1'}]\ntenants: {limits: [{tenant: a, requests_per_second: -1}]}\n", "tenants.limits[0].requests_per_second: -1 is out of range"),
        ("replicas: [{url: 'http://a:1'}]\ntenants: {limits: [{requests_per_second: 1}]}\n", "missing required key 'tenant'"),
        ("replicas: [{url: 'http://a:1'}]\nupstream: {tls: {cert_file: c.crt}}\n", "upstream.tls: a client certificate needs both 'cert_file' and 'key_file'"),
        ("replicas: [{url: 'http://a:1'}]\nupstream: {tls: {skip_verify: true}}\n", "upstream.tls.skip_verify: unknown key 'skip_verify'"),
        ("discovery: [{dns: a.b, scheme: ftp}]\n", "discovery[0].scheme: expected http or https, got 'ftp'"),
        ("replicas:\n  - name: r1\n    url: http://a:99999\n", "test.yaml:3:10: replicas[0].url: invalid port"),
        ("replicas:\n  - {name: r1, url: 'http://a:1'}\n  - {name: r1, url: 'http://b:1'}\n", "test.yaml:3:12: replicas[1].name: duplicate replica name 'r1'"),
        ("replicas:\n  - {name: r1, url: 'http://a:1', wieght: 2}\n", "test.yaml:2:35: replicas[0].wieght: unknown key 'wieght'; did you mean 'weight'?"),
        ("replicas:\n  - {name: r1, url: 'http://a:1', weight: -1}\n", "test.yaml:2:43: replicas[0].weight: -1 is out of range"),
        ("replicas:\n  - {name: r1, url: 'http://a:1', engine: tgi}\n", "replicas[0].engine: expected vllm or sglang, got 'tgi'"),
        ("replicas: []\n", "no replicas: add a 'replicas' list"),
        ("listen: 8080\nreplicas: [{url: 'http://a:1'}]\n", "test.yaml:1:9: listen: expected host:port"),
        ("threads: many\nreplicas: [{url: 'http://a:1'}]\n", "test.yaml:1:10: threads: expected a whole number or 'auto', got 'many'"),
        ("threads: 0\nreplicas: [{url: 'http://a:1'}]\n", "test.yaml:1:10: threads: 0 is out of range 1...1024"),
        ("replicas: [{url: 'http://a:1'}]\nrouting:\n  load:\n    factor: lots\n", "test.yaml:4:13: routing.load.factor: expected a number, got 'lots'"),
        ("replicas: [{url: 'http://a:1'}]\nupstream:\n  connect_timeout: soon\n", "test.yaml:3:20: upstream.connect_timeout: expected a duration"),
        ("replicas: [{url: 'http://a:1'}]\nlimits:\n  max_body_bytes: 1ZB\n", "test.yaml:3:19: limits.max_body_bytes: expected a size"),
        ("replicas: [{name: r1, url: 'http://a:1'}]\nrouting:\n  pinned:\n    - {name: p, replicas: [r9], match: {prefix: x}}\n", "test.yaml:4:7: routing.pinned[0]: pinned group 'p' names unknown replica 'r9'"),
        ("replicas: [{url: 'http://a:1'}]\nrouting:\n  pinned:\n    - {name: p, replicas: [replica-1], match: {}}\n", "routing.pinned[0].match: give 'header'"),
        ("replicas: [{url: 'http://a:1'}\n", "test.yaml:2:1: invalid YAML"),
        ("replicas:\n\t- x\n", "invalid YAML"),
        ("", "the file is empty"),
        ("- a\n- b\n", "test.yaml:1:1: expected a mapping of keys, got a list"),
        ("listen: 127.0.0.1:9000\nadmin_listen: 127.0.0.1:9000\nreplicas: [{url: 'http://a:1'}]\n", "admin_listen: 'listen' and 'admin_listen' must differ"),
    ])
    func errorsAreLocated(yaml: String, expected: String) {
        let errors = self.errors(yaml)
        #expect(errors.contains { $0.contains(expected) }, "got \(errors)")
    }

    @Test func severalErrorsAreReportedAtOnce() {
        let errors = self.errors("""
            listen: nope
            replicas:
              - {name: r1, url: 'http://a:1'}
            upstream: {retries: 99}
            logging: {level: loud}
            """)
        #expect(errors.count == 3, "\(errors)")
    }
}

@Suite struct AddressRangeTests {
    @Test func parsesAndMatches() throws {
        let v4 = try #require(AddressRange("10.1.0.0/16"))
        #expect(v4.contains([10, 1, 200, 3]) && !v4.contains([10, 2, 0, 1]))
        // An IPv4-mapped IPv6 peer address counts as IPv4.
        #expect(v4.contains([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 10, 1, 0, 9]))
        let host = try #require(AddressRange("127.0.0.1"))
        #expect(host.contains([127, 0, 0, 1]) && !host.contains([127, 0, 0, 2]) && host.description == "127.0.0.1")
        let v6 = try #require(AddressRange("fd00::/8"))
        #expect(v6.contains(AddressRange.parseAddress("fd12:3456::1")!) && !v6.contains(AddressRange.parseAddress("fe80::1")!))
        #expect(AddressRange.parseAddress("::1") == [UInt8](repeating: 0, count: 15) + [1])
        #expect(AddressRange.parseAddress("::ffff:10.0.0.1")?.suffix(4) == [10, 0, 0, 1])
        #expect(try #require(AddressRange("0.0.0.0/0")).contains([8, 8, 8, 8]))
        for bad in ["10.0.0.0/33", "10.0.0", "256.0.0.1", "fd00::/129", "1::2::3", "x", "10.0.0.1/", "::g"] {
            #expect(AddressRange(bad) == nil, "\(bad)")
        }
    }

    @Test func trustedProxiesAreConfigured() throws {
        let c = try RouterConfiguration.parse(yaml: "replicas: [{url: 'http://a:1'}]\ntrusted_proxies: [10.0.0.0/8, '::1', 192.168.1.7]\n", file: "t.yaml")
        #expect(c.trustedProxies.map(\.description) == ["10.0.0.0/8", "0:0:0:0:0:0:0:1", "192.168.1.7"])
        #expect(throws: ConfigErrors.self) { try RouterConfiguration.parse(yaml: "replicas: [{url: 'http://a:1'}]\ntrusted_proxies: [10.0.0.0/99]\n", file: "t.yaml") }
    }
}

/// The `cache` section, with ConfigTests' helpers.
extension ConfigTests {
    @Test func cacheSectionIsReadAndChecked() throws {
        let c = try self.parse("""
            replicas: [{url: 'http://a:1'}]
            cache:
              enabled: true
              default_mode: exact
              store: redis
              ttl: 1h
              max_bytes: 64MiB
              routes:
                - {match: {model: m, tenant: acme, path: /v1/chat/completions, header: {name: X-App, value: faq}}, mode: semantic, ttl: 30s, threshold: 0.97}
                - {match: {tenant: unsafe}, max_mode: off}
              redis: {address: "10.0.0.9:6380", key_prefix: "cr:", timeout: 20ms, connections: 4}
              semantic: {embeddings_url: "http://127.0.0.1:8009/v1/embeddings", threshold: 0.9, scope_headers: [X-Locale]}
            """)
        #expect(c.cache.enabled && c.cache.defaultMode == .exact && c.cache.backend == .redis && c.cache.ttlSeconds == 3600)
        #expect(c.cache.routes.count == 2 && c.cache.routes[0].match.header?.name == "x-app" && c.cache.routes[0].threshold == 0.97)
        #expect(c.cache.routes[1].maxMode == .off)
        #expect(c.cache.redis.host == "10.0.0.9" && c.cache.redis.port == 6380 && c.cache.redis.timeoutSeconds == 0.02)
        #expect(c.cache.semantic.scopeHeaders == ["x-locale"])
        let bad = [
            ("cache: {enabled: true, default_mode: semantic}", "embeddings_url"),
            ("cache: {default_mode: sometimes}", "expected off, exact or semantic"),
            ("cache: {store: disk}", "expected memory or redis"),
            ("cache: {routes: [{match: {path: v1}, mode: exact}]}", "starts with '/'"),
            ("cache: {routes: [{match: {model: m}, mode: semantic, max_mode: exact}]}", "above max_mode"),
            ("cache: {max_bytes: 2MiB, max_entry_bytes: 4MiB}", "exceeds max_bytes"),
            ("cache: {semantic: {embeddings_url: 'ftp://x'}}", "http://"),
        ]
        for (yaml, expected) in bad {
            let errors = self.errors("replicas: [{url: 'http://a:1'}]\n" + yaml)
            #expect(errors.contains { $0.contains(expected) }, "\(yaml): \(errors)")
        }
    }
}
