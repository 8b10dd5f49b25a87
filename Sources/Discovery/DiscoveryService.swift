import FleetState
import Logging
import RouterConfig
import RoutingCore
import ServiceLifecycle

/// Replicas from DNS: the A/AAAA or SRV records of each `discovery` entry (a Kubernetes headless
/// Service), re-resolved on its interval. A change goes through the same snapshot swap as a
/// reload; names are `<prefix>-<address>-<port>`, so a replica keeps its identity (ring points,
/// index, health) while its address stays, and only added or removed ones move keys. A failed
/// lookup keeps the last good set: a DNS blip never empties the fleet.
public final class DiscoveryService: Service, Sendable {
    let state: RouterState
    let logger: Logger

    public init(state: RouterState, logger: Logger) {
        self.state = state
        self.logger = logger
    }

    public func run() async throws {
        var last: [Int: [ReplicaSpec]] = [:]
        var nextDue: [Int: ContinuousClock.Instant] = [:]
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            let entries = self.state.config.discovery
            if entries.isEmpty {
                if !last.isEmpty {
                    last = [:]
                    self.state.setDiscovered([])
                }
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            let now = ContinuousClock.now
            var changed = false
            for (i, entry) in entries.enumerated() where (nextDue[i] ?? now) <= now {
                nextDue[i] = now + .milliseconds(Int(entry.intervalSeconds * 1000))
                do {
                    let found = try await Self.resolve(entry)
                    if found != last[i] {
                        self.logger.notice(
                            "discovered replicas changed",
                            metadata: ["dns": "\(entry.name)", "replicas": "\(found.map(\.name).joined(separator: ","))"]
                        )
                        last[i] = found
                        changed = true
                    }
                } catch {
                    self.logger.warning("DNS discovery failed; keeping the last good set", metadata: ["dns": "\(entry.name)", "error": "\(error)"])
                }
            }
            // Entries removed by a reload drop their replicas.
            for key in last.keys where key >= entries.count {
                last[key] = nil
                changed = true
            }
            if changed {
                var seen = Set<String>()
                let all = last.keys.sorted().flatMap { last[$0] ?? [] }.filter { seen.insert($0.name).inserted }
                self.state.setDiscovered(all)
            }
            try? await Task.sleep(for: .milliseconds(200))
        }
    }

    /// The replicas one entry names now.
    public static func resolve(_ entry: DNSDiscovery) async throws -> [ReplicaSpec] {
        var resolver = DNSResolver.system()
        if let server = entry.server, let parsed = DNSResolver.server(server) {
            resolver.host = parsed.host
            resolver.port = parsed.port
        }
        var targets: [(address: String, port: Int)] = []
        switch entry.record {
        case .a:
            for address in try await Self.addresses(entry.name, resolver: resolver, additional: []) {
                targets.append((address, entry.port))
            }
        case .srv:
            let response = try await resolver.query(entry.name, .srv)
            guard response.rcode == 0 || response.rcode == 3 else { throw DNSError("DNS error \(response.rcode) for \(entry.name)") }
            for record in response.answers {
                guard case .srv(_, _, let port, let target) = record.data else { continue }
                for address in try await Self.addresses(target, resolver: resolver, additional: response.additional) {
                    targets.append((address, Int(port)))
                }
            }
        }
        var seen = Set<String>()
        return targets.sorted { ($0.address, $0.port) < ($1.address, $1.port) }.compactMap { t in
            let name = "\(entry.namePrefix)-\(t.address)-\(t.port)"
            guard seen.insert(name).inserted else { return nil }
            let host = t.address.contains(":") ? "[\(t.address)]" : t.address
            return ReplicaSpec(name: name, url: "\(entry.tls ? "https" : "http")://\(host):\(t.port)", weight: entry.weight, models: entry.models, engine: entry.engine, cacheTokens: entry.cacheTokens)
        }
    }

    /// A and AAAA addresses of a name (from the additional section when the server gave them).
    static func addresses(_ name: String, resolver: DNSResolver, additional: [DNSRecord]) async throws -> [String] {
        let known = additional.filter { $0.name.lowercased() == name.lowercased().trimmingSuffix(".") }.compactMap { r -> String? in
            if case .address(let a) = r.data { return a }
            return nil
        }
        if !known.isEmpty { return known }
        var out: [String] = []
        var failures = 0
        for type in [DNSRecordType.a, .aaaa] {
            do {
                let response = try await resolver.query(name, type)
                guard response.rcode == 0 || response.rcode == 3 else {
                    failures += 1
                    continue
                }
                for record in response.answers {
                    if case .address(let a) = record.data { out.append(a) }
                }
            } catch {
                failures += 1
                if failures == 2 { throw error }
            }
        }
        return out
    }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String {
        self.hasSuffix(suffix) ? String(self.dropLast(suffix.count)) : self
    }
}
