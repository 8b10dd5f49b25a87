import Access
import FastJSON
import NIOHTTP1
import RoutingCore

/// An error the router itself answers with, OpenAI-shaped: `{"error": {"message", "type", "code"}}`
/// (Anthropic-shaped on `/v1/messages`: `{"type": "error", "error": {"type", "message"}}`).
public struct ProxyError: Error, Sendable {
    public var status: HTTPResponseStatus
    public var type: String
    public var code: String
    public var message: String
    /// Seconds for `Retry-After` (503).
    public var retryAfter: Int?
    public var param: String?
    /// vLLM's own errors carry the HTTP status as `code`; the router's own carry a name.
    public var numericCode = false

    public init(status: HTTPResponseStatus, type: String, code: String, message: String, retryAfter: Int? = nil, param: String? = nil) {
        self.status = status
        self.type = type
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
        self.param = param
    }

    /// A stored response the fleet no longer holds (its replica left): word for word what vLLM
    /// answers for an id it does not know, so clients see one error for both.
    public static func responseNotFound(_ id: String) -> ProxyError {
        var e = ProxyError(status: .notFound, type: "invalid_request_error", code: "404", message: "Response with id '\(id)' not found.", param: "response_id")
        e.numericCode = true
        return e
    }

    /// No key, or not one of the router's keys (`auth.api_keys_file`). The key is never echoed.
    public static func unauthorized(missing: Bool) -> ProxyError {
        let message = missing
            ? "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
            : "Incorrect API key provided."
        return ProxyError(status: .unauthorized, type: "invalid_request_error", code: "invalid_api_key", message: message)
    }

    /// The tenant is over one of its limits (`tenants.limits`).
    public static func rateLimited(tenant: String, _ exceeded: LimitExceeded, retryAfter: Int) -> ProxyError {
        let what = exceeded == .requests ? "requests per second" : "prompt tokens per second"
        return ProxyError(
            status: .tooManyRequests, type: exceeded == .requests ? "requests" : "tokens", code: "rate_limit_exceeded",
            message: "Rate limit reached for \(tenant.isEmpty ? "this client" : "tenant '\(tenant)'") on \(what); retry after \(retryAfter) s.",
            retryAfter: retryAfter)
    }

    /// The router sets `cache_salt` for tenant isolation and refuses a client's own (`tenants.cache_salt: refuse`).
    public static func saltRefused() -> ProxyError {
        ProxyError(
            status: .badRequest, type: "invalid_request_error", code: "cache_salt_not_allowed",
            message: "'cache_salt' is set by the router from your tenant; remove it from the request", param: "cache_salt")
    }

    public static func bodyTooLarge(limit: Int) -> ProxyError {
        ProxyError(status: .payloadTooLarge, type: "invalid_request_error", code: "request_too_large", message: "request body exceeds the limit of \(limit) bytes")
    }

    public static func noReplica(_ reason: String) -> ProxyError {
        ProxyError(status: .serviceUnavailable, type: "service_unavailable", code: "no_healthy_replica", message: "no replica can take this request: \(reason)", retryAfter: 2)
    }

    /// The router's queue refused the request (503, with when to try again).
    public static func overloaded(_ reason: QueueRejection, retryAfter: Int) -> ProxyError {
        let message = reason == .full
            ? "every replica is busy and the router's queue is full; retry after \(retryAfter) s"
            : "every replica stayed busy for as long as the router's queue holds a request (queue.timeout); retry after \(retryAfter) s"
        return ProxyError(status: .serviceUnavailable, type: "overloaded_error", code: reason.rawValue, message: message, retryAfter: retryAfter)
    }

    public static func badGateway(_ detail: String) -> ProxyError {
        ProxyError(status: .badGateway, type: "upstream_error", code: "bad_gateway", message: detail)
    }

    public static func gatewayTimeout(_ detail: String) -> ProxyError {
        ProxyError(status: .gatewayTimeout, type: "upstream_error", code: "gateway_timeout", message: detail)
    }

    public static func requestTimeout() -> ProxyError {
        ProxyError(status: .requestTimeout, type: "invalid_request_error", code: "request_timeout", message: "the request was not received in time")
    }

    public static func notFound(_ path: String) -> ProxyError {
        ProxyError(status: .notFound, type: "invalid_request_error", code: "not_found", message: "no route for \(path); cacheroute serves /v1/* and /generate")
    }

    /// A request the HTTP parser refused (400, 431, 501, 505).
    public static func malformed(status: Int, _ detail: String) -> ProxyError {
        let code: String
        switch status {
        case 431: code = "request_header_fields_too_large"
        case 501: code = "not_implemented"
        case 505: code = "http_version_not_supported"
        default: code = "bad_request"
        }
        return ProxyError(status: HTTPResponseStatus(statusCode: status), type: "invalid_request_error", code: code, message: detail)
    }

    public static func methodNotAllowed(_ method: String, _ path: String) -> ProxyError {
        ProxyError(status: .methodNotAllowed, type: "invalid_request_error", code: "method_not_allowed", message: "\(method) is not allowed on \(path)")
    }

    public var body: [UInt8] { self.body(anthropic: false) }

    /// The body; `anthropic`: in the Messages API's shape, with its error types.
    public func body(anthropic: Bool) -> [UInt8] {
        var out: [UInt8] = []
        if anthropic {
            JSONValue.object(["type": .string("error"), "error": .object(["type": .string(self.anthropicType), "message": .string(self.message)])]).write(to: &out)
            return out
        }
        JSONValue.object([
            "error": .object([
                "message": .string(self.message), "type": .string(self.type),
                "code": self.numericCode ? .int(Int64(self.status.code)) : .string(self.code), "param": self.param.map { .string($0) } ?? .null,
            ])
        ]).write(to: &out)
        return out
    }

    /// Anthropic's error type for the status (their documented set).
    var anthropicType: String {
        switch self.status.code {
        case 400, 405, 408, 431, 501, 505: "invalid_request_error"
        case 401: "authentication_error"
        case 403: "permission_error"
        case 404: "not_found_error"
        case 413: "request_too_large"
        case 429: "rate_limit_error"
        case 503: "overloaded_error"
        default: "api_error"
        }
    }

    /// The same error as a Server-Sent Event, ending a stream that already started (Anthropic
    /// streams name it: `event: error`).
    public func sseEvent(anthropic: Bool = false) -> [UInt8] {
        (anthropic ? Array("event: error\n".utf8) : []) + Array("data: ".utf8) + self.body(anthropic: anthropic) + Array("\n\n".utf8)
    }
}
