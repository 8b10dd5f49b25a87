import XXHash
import DequeModule

/// How the router holds requests when no replica has room.
public struct QueueSettings: Sendable, Equatable {
    /// Hold requests in the router when their replica has no room (else every request goes
    /// straight to the replica the placement chose, into its own queue).
    public var enabled: Bool
    /// Requests held at most; beyond it a request is refused at once (503).
    public var maxRequests: Int
    /// Body bytes held at most.
    public var maxBytes: Int
    /// Longest a request waits for a replica; then 503 with Retry-After.
    public var timeoutSeconds: Double
    /// A replica has room while the prefill queued on it (this router's requests still before
    /// their first token, at its learned speed) is under this many seconds ...
    public var maxReplicaWaitSeconds: Double
    /// ... and its requests in flight are under its learned concurrency (the running count at
    /// which its probes showed it queueing) times this.
    public var concurrencyHeadroom: Double
    /// Queued requests examined per chance to dispatch, so that one waiting for a busy replica
    /// does not hold back those that could go elsewhere.
    public var lookahead: Int
    /// The request header naming the tenant (lower-case); without it the `cache_salt` does, else
    /// every request is one tenant's. (An authenticated key's tenant comes first when there is one.)
    public var tenantHeader: String?
    /// The request header giving a priority: a whole number (higher first) or low, normal, high.
    public var priorityHeader: String?
    /// Priorities by tenant or model, for requests whose header gives none (first match).
    public var priorities: [PriorityRule]

    public init(
        enabled: Bool = true,
        maxRequests: Int = 1024,
        maxBytes: Int = 256 << 20,
        timeoutSeconds: Double = 60,
        maxReplicaWaitSeconds: Double = 4,
        concurrencyHeadroom: Double = 1.25,
        lookahead: Int = 32,
        tenantHeader: String? = "x-tenant",
        priorityHeader: String? = "x-priority",
        priorities: [PriorityRule] = []
    ) {
        self.tenantHeader = tenantHeader
        self.priorityHeader = priorityHeader
        self.priorities = priorities
        self.enabled = enabled
        self.maxRequests = maxRequests
        self.maxBytes = maxBytes
        self.timeoutSeconds = timeoutSeconds
        self.maxReplicaWaitSeconds = maxReplicaWaitSeconds
        self.concurrencyHeadroom = concurrencyHeadroom
        self.lookahead = lookahead
    }
}

/// A priority for the requests of a tenant and/or a model.
public struct PriorityRule: Sendable, Equatable {
    public var tenant: String?
    public var model: String?
    public var priority: Int

    public init(tenant: String? = nil, model: String? = nil, priority: Int) {
        self.tenant = tenant
        self.model = model
        self.priority = priority
    }
}

extension QueueSettings {
    /// Longest tenant name taken from a header (longer ones are cut: bounded state).
    public static let maxTenantBytes = 64

    /// The tenant of a request: `authenticated` (an API key's) when given, else the tenant header,
    /// else its `cache_salt`, else the empty name (one tenant for all).
    public func tenant(keys: RequestKeys?, header: (String) -> String?, authenticated: String? = nil) -> String {
        if let authenticated { return authenticated }
        if let name = self.tenantHeader, let value = header(name), !value.isEmpty {
            return value.utf8.count <= Self.maxTenantBytes ? value : String(decoding: value.utf8.prefix(Self.maxTenantBytes), as: UTF8.self)
        }
        if let salt = keys?.saltHash { return "salt:" + salt.hex16 }
        return ""
    }

    /// The priority of a request: its header's, else the first rule that matches, else 0.
    public func priority(tenant: String, model: String?, header: (String) -> String?) -> Int {
        if let name = self.priorityHeader, let value = header(name), let p = Self.parsePriority(value) { return p }
        for rule in self.priorities {
            if let t = rule.tenant, t != tenant { continue }
            if let m = rule.model, m != model { continue }
            return rule.priority
        }
        return 0
    }

    /// `high` (10), `normal` (0), `low` (-10), or a whole number within -1000...1000.
    public static func parsePriority(_ text: String) -> Int? {
        switch text.lowercased() {
        case "high": return 10
        case "normal": return 0
        case "low": return -10
        default: return Int(text).flatMap { (-1000...1000).contains($0) ? $0 : nil }
        }
    }
}

/// A request waiting in the router for a replica with room.
public struct QueuedRequest: Sendable {
    /// The caller's handle (a request id).
    public var id: UInt64
    public var keys: Result<RequestKeys, KeyError>
    /// The request headers pinned-group rules look at (usually none).
    public var headers: [(name: String, value: String)]
    /// The fairness key: requests of one tenant queue behind each other, tenants take turns.
    public var tenant: String
    /// Higher goes first; equal priorities share by tenant.
    public var priority: Int
    /// The body's size, held by the router while it waits.
    public var bytes: Int
    public var enqueuedAt: Double
    public var deadline: Double

    public init(
        id: UInt64, keys: Result<RequestKeys, KeyError>, headers: [(name: String, value: String)] = [], tenant: String = "", priority: Int = 0,
        bytes: Int = 0, enqueuedAt: Double, deadline: Double
    ) {
        self.id = id
        self.keys = keys
        self.headers = headers
        self.tenant = tenant
        self.priority = priority
        self.bytes = bytes
        self.enqueuedAt = enqueuedAt
        self.deadline = deadline
    }

    /// Case-insensitive lookup in the kept headers.
    public func header(_ name: String) -> String? {
        self.headers.first { $0.name == name }?.value
    }
}

/// Why a request was refused a place in the queue, or left it without a replica.
public enum QueueRejection: String, Sendable, CaseIterable {
    /// The queue holds `maxRequests` or `maxBytes` already.
    case full = "queue_full"
    /// It waited `timeoutSeconds` without a replica with room.
    case timeout = "queue_timeout"
}

/// The requests waiting in the router, fair across tenants and ordered by priority.
///
/// Priority classes are strict (a higher class always goes first); inside a class, tenants take
/// turns (round robin) and each tenant's requests keep their order. Bounded by a count and by
/// bytes. Pure: the time comes in, and whether a request can go now is the caller's question
/// (`dispatch` asks it), so the proxy and the simulator run the same queue.
public struct AdmissionQueue: Sendable {
    public var settings: QueueSettings

    struct TenantLine: Sendable {
        var requests = Deque<QueuedRequest>()
    }

    struct PriorityClass: Sendable {
        var lines: [String: TenantLine] = [:]
        /// Tenants with requests, in turn order.
        var turn = Deque<String>()
    }

    /// By priority, highest first.
    var classes: [(priority: Int, queue: PriorityClass)] = []
    public private(set) var count = 0
    public private(set) var bytes = 0

    public init(settings: QueueSettings = QueueSettings()) {
        self.settings = settings
    }

    public var isEmpty: Bool { self.count == 0 }

    /// Adds a request; refused when the queue is full.
    public mutating func enqueue(_ request: QueuedRequest) -> QueueRejection? {
        guard self.count < self.settings.maxRequests, self.bytes + request.bytes <= self.settings.maxBytes else { return .full }
        let index: Int
        if let found = self.classes.firstIndex(where: { $0.priority == request.priority }) {
            index = found
        } else {
            index = self.classes.firstIndex { $0.priority < request.priority } ?? self.classes.count
            self.classes.insert((request.priority, PriorityClass()), at: index)
        }
        if self.classes[index].queue.lines[request.tenant] == nil {
            self.classes[index].queue.lines[request.tenant] = TenantLine()
            self.classes[index].queue.turn.append(request.tenant)
        }
        self.classes[index].queue.lines[request.tenant]!.requests.append(request)
        self.count += 1
        self.bytes += request.bytes
        return nil
    }

    /// Takes out the request `id` (its client left); nil if it is not waiting.
    @discardableResult
    public mutating func remove(id: UInt64) -> QueuedRequest? {
        for c in self.classes.indices {
            for (tenant, line) in self.classes[c].queue.lines {
                guard let i = line.requests.firstIndex(where: { $0.id == id }) else { continue }
                let request = self.classes[c].queue.lines[tenant]!.requests.remove(at: i)
                self.forgetIfEmpty(class: c, tenant: tenant)
                self.count -= 1
                self.bytes -= request.bytes
                return request
            }
        }
        return nil
    }

    /// Takes out the requests whose deadline passed by `now`.
    public mutating func expire(now: Double) -> [QueuedRequest] {
        var expired: [QueuedRequest] = []
        for c in self.classes.indices {
            for tenant in Array(self.classes[c].queue.lines.keys) {
                let line = self.classes[c].queue.lines[tenant]!
                guard line.requests.contains(where: { $0.deadline <= now }) else { continue }
                expired += line.requests.filter { $0.deadline <= now }
                self.classes[c].queue.lines[tenant]!.requests.removeAll { $0.deadline <= now }
                self.forgetIfEmpty(class: c, tenant: tenant)
            }
        }
        for r in expired {
            self.count -= 1
            self.bytes -= r.bytes
        }
        self.classes.removeAll { $0.queue.turn.isEmpty }
        return expired
    }

    /// The first `limit` waiting requests in dispatch order: priority classes from the highest;
    /// inside a class, tenants in turn (one request each per round), each tenant's oldest first.
    public func peek(limit: Int) -> [QueuedRequest] {
        var out: [QueuedRequest] = []
        out.reserveCapacity(min(limit, self.count))
        for c in self.classes {
            var depth = 0
            var more = true
            while more, out.count < limit {
                more = false
                for tenant in c.queue.turn where out.count < limit {
                    let line = c.queue.lines[tenant]!.requests
                    guard depth < line.count else { continue }
                    out.append(line[line.index(line.startIndex, offsetBy: depth)])
                    more = true
                }
                depth += 1
            }
            if out.count >= limit { break }
        }
        return out
    }

    /// Takes out the requests with these ids (they went to replicas); a tenant that had one goes
    /// to the back of its class's turn order.
    public mutating func take(_ ids: Set<UInt64>) {
        guard !ids.isEmpty else { return }
        for c in self.classes.indices {
            var went: [String] = []
            for tenant in self.classes[c].queue.turn {
                var removedBytes = 0
                let before = self.classes[c].queue.lines[tenant]!.requests.count
                self.classes[c].queue.lines[tenant]!.requests.removeAll { r in
                    guard ids.contains(r.id) else { return false }
                    removedBytes += r.bytes
                    return true
                }
                let removed = before - self.classes[c].queue.lines[tenant]!.requests.count
                guard removed > 0 else { continue }
                self.count -= removed
                self.bytes -= removedBytes
                went.append(tenant)
            }
            guard !went.isEmpty else { continue }
            // Tenants that had a request go wait their turn again, in the order they were served.
            let moved = Set(went)
            var turn = Deque(self.classes[c].queue.turn.filter { !moved.contains($0) })
            for tenant in went {
                if self.classes[c].queue.lines[tenant]!.requests.isEmpty {
                    self.classes[c].queue.lines[tenant] = nil
                } else {
                    turn.append(tenant)
                }
            }
            self.classes[c].queue.turn = turn
        }
        self.classes.removeAll { $0.queue.turn.isEmpty }
    }

    /// Every waiting request (for reports).
    public var all: [QueuedRequest] {
        self.classes.flatMap { $0.queue.lines.values.flatMap(\.requests) }
    }

    private mutating func forgetIfEmpty(class c: Int, tenant: String) {
        guard self.classes[c].queue.lines[tenant]?.requests.isEmpty == true else { return }
        self.classes[c].queue.lines[tenant] = nil
        self.classes[c].queue.turn.removeAll { $0 == tenant }
    }
}
