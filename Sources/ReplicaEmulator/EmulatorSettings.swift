import FastJSON
import ReplicaModel
import RoutingCore

/// How an emulated replica behaves.
public struct EmulatorSettings: Sendable {
    /// Replica name (reported in stats and `/server_info`).
    public var name = "emulator"
    /// The served model name; requests for another model get 404, as from vLLM.
    public var model = "cacheroute-demo"
    public var engine: Engine = .vllm
    public var capacityTokens = 500_000
    public var blockTokens = 16
    public var timing = EngineTiming()
    /// Answer at once (no prefill or decode time): for measuring proxy overhead. The cache is still modeled.
    public var instant = false
    /// Longest prompt + output accepted, in tokens.
    public var maxModelLen = 131_072
    /// Tokens generated when a request gives no limit.
    public var defaultMaxTokens = 16
    /// Fill `usage.prompt_tokens_details.cached_tokens` (vLLM's `--enable-prompt-tokens-details`).
    public var promptTokensDetails = true
    public var faults = FaultPlan()
    /// Keep Responses made with `store` (vLLM's `VLLM_ENABLE_RESPONSES_API_STORE=1`); without it
    /// `store` is ignored and `previous_response_id` finds nothing, as in vLLM.
    public var storeResponses = true
    /// The most stored responses kept (the oldest go first; vLLM keeps them all).
    public var maxStoredResponses = 10_000

    public init() {}
}

/// Failures an emulated replica can be told to show, at start or at runtime (`POST /admin/faults`).
public struct FaultPlan: Sendable, Equatable {
    public enum Mode: String, Sendable, CaseIterable {
        case none
        /// Answer generation requests with 500.
        case error500 = "500"
        /// Answer generation requests with 503.
        case error503 = "503"
        /// Never answer (the connection stays open until the client gives up).
        case hang
        /// Close the connection before any response.
        case close
        /// Stream `afterChunks` chunks, then drop the connection.
        case dieMidStream = "die-mid-stream"
        /// Stream `afterChunks` chunks, then send nothing more (the connection stays open).
        case stallMidStream = "stall-mid-stream"
    }

    public enum Health: String, Sendable, CaseIterable {
        case ok
        /// `/health` answers 503.
        case fail
        /// `/health` answers after `healthDelay` seconds.
        case slow
        /// `/health` never answers.
        case hang
        /// `/health` alternates: 503, 200, 503, ... by the count of health requests (a flapping replica).
        case flap
    }

    public var mode: Mode = .none
    /// Fraction of generation requests the fault applies to (deterministic per request number).
    public var probability = 1.0
    public var afterChunks = 3
    public var health: Health = .ok
    public var healthDelay = 2.0

    public init() {}

    /// Applies the fields present in a JSON object (an admin update).
    public mutating func update(from json: JSONValue) throws(EngineInputError) {
        if let m = json["mode"] {
            guard let text = m.stringValue ?? m.intValue.map({ String($0) }), let mode = Mode(rawValue: text) else {
                throw EngineInputError("mode must be one of \(Mode.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            self.mode = mode
        }
        if let p = json["probability"] {
            guard let v = p.doubleValue, (0...1).contains(v) else { throw EngineInputError("probability must be 0...1") }
            self.probability = v
        }
        if let a = json["after_chunks"] {
            guard let v = a.intValue, v >= 0 else { throw EngineInputError("after_chunks must be a non-negative integer") }
            self.afterChunks = Int(v)
        }
        if let h = json["health"] {
            guard let text = h.stringValue, let health = Health(rawValue: text) else {
                throw EngineInputError("health must be one of \(Health.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            self.health = health
        }
        if let d = json["health_delay"] {
            guard let v = d.doubleValue, v >= 0 else { throw EngineInputError("health_delay must be seconds >= 0") }
            self.healthDelay = v
        }
    }

    public var json: JSONValue {
        .object([
            "mode": .string(self.mode.rawValue), "probability": .double(self.probability),
            "after_chunks": .int(Int64(self.afterChunks)), "health": .string(self.health.rawValue),
            "health_delay": .double(self.healthDelay),
        ])
    }

    /// Whether the fault applies to request number `n`.
    func applies(to n: UInt64) -> Bool {
        guard self.mode != .none else { return false }
        if self.probability >= 1 { return true }
        return Double(SplitMix64.mix(n ^ 0xFA17) % 1_000_000) / 1_000_000 < self.probability
    }
}
