import FastJSON
import XXHash

extension RoutingDecision {
    /// The decision as JSON for `cacheroute explain` and `/admin/explain`: the replica, the tier,
    /// the keys (as hashes), the ordered candidates with what was known of each, and the reason.
    public func report(keys: Result<RequestKeys, KeyError>, fleet: FleetSnapshot, settings: RoutingSettings) -> JSONValue {
        var members: [JSONValue.Member] = [
            .init("replica", self.replica.map { .string(fleet.replicas[$0].name) } ?? .null),
            .init("url", self.replica.map { .string(fleet.replicas[$0].url) } ?? .null),
            .init("tier", .string(self.tier.rawValue)),
            .init("reason", .string(self.reason(in: fleet))),
        ]
        switch keys {
        case .success(let k):
            members += [
                .init("api", .string(k.api.rawValue)),
                .init("model", k.model.map { .string($0) } ?? .null),
                .init("scope", .string(k.scope.hex16)),
                .init("prompt_bytes", .int(Int64(k.promptBytes))),
                .init("prompt_tokens_estimate", .int(Int64(k.promptTokens(bytesPerToken: settings.keying.bytesPerToken)))),
                .init("blocks", .int(Int64(k.chain.count))),
                .init("instruction_key", k.instruction.map { .string($0.key.hex16) } ?? .null),
                .init("instruction_bytes", .int(Int64(k.instructionBytes))),
                .init("session_key", k.session.map { .string($0.key.hex16) } ?? .null),
                .init("session_source", k.session.map { .string($0.source.description) } ?? .null),
                .init("stream", .bool(k.stream)),
            ]
        case .failure(let error):
            members += [
                .init("keys_error", .object(["kind": .string(error.kind.rawValue), "message": .string(error.message)])),
                .init("instruction_key", .null),
                .init("session_key", .null),
                .init("scope", .null),
            ]
        }
        members += [
            .init("group_width", .int(Int64(self.groupWidth))),
            .init("miss_tokens_estimate", .int(Int64(self.missTokens))),
            .init(
                "candidates",
                .array(
                    self.candidates.map { c in
                        .object([
                            "replica": .string(fleet.replicas[c.replica].name),
                            "in_group": .bool(c.inGroup),
                            "eligible": .bool(c.eligible),
                            "ineligible_because": c.ineligibleBecause.map { .string($0) } ?? .null,
                            "cached_tokens_estimate": .int(Int64(c.cachedTokens)),
                            "in_flight": .int(Int64(c.inFlight)),
                            "cost_seconds": .double((c.cost * 1_000_000).rounded() / 1_000_000),
                            "predicted_first_token_seconds": .double((c.predictedFirstTokenSeconds * 1_000_000).rounded() / 1_000_000),
                            "prefill_tokens_per_second": .double(c.prefillTokensPerSecond.rounded()),
                        ])
                    }
                )
            ),
            .init("retry_order", .array(self.retryOrder(in: fleet, model: try? keys.get().model).map { .string(fleet.replicas[$0].name) })),
        ]
        return .object(members)
    }
}
