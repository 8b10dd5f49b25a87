/// Settings of the router's access control: TLS files, client authentication, tenants. Plain
/// values (paths, names, numbers); the runtime reads the files they name.

/// A listener's certificate and key, and the CA that client certificates must chain to (mTLS).
public struct ServerTLSFiles: Sendable, Equatable {
    public var certFile: String
    public var keyFile: String
    public var clientCAFile: String?

    public init(certFile: String, keyFile: String, clientCAFile: String? = nil) {
        self.certFile = certFile
        self.keyFile = keyFile
        self.clientCAFile = clientCAFile
    }
}

/// How the router speaks TLS to `https://` replicas.
public struct ClientTLSSettings: Sendable, Equatable {
    /// CA bundle (PEM) replica certificates must chain to; nil: the system trust store.
    public var caFile: String?
    /// A client certificate and key for replicas that require one (mTLS).
    public var certFile: String?
    public var keyFile: String?
    /// The name sent in SNI and verified in the certificate; nil: the URL's host.
    public var serverName: String?
    /// Accept any certificate. Only for tests and emergencies; the router warns at start.
    public var dangerouslySkipVerification: Bool

    public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil, serverName: String? = nil, dangerouslySkipVerification: Bool = false) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.serverName = serverName
        self.dangerouslySkipVerification = dangerouslySkipVerification
    }
}

/// Client authentication on the data plane and the admin plane (`auth`).
public struct AuthSettings: Sendable, Equatable {
    /// The API keys clients must present (`Authorization: Bearer` or `x-api-key`); nil: any
    /// client is served.
    public var apiKeysFile: String?
    /// Send the client's key on to the replica (by default it never leaves the router).
    public var forwardClientKey = false
    /// A file holding the bearer token `/admin/*` requires; nil: the admin plane is open.
    public var adminTokenFile: String?
    /// `/metrics` needs the admin token too (by default Prometheus scrapes it without one).
    public var protectMetrics = false

    public init() {}
}

/// What the router does with `cache_salt` for tenant isolation.
public enum SaltPolicy: String, Sendable, Equatable, CaseIterable {
    /// Nothing: the client's `cache_salt` (if any) goes as sent.
    case off
    /// The router sets `cache_salt` from the tenant; a client's own is overridden.
    case replace
    /// The router sets `cache_salt` from the tenant; a request that brings its own is refused (400).
    case refuse
}

/// Tenants: who a request belongs to, and what each may use (`tenants`).
public struct TenantSettings: Sendable, Equatable {
    /// The request header naming the tenant when no API key does (keys come first).
    public var header: String? = "x-tenant"
    public var cacheSalt: SaltPolicy = .off
    /// Limits by tenant name; the rest get `defaultLimit`.
    public var limits: [String: TenantLimit] = [:]
    public var defaultLimit = TenantLimit()
    /// Tenants whose limits are tracked at once, at most (bounded state).
    public var maxTracked = 10_000

    public init() {}
}

