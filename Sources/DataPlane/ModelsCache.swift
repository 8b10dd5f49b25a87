import FastJSON
import FleetState
import HTTPTransport
import NIOCore
import NIOHTTP1
import NIOPosix
import RouterConfig
import RoutingCore

/// `GET /v1/models` merged over the fleet: every routable replica of one snapshot is asked (in
/// parallel, with a short timeout), their `data` lists are merged by model id; the answer is kept
/// for a few seconds, per snapshot version. One per proxy.
actor ModelsCache {
    private var cached: (version: Int, at: ContinuousClock.Instant, value: JSONValue)?
    private let client = HTTPClient(group: MultiThreadedEventLoopGroup.singleton)
    private let ttl = Duration.seconds(5)

    func merged(state: RouterState) async -> JSONValue? {
        let version = state.version
        if let c = self.cached, c.version == version, ContinuousClock.now - c.at < self.ttl { return c.value }
        let fleet = state.fleet
        let targets = fleet.replicas.indices.filter { fleet.routable[$0] }.compactMap { fleet.endpoints[$0].url }
        let client = self.client
        let access = state.access
        let lists = await withTaskGroup(of: [JSONValue].self) { group in
            for url in targets {
                group.addTask {
                    let request = access.replicaRequest(url, path: "/v1/models")
                    guard let response = try? await client.execute(request, timeout: 2), response.status == .ok,
                        let value = try? JSONValue.parse(response.bodyBytes), let data = value["data"]?.arrayValue
                    else { return [] }
                    return data
                }
            }
            var all: [[JSONValue]] = []
            for await list in group { all.append(list) }
            return all
        }
        guard lists.contains(where: { !$0.isEmpty }) else { return nil }
        var seen = Set<String>()
        var data: [JSONValue] = []
        for model in lists.joined() {
            guard let id = model["id"]?.stringValue, seen.insert(id).inserted else { continue }
            data.append(model)
        }
        let value = JSONValue.object(["object": .string("list"), "data": .array(data)])
        self.cached = (version, ContinuousClock.now, value)
        return value
    }
}
