import Access
import FastJSON
import ResponseCache
import Foundation
import RoutingCore
import Yams

extension RouterConfiguration {
    /// Reads and validates a configuration file.
    public static func load(path: String) throws(ConfigErrors) -> RouterConfiguration {
        // A FileHandle reads pipes and process substitution (`--config <(...)`) as well as files.
        let data: Data
        do {
            let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
            defer { try? handle.close() }
            data = try handle.readToEnd() ?? Data()
        } catch {
            let reason = (error as NSError).code == NSFileReadNoSuchFileError ? "no such file" : "\(error.localizedDescription)"
            throw ConfigErrors([ConfigError(file: path, line: 0, column: 0, path: "", message: "cannot read the file: \(reason)")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigErrors([ConfigError(file: path, line: 0, column: 0, path: "", message: "the file is not UTF-8 text")])
        }
        return try Self.parse(yaml: text, file: path)
    }

    /// Parses and validates YAML text; `file` names it in errors. Reports every problem it finds.
    public static func parse(yaml: String, file: String) throws(ConfigErrors) -> RouterConfiguration {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: yaml) else {
                throw ConfigErrors([ConfigError(file: file, line: 1, column: 1, path: "", message: "the file is empty; it needs at least a 'replicas' list")])
            }
            root = node
        } catch let error as ConfigErrors {
            throw error
        } catch let error as YamlError {
            throw ConfigErrors([Self.located(error, file: file)])
        } catch {
            throw ConfigErrors([ConfigError(file: file, line: 0, column: 0, path: "", message: "\(error)")])
        }
        var parser = ConfigParser(file: file)
        let config = parser.parse(ConfigNode(node: root, path: "", file: file))
        guard parser.errors.isEmpty, let config else { throw ConfigErrors(parser.errors) }
        return config
    }

    static func located(_ error: YamlError, file: String) -> ConfigError {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            let detail = context.map { "\($0.text) " } ?? ""
            return ConfigError(file: file, line: mark.line, column: mark.column, path: "", message: "invalid YAML: \(detail)\(problem)")
        default:
            return ConfigError(file: file, line: 0, column: 0, path: "", message: "invalid YAML: \(error)")
        }
    }
}

/// Walks the YAML tree section by section, collecting every error instead of stopping at the first.
struct ConfigParser {
    let file: String
    var errors: [ConfigError] = []

    init(file: String) {
        self.file = file
    }

    /// Runs `body`, recording a thrown `ConfigError` and carrying on.
    mutating func attempt(_ body: () throws -> Void) {
        do {
            try body()
        } catch let error as ConfigError {
            self.errors.append(error)
        } catch {
            self.errors.append(ConfigError(file: self.file, line: 0, column: 0, path: "", message: "\(error)"))
        }
    }

    mutating func parse(_ root: ConfigNode) -> RouterConfiguration? {
        var config = RouterConfiguration()
        let top: ConfigMapping
        do {
            top = try root.mapping(allowed: [
                "listen", "admin_listen", "threads", "replicas", "discovery", "routing", "upstream", "limits", "health", "logging",
                "shutdown", "reload", "queue", "tls", "admin_tls", "auth", "tenants", "trusted_proxies", "cache", "insight",
            ])
        } catch let error as ConfigError {
            self.errors.append(error)
            return nil
        } catch {
            return nil
        }
        self.attempt { try top.read("listen", into: &config.listen, Self.listen) }
        self.attempt { try top.read("admin_listen", into: &config.adminListen, Self.listen) }
        self.attempt {
            try top.read("threads", into: &config.threads) { node in
                let text = try node.scalar()
                if text.lowercased() == "auto" { return nil }
                guard Int(text.replacingUnderscores()) != nil else { throw node.error("expected a whole number or 'auto', got '\(text)'") }
                return try node.int(1...1024)
            }
        }
        if let node = top["replicas"] { self.attempt { config.replicas = try Self.replicas(node) } }
        if let node = top["discovery"] { self.attempt { config.discovery = try Self.discovery(node) } }
        if let node = top["routing"] { self.routing(node, into: &config.routing) }
        if let node = top["upstream"] { self.attempt { config.upstream = try Self.upstream(node) } }
        if let node = top["limits"] { self.attempt { config.limits = try Self.limits(node) } }
        if let node = top["health"] { self.attempt { config.health = try Self.health(node) } }
        if let node = top["logging"] { self.attempt { config.logging = try Self.logging(node) } }
        if let node = top["shutdown"] {
            self.attempt {
                let m = try node.mapping(allowed: ["drain_timeout"])
                try m.read("drain_timeout", into: &config.shutdown.drainSeconds) { try $0.seconds(0...3600) }
            }
        }
        if let node = top["queue"] { self.attempt { config.queue = try Self.queue(node) } }
        if let node = top["tls"] { self.attempt { config.tls = try Self.serverTLS(node) } }
        if let node = top["admin_tls"] { self.attempt { config.adminTLS = try Self.serverTLS(node) } }
        if let node = top["auth"] { self.attempt { config.auth = try Self.auth(node) } }
        if let node = top["tenants"] { self.attempt { config.tenants = try Self.tenants(node) } }
        if let node = top["cache"] { self.attempt { config.cache = try Self.cache(node) } }
        if let node = top["insight"] {
            self.attempt {
                let m = try node.mapping(allowed: ["enabled", "sample_every", "max_templates", "half_life"])
                try m.read("enabled", into: &config.insight.enabled) { try $0.bool() }
                try m.read("sample_every", into: &config.insight.sampleEvery) { try $0.int(1...1_000_000) }
                try m.read("max_templates", into: &config.insight.maxTemplates) { try $0.int(1...10_000) }
                try m.read("half_life", into: &config.insight.halfLifeSeconds) { try $0.seconds(1...(30 * 86400)) }
            }
        }
        if let node = top["trusted_proxies"] {
            self.attempt {
                config.trustedProxies = try node.list().map { item in
                    let text = try item.string()
                    guard let range = AddressRange(text) else { throw item.error("expected an IP address or a CIDR range such as 10.0.0.0/8, got '\(text)'") }
                    return range
                }
            }
        }
        // The queue's fairness goes by the same tenant identity.
        config.queue.tenantHeader = config.tenants.header
        if let node = top["reload"] {
            self.attempt {
                let m = try node.mapping(allowed: ["watch_file", "poll_interval"])
                try m.read("watch_file", into: &config.reload.watchFile) { try $0.bool() }
                try m.read("poll_interval", into: &config.reload.pollSeconds) { try $0.seconds(0.1...3600) }
            }
        }

        // Cross-checks.
        if config.replicas.isEmpty, config.discovery.isEmpty, self.errors.isEmpty {
            self.errors.append(root.error("no replicas: add a 'replicas' list (or 'discovery')"))
        }
        if config.listen == config.adminListen, config.listen.port != 0 {
            let node = top["admin_listen"] ?? top["listen"] ?? root
            self.errors.append(node.error("'listen' and 'admin_listen' must differ (both are \(config.listen))"))
        }
        let names = Set(config.replicas.map(\.name))
        if let pinnedNode = top["routing"].flatMap({ try? $0.mapping(allowed: Self.routingKeys) })?["pinned"],
            let list = try? pinnedNode.list()
        {
            for (rule, node) in zip(config.routing.placement.pinned, list) where config.discovery.isEmpty {
                for replica in rule.replicas where !names.contains(replica) {
                    self.errors.append(node.error("pinned group '\(rule.name)' names unknown replica '\(replica)'"))
                }
            }
        }
        return config
    }

    // MARK: - Sections

    static func listen(_ node: ConfigNode) throws -> ListenAddress {
        switch ListenAddress.parse(try node.string()) {
        case .success(let address): return address
        case .failure(let error): throw node.error(error.description)
        }
    }

    static func replicas(_ node: ConfigNode) throws -> [ReplicaSpec] {
        var result: [ReplicaSpec] = []
        var seen: [String: Int] = [:]
        for (i, item) in try node.list().enumerated() {
            let m = try item.mapping(allowed: ["name", "url", "weight", "models", "engine", "cache_tokens"])
            let urlNode = try m.required("url")
            let url = try urlNode.string()
            if case .failure(let error) = ReplicaURL.parse(url) { throw urlNode.error(error.description) }
            let name: String
            if let nameNode = m["name"] {
                name = try nameNode.string()
                guard name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.:".contains($0) }) else {
                    throw nameNode.error("names may hold letters, digits, '-', '_', '.' and ':' only, got '\(name)'")
                }
                if let first = seen[name] {
                    throw nameNode.error("duplicate replica name '\(name)' (also replicas[\(first)])")
                }
            } else {
                name = "replica-\(i + 1)"
            }
            seen[name] = i
            var spec = ReplicaSpec(name: name, url: url)
            try m.read("weight", into: &spec.weight) { try $0.double(0.01...1000) }
            try m.read("models", into: &spec.models) { try $0.stringList() }
            try m.read("engine", into: &spec.engine) { try Self.engine($0) }
            if let capacity = m["cache_tokens"] { spec.cacheTokens = try capacity.int(1...1_000_000_000) }
            result.append(spec)
        }
        return result
    }

    static func engine(_ node: ConfigNode) throws -> Engine {
        let text = try node.string()
        guard let engine = Engine(rawValue: text.lowercased()) else {
            throw node.error("expected vllm or sglang, got '\(text)'")
        }
        return engine
    }

    static func discovery(_ node: ConfigNode) throws -> [DNSDiscovery] {
        var result: [DNSDiscovery] = []
        for item in try node.list() {
            let m = try item.mapping(allowed: [
                "dns", "record", "port", "interval", "name_prefix", "server", "weight", "models", "engine", "cache_tokens", "scheme",
            ])
            let name = try m.required("dns").string()
            var d = DNSDiscovery(name: name, namePrefix: String(name.split(separator: ".").first ?? "replica"))
            if let recordNode = m["record"] {
                let text = try recordNode.string().lowercased()
                guard let record = DNSDiscovery.Record(rawValue: text) else {
                    throw recordNode.error("expected 'a' (A/AAAA records) or 'srv', got '\(text)'")
                }
                d.record = record
            }
            try m.read("port", into: &d.port) { try $0.int(1...65535) }
            try m.read("interval", into: &d.intervalSeconds) { try $0.seconds(1...3600) }
            try m.read("name_prefix", into: &d.namePrefix) { try $0.string() }
            if let server = m["server"] {
                let text = try server.string()
                if case .failure(let error) = ListenAddress.parse(text.contains(":") ? text : text + ":53") {
                    throw server.error(error.description)
                }
                d.server = text
            }
            try m.read("weight", into: &d.weight) { try $0.double(0.01...1000) }
            try m.read("models", into: &d.models) { try $0.stringList() }
            try m.read("engine", into: &d.engine) { try Self.engine($0) }
            if let capacity = m["cache_tokens"] { d.cacheTokens = try capacity.int(1...1_000_000_000) }
            if let scheme = m["scheme"] {
                let text = try scheme.string().lowercased()
                guard text == "http" || text == "https" else { throw scheme.error("expected http or https, got '\(text)'") }
                d.tls = text == "https"
            }
            result.append(d)
        }
        return result
    }

    static let routingKeys = [
        "block_bytes", "bytes_per_token", "max_key_bytes", "instruction", "session", "load", "spill", "ring", "pinned",
    ]

    mutating func routing(_ node: ConfigNode, into routing: inout RoutingSettings) {
        guard let m = try? node.mapping(allowed: Self.routingKeys) else {
            self.attempt { _ = try node.mapping(allowed: Self.routingKeys) }
            return
        }
        self.attempt {
            try m.read("block_bytes", into: &routing.keying.blockBytes) { try $0.bytes(16...(1 << 20)) }
            try m.read("bytes_per_token", into: &routing.keying.bytesPerToken) { try $0.int(1...64) }
            try m.read("max_key_bytes", into: &routing.keying.maxKeyBytes) { try $0.bytes(1024...(1 << 30)) }
        }
        if let n = m["instruction"] {
            self.attempt {
                let i = try n.mapping(allowed: ["min_bytes", "group_size", "raw_prompt_bytes"])
                try i.read("min_bytes", into: &routing.keying.instructionMinBytes) { try $0.bytes(0...(64 << 20)) }
                try i.read("group_size", into: &routing.placement.groupSize) { try $0.int(1...1024) }
                try i.read("raw_prompt_bytes", into: &routing.keying.rawInstructionBytes) { try $0.bytes(0...(64 << 20)) }
            }
        }
        if let n = m["session"] {
            self.attempt {
                let s = try n.mapping(allowed: ["headers", "body_fields", "raw_prompt_bytes"])
                if let h = s["headers"] { routing.keying.sessionHeaders = try h.stringList().map { $0.lowercased() } }
                if let b = s["body_fields"] {
                    let fields = try b.stringList()
                    for field in fields where field.split(separator: ".", omittingEmptySubsequences: false).contains("") {
                        throw b.error("invalid field path '\(field)' (use dots between names, e.g. metadata.session_id)")
                    }
                    routing.keying.sessionBodyFields = fields
                }
                try s.read("raw_prompt_bytes", into: &routing.keying.rawSessionBytes) { try $0.bytes(1...(64 << 20)) }
            }
        }
        if let n = m["load"] {
            self.attempt {
                let l = try n.mapping(allowed: [
                    "factor", "ceiling_floor", "miss_weight", "fresh_choices", "fresh_slack", "prefill_tokens_per_second",
                    "decode_seconds_per_token", "learn_speed", "target_kv_usage", "seconds_per_in_flight", "max_waiting", "max_kv_usage", "default_cache_tokens",
                    "max_candidates",
                ])
                try l.read("factor", into: &routing.placement.loadFactor) { try $0.double(1...100) }
                try l.read("ceiling_floor", into: &routing.placement.ceilingFloor) { try $0.int(1...1_000_000) }
                try l.read("miss_weight", into: &routing.placement.missWeight) { try $0.double(0...1000) }
                try l.read("fresh_choices", into: &routing.placement.freshChoices) { try $0.int(1...1024) }
                try l.read("fresh_slack", into: &routing.placement.freshSlack) { try $0.seconds(0...3600) }
                try l.read("prefill_tokens_per_second", into: &routing.placement.prefillTokensPerSecond) {
                    try $0.double(1...100_000_000)
                }
                try l.read("decode_seconds_per_token", into: &routing.placement.decodeSecondsPerToken) { try $0.seconds(0.0001...10) }
                try l.read("learn_speed", into: &routing.placement.learnSpeed) { try $0.bool() }
                try l.read("target_kv_usage", into: &routing.placement.targetKVUsage) { try $0.double(0.1...1) }
                try l.read("seconds_per_in_flight", into: &routing.placement.secondsPerInFlight) { try $0.seconds(0...60) }
                if let w = l.members.first(where: { $0.0 == "max_waiting" })?.1 {
                    routing.placement.maxWaiting = w.isNull ? nil : try w.int(0...1_000_000)
                }
                if let k = l.members.first(where: { $0.0 == "max_kv_usage" })?.1 {
                    routing.placement.maxKVUsage = k.isNull ? nil : try k.double(0...1)
                }
                try l.read("default_cache_tokens", into: &routing.placement.defaultCacheTokens) { try $0.int(1...1_000_000_000) }
                try l.read("max_candidates", into: &routing.placement.maxCandidates) { try $0.int(1...1024) }
            }
        }
        if let n = m["spill"] {
            self.attempt {
                let s = try n.mapping(allowed: ["rps_per_replica", "window", "narrow_below", "hold", "max_tracked_keys"])
                var spill = routing.placement.spill
                try s.read("rps_per_replica", into: &spill.rpsPerReplica) { try $0.double(0.001...1_000_000) }
                try s.read("window", into: &spill.rateWindowSeconds) { try $0.seconds(0.1...3600) }
                try s.read("narrow_below", into: &spill.narrowBelow) { try $0.double(0.05...1) }
                try s.read("hold", into: &spill.holdSeconds) { try $0.seconds(0...86400) }
                try s.read("max_tracked_keys", into: &spill.maxTrackedKeys) { try $0.int(16...10_000_000) }
                routing.placement.spill = spill
            }
        }
        if let n = m["ring"] {
            self.attempt {
                let r = try n.mapping(allowed: ["vnodes"])
                try r.read("vnodes", into: &routing.placement.vnodesPerWeight) { try $0.int(1...10_000) }
            }
        }
        if let n = m["pinned"] {
            self.attempt { routing.placement.pinned = try Self.pinned(n) }
        }
        if routing.keying.rawInstructionBytes > 0, routing.keying.rawInstructionBytes >= routing.keying.rawSessionBytes,
            let n = m["instruction"] ?? m["session"]
        {
            self.errors.append(n.error("instruction.raw_prompt_bytes must be below session.raw_prompt_bytes"))
        }
    }

    static func pinned(_ node: ConfigNode) throws -> [PinnedGroup] {
        var groups: [PinnedGroup] = []
        for item in try node.list() {
            let m = try item.mapping(allowed: ["name", "replicas", "match"])
            let name = try m.required("name").string()
            let replicasNode = try m.required("replicas")
            let replicas = try replicasNode.stringList()
            guard !replicas.isEmpty else { throw replicasNode.error("a pinned group needs at least one replica") }
            let matchNode = try m.required("match")
            let match = try matchNode.mapping(allowed: ["header", "prefix", "model"])
            var header: (name: String, value: String)?
            if let h = match["header"] {
                let hm = try h.mapping(allowed: ["name", "value"])
                header = (try hm.required("name").string().lowercased(), try hm.required("value").string(nonEmpty: false))
            }
            var prefix: [UInt8]?
            if let p = match["prefix"] {
                let text = try p.string()
                // The same canonical spelling the keys use (minimal JSON escaping).
                var encoded: [UInt8] = []
                JSONWriter.appendString(text, to: &encoded)
                let canonical = Array(encoded.dropFirst().dropLast())
                guard canonical.count <= 256 else { throw p.error("a prefix may be at most 256 bytes") }
                prefix = canonical
            }
            guard header != nil || prefix != nil else {
                throw matchNode.error("give 'header' (name and value) or 'prefix' to match on")
            }
            let model = try match["model"]?.string()
            groups.append(PinnedGroup(name: name, replicas: replicas, header: header, prefix: prefix, model: model))
        }
        return groups
    }

    static func queue(_ node: ConfigNode) throws -> QueueSettings {
        let m = try node.mapping(allowed: [
            "enabled", "max_requests", "max_bytes", "timeout", "max_replica_wait", "concurrency_headroom", "lookahead",
        ])
        var q = QueueSettings()
        try m.read("enabled", into: &q.enabled) { try $0.bool() }
        try m.read("max_requests", into: &q.maxRequests) { try $0.int(1...10_000_000) }
        try m.read("max_bytes", into: &q.maxBytes) { try $0.bytes(1024...(64 << 30)) }
        try m.read("timeout", into: &q.timeoutSeconds) { try $0.seconds(0.001...86400) }
        try m.read("max_replica_wait", into: &q.maxReplicaWaitSeconds) { try $0.seconds(0.001...3600) }
        try m.read("concurrency_headroom", into: &q.concurrencyHeadroom) { try $0.double(1...100) }
        try m.read("lookahead", into: &q.lookahead) { try $0.int(1...100_000) }
        return q
    }

    static func upstream(_ node: ConfigNode) throws -> UpstreamSettings {
        let m = try node.mapping(allowed: [
            "connect_timeout", "first_byte_timeout", "idle_timeout", "retries", "retry_budget", "retry_min_per_second",
            "max_connections_per_replica", "keepalive", "max_response_head_bytes", "tls", "api_key_file", "stall_factor", "stall_min",
        ])
        var u = UpstreamSettings()
        try m.read("connect_timeout", into: &u.connectTimeout) { try $0.seconds(0.01...600) }
        try m.read("first_byte_timeout", into: &u.firstByteTimeout) { try $0.seconds(0.1...86400) }
        try m.read("idle_timeout", into: &u.idleTimeout) { try $0.seconds(0.1...86400) }
        try m.read("retries", into: &u.retries) { try $0.int(0...10) }
        try m.read("retry_budget", into: &u.retryBudget) { try $0.double(0...10) }
        try m.read("retry_min_per_second", into: &u.retryMinPerSecond) { try $0.double(0...100_000) }
        try m.read("max_connections_per_replica", into: &u.maxConnectionsPerReplica) { try $0.int(1...1_000_000) }
        try m.read("keepalive", into: &u.keepAliveSeconds) { try $0.seconds(0...86400) }
        try m.read("max_response_head_bytes", into: &u.maxResponseHeadBytes) { try $0.bytes(1024...(16 << 20)) }
        if let n = m["api_key_file"] { u.apiKeyFile = try n.string() }
        try m.read("stall_factor", into: &u.stall.factor) { try $0.double(0...1000) }
        try m.read("stall_min", into: &u.stall.minimumSeconds) { try $0.seconds(0.1...86400) }
        if let n = m["tls"] {
            let t = try n.mapping(allowed: ["ca_file", "cert_file", "key_file", "server_name", "dangerously_skip_verification"])
            if let f = t["ca_file"] { u.tls.caFile = try f.string() }
            if let f = t["cert_file"] { u.tls.certFile = try f.string() }
            if let f = t["key_file"] { u.tls.keyFile = try f.string() }
            if let f = t["server_name"] { u.tls.serverName = try f.string() }
            try t.read("dangerously_skip_verification", into: &u.tls.dangerouslySkipVerification) { try $0.bool() }
            if (u.tls.certFile == nil) != (u.tls.keyFile == nil) {
                throw n.error("a client certificate needs both 'cert_file' and 'key_file'")
            }
        }
        return u
    }

    static func serverTLS(_ node: ConfigNode) throws -> ServerTLSFiles? {
        if node.isNull { return nil }
        let m = try node.mapping(allowed: ["cert_file", "key_file", "client_ca_file"])
        var files = ServerTLSFiles(certFile: try m.required("cert_file").string(), keyFile: try m.required("key_file").string())
        if let ca = m["client_ca_file"], !ca.isNull { files.clientCAFile = try ca.string() }
        return files
    }

    static func auth(_ node: ConfigNode) throws -> AuthSettings {
        let m = try node.mapping(allowed: ["api_keys_file", "forward_client_key", "admin_token_file", "protect_metrics"])
        var a = AuthSettings()
        if let f = m["api_keys_file"], !f.isNull { a.apiKeysFile = try f.string() }
        try m.read("forward_client_key", into: &a.forwardClientKey) { try $0.bool() }
        if let f = m["admin_token_file"], !f.isNull { a.adminTokenFile = try f.string() }
        try m.read("protect_metrics", into: &a.protectMetrics) { try $0.bool() }
        if a.protectMetrics, a.adminTokenFile == nil, let n = m["protect_metrics"] {
            throw n.error("protecting /metrics needs 'admin_token_file'")
        }
        return a
    }

    static func tenants(_ node: ConfigNode) throws -> TenantSettings {
        let m = try node.mapping(allowed: ["header", "cache_salt", "limits", "default_limit", "max_tracked"])
        var t = TenantSettings()
        if let h = m["header"] { t.header = h.isNull ? nil : try h.string().lowercased() }
        if let n = m["cache_salt"] {
            let text = n.isNull ? "off" : try n.string().lowercased()
            guard let policy = SaltPolicy(rawValue: text == "false" ? "off" : text) else {
                throw n.error("expected off, replace or refuse, got '\(text)'")
            }
            t.cacheSalt = policy
        }
        if let n = m["default_limit"] { t.defaultLimit = try Self.tenantLimit(n, allowing: []) }
        if let n = m["limits"] {
            for item in try n.list() {
                let name = try (try item.mapping(allowed: ["tenant", "requests_per_second", "prompt_tokens_per_second", "burst"]))
                    .required("tenant").string()
                guard t.limits[name] == nil else { throw item.error("tenant '\(name)' has limits twice") }
                t.limits[name] = try Self.tenantLimit(item, allowing: ["tenant"])
            }
        }
        try m.read("max_tracked", into: &t.maxTracked) { try $0.int(1...10_000_000) }
        return t
    }

    static func cacheMode(_ node: ConfigNode) throws -> CacheMode {
        let text = node.isNull ? "off" : try node.string().lowercased()
        guard let mode = CacheMode(rawValue: text == "false" ? "off" : text) else { throw node.error("expected off, exact or semantic, got '\(text)'") }
        return mode
    }

    static func cache(_ node: ConfigNode) throws -> CacheSettings {
        let m = try node.mapping(allowed: [
            "enabled", "default_mode", "max_mode", "store", "max_bytes", "max_entry_bytes", "ttl", "allow_sampled", "stream_pacing", "routes", "redis",
            "semantic",
        ])
        var c = CacheSettings()
        try m.read("enabled", into: &c.enabled) { try $0.bool() }
        try m.read("default_mode", into: &c.defaultMode, Self.cacheMode)
        try m.read("max_mode", into: &c.maxMode, Self.cacheMode)
        try m.read("store", into: &c.backend) { n in
            let text = try n.string().lowercased()
            guard let b = CacheBackend(rawValue: text) else { throw n.error("expected memory or redis, got '\(text)'") }
            return b
        }
        try m.read("max_bytes", into: &c.maxBytes) { try $0.bytes(1 << 20...(1 << 40)) }
        try m.read("max_entry_bytes", into: &c.maxEntryBytes) { try $0.bytes(1024...(256 << 20)) }
        try m.read("ttl", into: &c.ttlSeconds) { try $0.seconds(1...(365 * 86400)) }
        try m.read("allow_sampled", into: &c.allowSampled) { try $0.bool() }
        try m.read("stream_pacing", into: &c.streamPacingSeconds) { try $0.seconds(0...10) }
        if c.maxEntryBytes > c.maxBytes, let n = m["max_entry_bytes"] ?? m["max_bytes"] {
            throw n.error("max_entry_bytes (\(c.maxEntryBytes)) exceeds max_bytes (\(c.maxBytes))")
        }
        if let n = m["routes"] {
            for item in try n.list() {
                let r = try item.mapping(allowed: ["match", "mode", "max_mode", "ttl", "threshold", "allow_sampled"])
                let matchNode = try r.required("match")
                let mm = try matchNode.mapping(allowed: ["model", "tenant", "path", "header"])
                var match = CacheMatch()
                if let v = mm["model"] { match.model = try v.string() }
                if let v = mm["tenant"] { match.tenant = try v.string(nonEmpty: false) }
                if let v = mm["path"] {
                    let path = try v.string()
                    guard path.hasPrefix("/") else { throw v.error("a path starts with '/', got '\(path)'") }
                    match.path = path
                }
                if let h = mm["header"] {
                    let hm = try h.mapping(allowed: ["name", "value"])
                    match.header = (try hm.required("name").string().lowercased(), try hm.required("value").string(nonEmpty: false))
                }
                var route = CacheRoute(match: match)
                try r.read("mode", into: &route.mode, Self.cacheMode)
                try r.read("max_mode", into: &route.maxMode, Self.cacheMode)
                if let v = r["ttl"] { route.ttlSeconds = try v.seconds(1...(365 * 86400)) }
                if let v = r["threshold"] { route.threshold = try v.double(0.5...1) }
                if let v = r["allow_sampled"] { route.allowSampled = try v.bool() }
                if route.mode > route.maxMode, let v = r["mode"] { throw v.error("mode \(route.mode.rawValue) is above max_mode \(route.maxMode.rawValue)") }
                c.routes.append(route)
            }
        }
        if let n = m["redis"] {
            let r = try n.mapping(allowed: ["address", "key_prefix", "timeout", "password_file", "connections"])
            if let a = r["address"] {
                switch ListenAddress.parse(try a.string()) {
                case .success(let address): (c.redis.host, c.redis.port) = (address.host, address.port)
                case .failure(let e): throw a.error(e.description)
                }
            }
            if let v = r["key_prefix"] { c.redis.keyPrefix = try v.string() }
            try r.read("timeout", into: &c.redis.timeoutSeconds) { try $0.seconds(0.001...10) }
            if let v = r["password_file"], !v.isNull { c.redis.passwordFile = try v.string() }
            try r.read("connections", into: &c.redis.connections) { try $0.int(1...64) }
        }
        if let n = m["semantic"] {
            let s = try n.mapping(allowed: [
                "embeddings_url", "model", "threshold", "timeout", "max_concurrent", "max_input_bytes", "max_entries_per_scope", "max_vectors",
                "scope_headers", "sync_interval",
            ])
            if let v = s["embeddings_url"], !v.isNull {
                let text = try v.string()
                if case .failure(let e) = ReplicaURL.parse(text) { throw v.error(e.description) }
                c.semantic.embeddingsURL = text
            }
            if let v = s["model"] { c.semantic.model = try v.string() }
            try s.read("threshold", into: &c.semantic.threshold) { try $0.double(0.5...1) }
            try s.read("timeout", into: &c.semantic.timeoutSeconds) { try $0.seconds(0.001...30) }
            try s.read("max_concurrent", into: &c.semantic.maxConcurrent) { try $0.int(1...10_000) }
            try s.read("max_input_bytes", into: &c.semantic.maxInputBytes) { try $0.bytes(16...(1 << 20)) }
            try s.read("max_entries_per_scope", into: &c.semantic.maxEntriesPerScope) { try $0.int(1...1_000_000) }
            try s.read("max_vectors", into: &c.semantic.maxVectors) { try $0.int(1...100_000_000) }
            if let v = s["scope_headers"] { c.semantic.scopeHeaders = try v.stringList().map { $0.lowercased() } }
            try s.read("sync_interval", into: &c.semantic.syncSeconds) { try $0.seconds(0...3600) }
        }
        let semanticUsed = c.defaultMode == .semantic || c.routes.contains { $0.mode == .semantic }
        if c.enabled, semanticUsed, c.semantic.embeddingsURL == nil {
            throw node.error("the semantic cache needs 'semantic.embeddings_url' (an OpenAI-compatible /v1/embeddings endpoint)")
        }
        return c
    }

    static func tenantLimit(_ node: ConfigNode, allowing extra: [String]) throws -> TenantLimit {
        let m = try node.mapping(allowed: ["requests_per_second", "prompt_tokens_per_second", "burst"] + extra)
        var l = TenantLimit()
        if let n = m["requests_per_second"], !n.isNull { l.requestsPerSecond = try n.double(0.001...10_000_000) }
        if let n = m["prompt_tokens_per_second"], !n.isNull { l.promptTokensPerSecond = try n.double(1...1_000_000_000) }
        try m.read("burst", into: &l.burstSeconds) { try $0.seconds(0.001...3600) }
        return l
    }

    static func limits(_ node: ConfigNode) throws -> LimitSettings {
        let m = try node.mapping(allowed: [
            "max_body_bytes", "max_header_bytes", "max_connections", "header_timeout", "body_timeout", "idle_timeout", "max_explain_body_bytes",
        ])
        var l = LimitSettings()
        try m.read("max_body_bytes", into: &l.maxBodyBytes) { try $0.bytes(1024...(4 << 30)) }
        try m.read("max_header_bytes", into: &l.maxHeaderBytes) { try $0.bytes(1024...(16 << 20)) }
        try m.read("max_connections", into: &l.maxConnections) { try $0.int(1...10_000_000) }
        try m.read("header_timeout", into: &l.headerTimeout) { try $0.seconds(0.1...3600) }
        try m.read("body_timeout", into: &l.bodyTimeout) { try $0.seconds(0.1...86400) }
        try m.read("idle_timeout", into: &l.idleTimeout) { try $0.seconds(0.1...86400) }
        try m.read("max_explain_body_bytes", into: &l.maxExplainBodyBytes) { try $0.bytes(1024...(4 << 30)) }
        return l
    }

    static func health(_ node: ConfigNode) throws -> ProbeSettings {
        let m = try node.mapping(allowed: [
            "interval", "timeout", "scrape_metrics", "metrics_timeout", "failure_threshold", "success_threshold",
            "eject_after_failures", "ejection", "max_ejection",
        ])
        var h = ProbeSettings()
        try m.read("interval", into: &h.interval) { try $0.seconds(0.05...3600) }
        try m.read("timeout", into: &h.timeout) { try $0.seconds(0.01...600) }
        try m.read("scrape_metrics", into: &h.scrapeMetrics) { try $0.bool() }
        try m.read("metrics_timeout", into: &h.metricsTimeout) { try $0.seconds(0.01...600) }
        try m.read("failure_threshold", into: &h.thresholds.failureThreshold) { try $0.int(1...1000) }
        try m.read("success_threshold", into: &h.thresholds.successThreshold) { try $0.int(1...1000) }
        try m.read("eject_after_failures", into: &h.thresholds.ejectAfterFailures) { try $0.int(0...1000) }
        try m.read("ejection", into: &h.thresholds.ejectionSeconds) { try $0.seconds(0.1...86400) }
        try m.read("max_ejection", into: &h.thresholds.maxEjectionSeconds) { try $0.seconds(0.1...86400) }
        if h.thresholds.maxEjectionSeconds < h.thresholds.ejectionSeconds, let n = m["max_ejection"] {
            throw n.error("must be at least 'ejection'")
        }
        return h
    }

    static func logging(_ node: ConfigNode) throws -> LoggingSettings {
        let m = try node.mapping(allowed: ["level", "format", "access_log"])
        var l = LoggingSettings()
        if let n = m["level"] {
            let text = try n.string().lowercased()
            guard let level = LoggingSettings.Level(rawValue: text == "warn" ? "warning" : text) else {
                throw n.error("expected one of \(LoggingSettings.Level.allCases.map(\.rawValue).joined(separator: ", ")), got '\(text)'")
            }
            l.level = level
        }
        if let n = m["format"] {
            let text = try n.string().lowercased()
            guard let format = LoggingSettings.Format(rawValue: text) else { throw n.error("expected text or json, got '\(text)'") }
            l.format = format
        }
        try m.read("access_log", into: &l.accessLog) { try $0.bool() }
        return l
    }
}
