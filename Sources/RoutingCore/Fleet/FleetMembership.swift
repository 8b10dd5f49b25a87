/// Where the fleet's members come from: the configured replicas, those found in DNS, and the
/// models probes learned for replicas that list none. `members` merges them, in that order of
/// precedence; the result is what a snapshot is built from.
public struct FleetMembership: Sendable, Equatable {
    /// From the configuration.
    public var configured: [ReplicaSpec]
    /// From DNS discovery (a name also configured is the configured one).
    public var discovered: [ReplicaSpec] = []
    /// Models each replica reported on `/v1/models`, by name.
    public var probedModels: [String: [String]] = [:]

    public init(configured: [ReplicaSpec]) {
        self.configured = configured
    }

    /// Configured replicas, then discovered ones not configured by name; a replica that lists no
    /// models takes the ones probed from it.
    public var members: [ReplicaSpec] {
        var specs = self.configured
        let names = Set(specs.map(\.name))
        specs += self.discovered.filter { !names.contains($0.name) }
        for i in specs.indices where specs[i].models.isEmpty {
            if let models = self.probedModels[specs[i].name], !models.isEmpty { specs[i].models = models }
        }
        return specs
    }
}
