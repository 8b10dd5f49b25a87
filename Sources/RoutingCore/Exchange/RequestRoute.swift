#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What the router does with a request, from its method and path: the route table, in one place
/// for the proxy, `explain` and the admin API.
public enum RequestRoute: Sendable, Equatable {
    /// A generation API the router keys and places.
    case keyed(RequestAPI)
    /// A generation path with a method other than POST (405).
    case methodNotAllowed(RequestAPI)
    /// `POST /v1/messages/count_tokens`: to a replica of the model's pool, without load.
    case countTokens
    /// `/v1/responses/{id}` (GET, DELETE) and `/v1/responses/{id}/cancel`: to the replica that
    /// made the stored response.
    case storedResponse(id: String)
    /// `GET /v1/models`: merged over the fleet.
    case models
    /// `GET /health`, `/healthz`: the router itself.
    case health
    /// Anything else under `/v1/`: forwarded without keys (least-loaded).
    case forward
    /// Outside what the router serves (404).
    case notFound

    /// The route of a request. `path` is the target without its query; a trailing slash is
    /// tolerated on the generation paths. Compared as bytes: nothing is allocated.
    public init(method: RequestMethod, path: UnsafeRawBufferPointer) {
        if let api = RequestAPI(pathBytes: path) {
            self = method == .post ? .keyed(api) : .methodNotAllowed(api)
            return
        }
        if path.count > 14, UnsafeRawBufferPointer(rebasing: path[..<14]).equals("/v1/responses/") {
            var rest = UnsafeRawBufferPointer(rebasing: path[14...])
            if rest.count > 7, UnsafeRawBufferPointer(rebasing: rest[(rest.count - 7)...]).equals("/cancel") {
                rest = UnsafeRawBufferPointer(rebasing: rest[..<(rest.count - 7)])
            }
            if !rest.isEmpty, !rest.contains(UInt8(ascii: "/")) {
                self = .storedResponse(id: String(decoding: rest, as: UTF8.self))
                return
            }
        }
        if path.equals("/v1/messages/count_tokens") {
            self = method == .post ? .countTokens : .methodNotAllowed(.messages)
            return
        }
        if path.equals("/v1/models") {
            self = method == .get ? .models : .forward
        } else if path.equals("/health") || path.equals("/healthz") {
            self = .health
        } else if path.count >= 4, UnsafeRawBufferPointer(rebasing: path[..<4]).equals("/v1/") {
            self = .forward
        } else {
            self = .notFound
        }
    }

    /// The route of a path given as a string (explain, the admin API).
    public init(method: RequestMethod, path: String) {
        var path = path
        self = path.withUTF8 { RequestRoute(method: method, path: UnsafeRawBufferPointer($0)) }
    }

    /// The label of this route in metrics and logs.
    public var label: String {
        switch self {
        case .keyed(let api): api.rawValue
        case .models: "models"
        case .countTokens: "messages"
        case .storedResponse: "responses"
        case .forward: "other"
        case .methodNotAllowed, .health, .notFound: "local"
        }
    }
}

/// The request methods the route table tells apart.
public enum RequestMethod: Sendable, Equatable {
    case get
    case post
    case other
}

extension RequestAPI {
    /// The API a request path belongs to (`/v1/chat/completions`, `/v1/completions`, `/generate`),
    /// compared as bytes; one trailing slash is tolerated.
    public init?(pathBytes path: UnsafeRawBufferPointer) {
        var path = path
        if path.count > 1, path[path.count - 1] == UInt8(ascii: "/") { path = UnsafeRawBufferPointer(rebasing: path[..<(path.count - 1)]) }
        switch path.count {
        case 20 where path.equals("/v1/chat/completions"): self = .chat
        case 15 where path.equals("/v1/completions"): self = .completions
        case 9 where path.equals("/generate"): self = .generate
        case 13 where path.equals("/v1/responses"): self = .responses
        case 12 where path.equals("/v1/messages"): self = .messages
        default: return nil
        }
    }
}

extension UnsafeRawBufferPointer {
    /// Whether these bytes are exactly `literal`'s.
    @inline(__always)
    func equals(_ literal: StaticString) -> Bool {
        guard self.count == literal.utf8CodeUnitCount else { return false }
        guard let base = self.baseAddress else { return self.count == 0 }
        return memcmp(base, literal.utf8Start, self.count) == 0
    }
}
