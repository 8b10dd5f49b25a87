import Access
import ResponseCache
import RoutingCore

/// The whole cacheroute configuration: validated, immutable, every key defaulted.
///
/// `Config/cacheroute.yaml` documents every key. Only `replicas` (or `discovery`) is required.
public struct RouterConfiguration: Sendable, Equatable {
    /// The data-plane listener (OpenAI and SGLang traffic).
    public var listen = ListenAddress(host: "127.0.0.1", port: 8080)
    /// The admin listener: `/metrics`, `/healthz`, `/readyz`, `/admin/*`.
    public var adminListen = ListenAddress(host: "127.0.0.1", port: 9090)
    /// Event-loop threads for the listeners, upstream connections and probes; nil: one per core
    /// (the `NIO_SINGLETON_GROUP_LOOP_COUNT` environment variable, if set, else the core count).
    /// Takes effect at start only.
    public var threads: Int?
    /// Statically configured replicas.
    public var replicas: [ReplicaSpec] = []
    /// Replicas found through DNS.
    public var discovery: [DNSDiscovery] = []
    public var routing = RoutingSettings()
    public var upstream = UpstreamSettings()
    public var limits = LimitSettings()
    public var health = ProbeSettings()
    public var logging = LoggingSettings()
    public var shutdown = ShutdownSettings()
    public var reload = ReloadSettings()
    /// The router's queue for requests no replica has room for.
    public var queue = QueueSettings()
    /// TLS on the data-plane listener; nil: plain HTTP.
    public var tls: ServerTLSFiles?
    /// TLS on the admin listener; nil: plain HTTP.
    public var adminTLS: ServerTLSFiles?
    /// API keys for clients, the admin token.
    public var auth = AuthSettings()
    /// Tenant identity, isolation (`cache_salt`) and limits.
    public var tenants = TenantSettings()
    /// Peers whose `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded` are believed (kept and
    /// extended); from anyone else they are replaced by what the router saw.
    public var trustedProxies: [AddressRange] = []
    /// The exact and semantic response caches (off unless enabled).
    public var cache = CacheSettings()
    /// Prefix diagnostics: what breaks prefix caching in the requests (`/admin/prefixes`).
    public var insight = InsightSettings()

    /// Every file the configuration names (certificates, keys, tokens): a change to one is a
    /// change to the configuration.
    public var referencedFiles: [String] {
        var files: [String] = []
        for t in [self.tls, self.adminTLS].compactMap({ $0 }) { files += [t.certFile, t.keyFile] + [t.clientCAFile].compactMap { $0 } }
        files += [self.auth.apiKeysFile, self.auth.adminTokenFile, self.upstream.apiKeyFile].compactMap { $0 }
        files += [self.upstream.tls.caFile, self.upstream.tls.certFile, self.upstream.tls.keyFile].compactMap { $0 }
        files += [self.cache.redis.passwordFile].compactMap { $0 }
        return files
    }

    public init() {}

    /// What the routing core needs of the configuration.
    public var fleetSettings: FleetSettings {
        FleetSettings(
            routing: self.routing,
            health: self.health.thresholds,
            retry: RetrySettings(retries: self.upstream.retries, budget: self.upstream.retryBudget, minPerSecond: self.upstream.retryMinPerSecond),
            queue: self.queue
        )
    }
}

/// Replicas from the A/AAAA or SRV records of a name (a Kubernetes headless Service), re-resolved on an interval.
public struct DNSDiscovery: Sendable, Equatable {
    public enum Record: String, Sendable, CaseIterable {
        /// A and AAAA records: every address, on `port`.
        case a
        /// SRV records: each target and port (targets resolved through A/AAAA).
        case srv
    }

    /// The DNS name, e.g. `vllm.default.svc.cluster.local` or `_http._tcp.vllm.default.svc.cluster.local`.
    public var name: String
    public var record: Record = .a
    /// Port for A/AAAA records.
    public var port: Int = 8000
    /// How often to re-resolve.
    public var intervalSeconds: Double = 10
    /// Prefix of the replica names made from the records (`<prefix>-<address>-<port>`).
    public var namePrefix: String
    /// DNS server to ask (`host:port`); nil: the first `nameserver` of /etc/resolv.conf.
    public var server: String?
    /// Applied to every discovered replica.
    public var weight: Double = 1
    public var models: [String] = []
    public var engine: Engine = .vllm
    public var cacheTokens: Int?
    /// `https`: the discovered replicas are reached over TLS (as `https://` URLs).
    public var tls = false

    public init(name: String, namePrefix: String) {
        self.name = name
        self.namePrefix = namePrefix
    }
}

/// How the proxy talks to replicas.
public struct UpstreamSettings: Sendable, Equatable {
    /// TCP connect timeout; short, so a dead replica fails over fast.
    public var connectTimeout: Double = 2
    /// From sending the request to the response head (a non-streamed answer is generated entirely before it).
    public var firstByteTimeout: Double = 600
    /// Longest silence between two chunks of a response body.
    public var idleTimeout: Double = 120
    /// Extra attempts on another replica after a connect error or a 5xx before the first byte.
    public var retries: Int = 2
    /// Retries may add at most this fraction of the request rate (plus `retryMinPerSecond`).
    public var retryBudget: Double = 0.2
    public var retryMinPerSecond: Double = 3
    /// Connections per replica (all event loops together); requests beyond it wait.
    public var maxConnectionsPerReplica: Int = 1024
    /// How long an idle pooled connection is kept.
    public var keepAliveSeconds: Double = 60
    /// Largest response head accepted from a replica; a larger one fails the attempt.
    public var maxResponseHeadBytes: Int = 64 << 10
    /// When a streamed request whose replica has not answered is taken as stalled and retried
    /// elsewhere (`stall_factor` times its predicted time to first token, at least `stall_min`).
    public var stall = StallSettings()
    /// How `https://` replicas are verified (system trust store by default).
    public var tls = ClientTLSSettings()
    /// A file holding the key the replicas require (vLLM's `--api-key`), sent as
    /// `Authorization: Bearer`; nil: none.
    public var apiKeyFile: String?

    public init() {}
}

/// Protection against big, slow or numerous clients.
public struct LimitSettings: Sendable, Equatable {
    public var maxBodyBytes: Int = 32 << 20
    public var maxHeaderBytes: Int = 64 << 10
    public var maxConnections: Int = 10_000
    /// Time allowed to send the request head (slow-loris guard).
    public var headerTimeout: Double = 15
    /// Time allowed to send the whole request body.
    public var bodyTimeout: Double = 60
    /// How long an idle keep-alive client connection stays open.
    public var idleTimeout: Double = 120
    /// Largest body `POST /admin/explain` takes (413 beyond it): explaining is for one request
    /// at a time, and the admin plane should not take data-plane sizes.
    public var maxExplainBodyBytes: Int = 1 << 20

    public init() {}
}

/// Active probing of replicas and passive outlier detection.
public struct ProbeSettings: Sendable, Equatable {
    public var interval: Double = 2
    public var timeout: Double = 1
    /// Scrape `/metrics` for queue depth, KV usage and prefix-cache hits.
    public var scrapeMetrics = true
    public var metricsTimeout: Double = 2
    public var thresholds = HealthSettings()

    public init() {}
}

public struct LoggingSettings: Sendable, Equatable {
    public enum Level: String, Sendable, CaseIterable {
        case trace, debug, info, notice, warning, error, critical
    }

    public enum Format: String, Sendable, CaseIterable {
        case text, json
    }

    public var level: Level = .info
    public var format: Format = .text
    /// One line per request at info.
    public var accessLog = true

    public init() {}
}

/// `insight`: the prefix diagnostics on sampled requests.
public struct InsightSettings: Sendable, Equatable {
    public var enabled = true
    /// One request in this many is analysed (the rest cost nothing).
    public var sampleEvery = 64
    public var maxTemplates = 64
    /// Counts halve over this time.
    public var halfLifeSeconds: Double = 3600

    public init() {}

    public var prefixInsight: PrefixInsight.Settings {
        var s = PrefixInsight.Settings()
        s.maxTemplates = self.maxTemplates
        s.halfLifeSeconds = self.halfLifeSeconds
        return s
    }
}

public struct ShutdownSettings: Sendable, Equatable {
    /// On SIGTERM: stop accepting, let in-flight requests and streams finish within this time.
    public var drainSeconds: Double = 30

    public init() {}
}

public struct ReloadSettings: Sendable, Equatable {
    /// Reload when the file changes (besides SIGHUP).
    public var watchFile = true
    public var pollSeconds: Double = 2

    public init() {}
}
