import FastJSON
import RoutingCore

/// The built-in multi-tenant chat workload of `cacheroute demo`: tenants with long system
/// prompts (their instructions), each with several users holding multi-turn conversations. The
/// next turn carries the whole history, as chat clients send it, so a replica that saw the last
/// turn has all but the newest message in cache. Deterministic for a seed.
public struct DemoWorkload: Sendable {
    public struct Conversation: Sendable {
        public var tenant: Int
        public var system: String
        /// The user messages, one per turn.
        public var turns: [String]
    }

    public var conversations: [Conversation]
    public var model: String
    public var maxTokens: Int

    public var requestCount: Int { self.conversations.reduce(0) { $0 + $1.turns.count } }

    public init(tenants: Int = 8, conversationsPerTenant: Int = 6, turns: ClosedRange<Int> = 4...7, model: String = "cacheroute-demo", maxTokens: Int = 32, seed: UInt64 = 7) {
        var rng = SeededRandom(seed: seed)
        let topics = ["orders", "refunds", "shipping", "accounts", "billing", "warranty", "returns", "loyalty points"]
        var conversations: [Conversation] = []
        for t in 0..<tenants {
            // 5 to 10 KiB of instructions per tenant (about 1.2k to 2.5k tokens): policies, tone, tools.
            var system = "You are the support assistant of tenant \(t) (\(topics[t % topics.count])). Follow these rules.\n"
            let rules = 60 + Int(rng.next() % 60)
            for r in 0..<rules {
                system += "Rule \(r + 1): " + Self.sentence(&rng, words: 8 + Int(rng.next() % 8)) + "\n"
            }
            for c in 0..<conversationsPerTenant {
                let count = turns.lowerBound + Int(rng.next() % UInt64(turns.count))
                let user = (0..<count).map { turn in
                    "Customer \(t)-\(c), message \(turn + 1): " + Self.sentence(&rng, words: 60 + Int(rng.next() % 140))
                }
                conversations.append(Conversation(tenant: t, system: system, turns: user))
            }
        }
        // Interleave tenants so traffic mixes from the start.
        conversations.sort { ($0.turns.count * 31 + $0.tenant * 7) % 11 < ($1.turns.count * 31 + $1.tenant * 7) % 11 }
        self.conversations = conversations
        self.model = model
        self.maxTokens = maxTokens
    }

    /// The request for `turn` of a conversation, given the assistant's earlier answers, streamed:
    /// chat (the system message first), Responses (`instructions` and the history as `input`), or
    /// Anthropic Messages (`system` and `messages`). The three carry the same conversation.
    public func body(_ conversation: Conversation, turn: Int, answers: [String], api: RequestAPI = .chat) -> [UInt8] {
        var messages: [JSONValue] = []
        for i in 0...turn {
            messages.append(.object(["role": .string("user"), "content": .string(conversation.turns[i])]))
            if i < turn { messages.append(.object(["role": .string("assistant"), "content": .string(answers[i])])) }
        }
        let request: JSONValue
        switch api {
        case .responses:
            request = .object([
                "model": .string(self.model), "instructions": .string(conversation.system), "input": .array(messages),
                "max_output_tokens": .int(Int64(self.maxTokens)), "stream": .bool(true), "store": .bool(false),
            ])
        case .messages:
            request = .object([
                "model": .string(self.model), "system": .string(conversation.system), "messages": .array(messages),
                "max_tokens": .int(Int64(self.maxTokens)), "stream": .bool(true),
            ])
        case .chat, .completions, .generate:
            request = .object([
                "model": .string(self.model),
                "messages": .array([.object(["role": .string("system"), "content": .string(conversation.system)])] + messages),
                "max_tokens": .int(Int64(self.maxTokens)),
                "stream": .bool(true),
                "stream_options": .object(["include_usage": .bool(true)]),
            ])
        }
        var out: [UInt8] = []
        request.write(to: &out)
        return out
    }

    static let vocabulary = [
        "the", "order", "arrived", "late", "and", "the", "box", "was", "damaged", "please", "check", "my", "account",
        "invoice", "for", "last", "month", "shows", "a", "charge", "I", "did", "not", "expect", "can", "you", "explain",
        "why", "delivery", "window", "changed", "refund", "policy", "says", "within", "thirty", "days", "customer",
        "always", "confirm", "identity", "before", "sharing", "details", "never", "promise", "dates", "escalate",
    ]

    static func sentence(_ rng: inout SeededRandom, words: Int) -> String {
        (0..<words).map { _ in Self.vocabulary[Int(rng.next() % UInt64(Self.vocabulary.count))] }.joined(separator: " ") + "."
    }
}

/// A seeded pseudo-random sequence (SplitMix64 steps).
public struct SeededRandom: Sendable {
    private var state: UInt64

    public init(seed: UInt64) {
        self.state = seed
    }

    public mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        return SplitMix64.mix(self.state)
    }
}
