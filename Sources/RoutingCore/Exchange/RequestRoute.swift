/// What the router does with a request, from its method and path: the route table, in one place
/// for the proxy, `explain` and the admin API.
public enum RequestRoute: Sendable, Equatable {
    /// A generation API the router keys and places.
    case keyed(RequestAPI)
    /// A generation path with a method other than POST (405).
    case methodNotAllowed(RequestAPI)
    /// `GET /v1/models`: merged over the fleet.
    case models
    /// `GET /health`, `/healthz`: the router itself.
    case health
    /// Anything else under `/v1/`: forwarded without keys (least-loaded).
    case forward
    /// Outside what the router serves (404).
    case notFound

    /// The route of a request. `path` is the target without its query; a trailing slash is
    /// tolerated on the generation paths.
    public init(method: RequestMethod, path: some Collection<UInt8>) {
        if let api = RequestAPI(pathBytes: path) {
            self = method == .post ? .keyed(api) : .methodNotAllowed(api)
            return
        }
        if path.elementsEqual("/v1/models".utf8) {
            self = method == .get ? .models : .forward
        } else if path.elementsEqual("/health".utf8) || path.elementsEqual("/healthz".utf8) {
            self = .health
        } else if path.starts(with: "/v1/".utf8) {
            self = .forward
        } else {
            self = .notFound
        }
    }

    /// The label of this route in metrics and logs.
    public var label: String {
        switch self {
        case .keyed(let api): api.rawValue
        case .models: "models"
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
    public init?(pathBytes path: some Collection<UInt8>) {
        let n = path.count
        let slash = n > 1 && path.dropFirst(n - 1).first == UInt8(ascii: "/")
        let body = path.prefix(slash ? n - 1 : n)
        switch body.count {
        case 20 where body.elementsEqual("/v1/chat/completions".utf8): self = .chat
        case 15 where body.elementsEqual("/v1/completions".utf8): self = .completions
        case 9 where body.elementsEqual("/generate".utf8): self = .generate
        default: return nil
        }
    }
}
