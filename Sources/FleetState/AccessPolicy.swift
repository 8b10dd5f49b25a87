import Access
import Foundation
import HTTPTransport
import NIOConcurrencyHelpers
import NIOHTTP1
import ResponseCache
import RouterConfig
import RoutingCore

/// What the files the configuration names hold (API keys, tokens, the TLS client context), read
/// with it and published with it: a reload that cannot read one of them is rejected whole.
public final class AccessPolicy: Sendable {
    /// Client keys; nil: clients are not authenticated.
    public let apiKeys: APIKeys?
    public let forwardClientKey: Bool
    /// SHA-256 of the admin token; nil: the admin plane is open.
    public let adminTokenDigest: [UInt8]?
    public let protectMetrics: Bool
    public let tenants: TenantSettings
    /// The tenants that get their own label on metrics (the rest are `other`): those the keys
    /// name and those with limits.
    public let labelledTenants: Set<String>
    /// `authorization: Bearer <key>\r\n` for the replicas, when they need a key.
    public let upstreamAuthorization: [UInt8]?
    let upstreamKey: String?
    /// The TLS context for `https://` replicas.
    public let upstreamTLS: ClientTLS?
    /// Token buckets per tenant; nil when no tenant has a limit.
    let limiter: NIOLockedValueBox<TenantLimiter>?
    /// `cache_salt` values of the configured tenants (when salts are on).
    let salts: [String: [UInt8]]
    /// The shared response cache's Redis password (`cache.redis.password_file`), if any.
    public let redisPassword: String?
    /// Whether anything asks who a request's tenant is (keys, limits, salts, named tenants):
    /// otherwise the data plane does not look for it.
    public let usesTenants: Bool

    /// Nothing required, nothing limited (the default before a configuration is read).
    public static let open = AccessPolicy(
        apiKeys: nil, forwardClientKey: false, adminTokenDigest: nil, protectMetrics: false, tenants: TenantSettings(), upstreamKey: nil,
        upstreamTLS: nil)

    init(
        apiKeys: APIKeys?, forwardClientKey: Bool, adminTokenDigest: [UInt8]?, protectMetrics: Bool, tenants: TenantSettings,
        upstreamKey: String?, upstreamTLS: ClientTLS?, limiter: TenantLimiter? = nil, redisPassword: String? = nil
    ) {
        self.redisPassword = redisPassword
        self.apiKeys = apiKeys
        self.forwardClientKey = forwardClientKey
        self.adminTokenDigest = adminTokenDigest
        self.protectMetrics = protectMetrics
        self.tenants = tenants
        self.labelledTenants = Set(apiKeys?.tenants ?? []).union(tenants.limits.keys)
        self.upstreamKey = upstreamKey
        self.upstreamAuthorization = upstreamKey.map { Array("authorization: Bearer \($0)\r\n".utf8) }
        self.upstreamTLS = upstreamTLS
        let hasLimits = !tenants.defaultLimit.isUnlimited || tenants.limits.values.contains { !$0.isUnlimited }
        self.limiter = hasLimits
            ? NIOLockedValueBox(limiter ?? TenantLimiter(limits: tenants.limits, defaultLimit: tenants.defaultLimit, capacity: tenants.maxTracked)) : nil
        self.salts = tenants.cacheSalt == .off ? [:] : Dictionary(uniqueKeysWithValues: self.labelledTenants.map { ($0, Self.salt(tenant: $0)) })
        self.usesTenants = apiKeys != nil || hasLimits || tenants.cacheSalt != .off || !self.labelledTenants.isEmpty
    }

    /// Reads the files `config` names. `previous` hands its buckets on (a reload does not refill
    /// every tenant's limit).
    public static func load(_ config: RouterConfiguration, previous: AccessPolicy? = nil) throws(AccessLoadError) -> AccessPolicy {
        var keys: APIKeys?
        if let path = config.auth.apiKeysFile {
            let text = try Self.read(path, what: "auth.api_keys_file")
            do {
                keys = try APIKeys.parse(text)
            } catch {
                throw AccessLoadError("auth.api_keys_file \(path): \(error.description)")
            }
        }
        let admin = try config.auth.adminTokenFile.map { path throws(AccessLoadError) in
            SHA256.hash(try Self.secret(path, what: "auth.admin_token_file").utf8)
        }
        let upstreamKey = try config.upstream.apiKeyFile.map { path throws(AccessLoadError) in try Self.secret(path, what: "upstream.api_key_file") }
        let redisPassword = try config.cache.redis.passwordFile.map { path throws(AccessLoadError) in
            try Self.secret(path, what: "cache.redis.password_file")
        }
        let usesTLS = config.replicas.contains { $0.url.lowercased().hasPrefix("https://") } || config.discovery.contains(where: \.tls)
            || config.upstream.tls != ClientTLSSettings()
        var tls: ClientTLS?
        if usesTLS {
            do {
                tls = try ClientTLS(config.upstream.tls)
            } catch {
                throw AccessLoadError(error.description)
            }
        }
        var limiter: TenantLimiter?
        if let old = previous?.limiter?.withLockedValue({ $0 }) {
            limiter = old
            limiter?.limits = config.tenants.limits
            limiter?.defaultLimit = config.tenants.defaultLimit
        }
        return AccessPolicy(
            apiKeys: keys, forwardClientKey: config.auth.forwardClientKey, adminTokenDigest: admin, protectMetrics: config.auth.protectMetrics,
            tenants: config.tenants, upstreamKey: upstreamKey, upstreamTLS: tls, limiter: limiter, redisPassword: redisPassword)
    }

    static func read(_ path: String, what: String) throws(AccessLoadError) -> String {
        guard let data = FileManager.default.contents(atPath: path) else { throw AccessLoadError("\(what) \(path): cannot read the file") }
        guard let text = String(data: data, encoding: .utf8) else { throw AccessLoadError("\(what) \(path): not UTF-8 text") }
        return text
    }

    /// A one-line secret: the file's text without surrounding whitespace.
    static func secret(_ path: String, what: String) throws(AccessLoadError) -> String {
        let text = try Self.read(path, what: what).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw AccessLoadError("\(what) \(path): expected one token of printable characters")
        }
        return text
    }

    /// A control-plane request to a replica (probes, the model list): over TLS for an
    /// `https://` replica, with the replicas' key when they need one.
    public func replicaRequest(_ url: ReplicaURL, path: String) -> HTTPClientRequest {
        var request = HTTPClientRequest(host: url.host, port: url.port, path: url.pathPrefix + path, tls: url.tls ? self.upstreamTLS : nil)
        if let key = self.upstreamKey { request.headers.add(name: "authorization", value: "Bearer \(key)") }
        return request
    }

    // MARK: - Requests

    /// What a request's credentials say.
    public enum Verdict: Sendable, Equatable {
        /// Authentication is off.
        case open
        case tenant(String)
        case missing
        /// Present but not one of the keys, or not in a form a key is sent in.
        case invalid
    }

    /// Checks the key in `Authorization: Bearer` or `x-api-key` (the first present wins).
    public func authenticate(authorization: String?, apiKey: String?) -> Verdict {
        guard let keys = self.apiKeys else { return .open }
        let key: Substring
        if let authorization {
            guard let token = Self.bearerToken(authorization) else { return .invalid }
            key = token
        } else if let apiKey {
            key = Substring(apiKey)
        } else {
            return .missing
        }
        return keys.tenant(of: key.utf8).map(Verdict.tenant) ?? .invalid
    }

    /// Whether an admin request may pass: open without a token, else `Authorization: Bearer <token>`.
    public func adminAllowed(authorization: String?) -> Bool {
        guard let digest = self.adminTokenDigest else { return true }
        guard let token = authorization.flatMap(Self.bearerToken) else { return false }
        return SHA256.constantTimeEqual(SHA256.hash(token.utf8), digest)
    }

    /// The token of `Bearer <token>` (the scheme in any case), or nil for any other form.
    static func bearerToken(_ authorization: String) -> Substring? {
        let parts = authorization.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].utf8.elementsEqual("bearer".utf8, by: { $0 | 0x20 == $1 }) else { return nil }
        return parts[1]
    }

    /// Takes a request of `promptTokens` from `tenant`'s limits, or says which it is over and
    /// after how many seconds it would fit.
    public func admit(tenant: String, promptTokens: Int, now: Double) -> (exceeded: LimitExceeded, retryAfter: Double)? {
        self.limiter?.withLockedValue { $0.admit(tenant: tenant, promptTokens: promptTokens, now: now) }
    }

    /// The tenant as a metric label: configured tenants by name, the rest `other`, none `none`.
    public func label(_ tenant: String) -> String {
        tenant.isEmpty ? "none" : self.labelledTenants.contains(tenant) ? tenant : "other"
    }

    /// The `cache_salt` the router sets for `tenant`: derived from the name, so that every router
    /// of a fleet sets the same one, and not the name itself. Those of the configured tenants are
    /// made once, with the policy; others (named by a header) per request.
    public func salt(tenant: String) -> [UInt8] {
        self.salts[tenant] ?? Self.salt(tenant: tenant)
    }

    static func salt(tenant: String) -> [UInt8] {
        let hex = Array("0123456789abcdef".utf8)
        var out = Array("cr-".utf8)
        for byte in SHA256.hash(("cacheroute-tenant:" + tenant).utf8).prefix(12) {
            out.append(hex[Int(byte >> 4)])
            out.append(hex[Int(byte & 0xF)])
        }
        return out
    }
}

/// Why a file the configuration names could not be used.
public struct AccessLoadError: Error, Sendable, CustomStringConvertible {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}
