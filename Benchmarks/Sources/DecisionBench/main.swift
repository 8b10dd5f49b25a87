// Decision cost: parse + keys + placement for chat bodies of 4 KB, 64 KB and 512 KB, against raw
// XXH3 over the same bytes (the floor), in one process; then the same conversation as OpenAI
// Responses and Anthropic Messages bodies against chat. Run: swift run -c release DecisionBench
import RoutingCore
import XXHash

import BenchTiming

/// English-like text with newlines, quotes and the odd non-ASCII word, as real prompts have (or,
/// with `--cjk`, Japanese and Chinese words). Non-ASCII as raw UTF-8 (as the `openai` client sends
/// it), as JSON escapes (`--escaped`: `caf\u00e9`, as Python's `json.dumps` and `requests` send it
/// by default), or, with `--ascii`, prose without any.
func text(_ bytes: Int, seed: UInt64) -> String {
    let words = cjk
        ? ["日本語", "の", "テキスト", "です", "。", "中文", "句子", "模型", "\\\"引用\\\"", "、"]
        : ["the", "customer", "asked", "about", "an", "order", "which", "was", "delayed", "by", "three", "days", "and",
           "wanted", "\\\"a refund\\\"", asciiOnly ? "cafe" : "café", "policy", "section", "4.2", "states", "that"]
    var s = ""
    var x = seed
    while s.utf8.count < bytes {
        x = SplitMix64.mix(x)
        var word = words[Int(x % UInt64(words.count))]
        if escapedNonASCII { word = escapingNonASCII(word) }
        s += word
        s += (x >> 8) % 13 == 0 ? "\\n" : cjk ? "" : " "
    }
    return s
}

/// `s` with every non-ASCII character as a JSON `\uXXXX` escape (a surrogate pair above U+FFFF).
func escapingNonASCII(_ s: String) -> String {
    var out = ""
    for unit in s.utf16 {
        if unit < 0x80 {
            out.unicodeScalars.append(Unicode.Scalar(UInt8(unit)))
        } else {
            let hex = String(unit, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        }
    }
    return out
}

/// A conversation of about `bytes` as the body of `api`: chat (a system message), Responses
/// (`instructions`, `input` items with `input_text` parts) or Messages (a `system` block with
/// `cache_control`, text blocks).
func body(_ bytes: Int, api: RequestAPI = .chat) -> [UInt8] {
    let system = text(2048, seed: 1)
    var messages: [String] = []
    var size = system.utf8.count
    var turn: UInt64 = 0
    while size < bytes - 200 {
        let chunk = text(min(4096, bytes - size - 100), seed: 100 + turn)
        let role = turn % 2 == 0 ? "user" : "assistant"
        switch api {
        case .responses:
            messages.append(#"{"type":"message","role":"\#(role)","content":[{"type":"\#(role == "user" ? "input_text" : "output_text")","text":"\#(chunk)"}]}"#)
        case .messages:
            messages.append(#"{"role":"\#(role)","content":[{"type":"text","text":"\#(chunk)"}]}"#)
        default:
            messages.append(#"{"role":"\#(role)","content":"\#(chunk)"}"#)
        }
        size += chunk.utf8.count + 40
        turn += 1
    }
    let list = messages.joined(separator: ",")
    let text: String
    switch api {
    case .responses:
        text = #"{"model":"llama-3-8b","stream":true,"max_output_tokens":256,"instructions":"\#(system)","input":[\#(list)]}"#
    case .messages:
        text = #"{"model":"llama-3-8b","stream":true,"max_tokens":256,"system":[{"type":"text","text":"\#(system)","cache_control":{"type":"ephemeral"}}],"messages":[\#(list)]}"#
    default:
        text = #"{"model":"llama-3-8b","stream":true,"max_tokens":256,"messages":[{"role":"system","content":"\#(system)"},\#(list)]}"#
    }
    return Array(text.utf8)
}

/// Keys and placement of one body, best of 5 runs.
@MainActor func decisionCost(_ body: [UInt8], api: RequestAPI) -> Double {
    var t = 0.0
    return measure(max(20, (64 << 20) / body.count)) {
        let keys = KeyExtractor.extract(api: api, body: body, rules: rules)
        let decision = router.decide(keys, fleet: fleet, now: t)
        if case .success(let k) = keys, let r = decision.replica {
            let ticket = router.commit(k, decision: decision, replica: r, fleet: fleet, now: t)
            router.finish(ticket)
        }
        t += 0.001
    }
}

func pad(_ s: String, _ width: Int) -> String {
    s + String(repeating: " ", count: max(0, width - s.count))
}

extension String {
    init(format2 value: Double) {
        let hundredths = Int((value * 100).rounded())
        self = "\(hundredths / 100).\(hundredths % 100 < 10 ? "0" : "")\(hundredths % 100)"
    }
}

func us(_ seconds: Double) -> String {
    let tenths = Int((seconds * 1e7).rounded())
    return "\(tenths / 10).\(tenths % 10) us"
}

let asciiOnly = CommandLine.arguments.contains("--ascii")
let escapedNonASCII = CommandLine.arguments.contains("--escaped")
let cjk = CommandLine.arguments.contains("--cjk")
let flags: Set = ["--ascii", "--escaped", "--cjk"]
let replicas = (1...8).map { ReplicaSpec(name: "r\($0)", url: "http://127.0.0.1:\(8000 + $0)") }
let fleet = FleetSnapshot(replicas: replicas)
var router = Router()
let rules = router.settings.keying
var sink: UInt64 = 0

print("Decision cost per request (release build, best of 5 runs), against raw XXH3 over the same bytes")
print("size      xxh3 floor   keys only    keys+place   ratio(keys+place/floor)  goal")
let sizeArguments = CommandLine.arguments.dropFirst().filter { !flags.contains($0) }
let sizes = sizeArguments.isEmpty ? [4 << 10, 64 << 10, 512 << 10] : sizeArguments.compactMap { Int($0) }.map { $0 << 10 }
for size in sizes {
    let body = body(size)
    let iterations = max(20, (64 << 20) / body.count)
    let floor = measure(iterations) { sink &+= XXH3.hash(body) }
    let keysOnly = measure(iterations) {
        if case .success(let k) = KeyExtractor.extract(api: .chat, body: body, rules: rules) { sink &+= k.scope }
    }
    let full = decisionCost(body, api: .chat)
    let goal = size == 4 << 10 ? "< 20 us" : size == 512 << 10 ? "< 3x floor" : ""
    let ratio = String(Int((full / floor * 100).rounded())) + " %"
    let cells = [String(body.count), us(floor), us(keysOnly), us(full), ratio, goal]
    print(zip(cells, [10, 13, 13, 13, 25, 0]).map { pad($0.0, $0.1) }.joined())
}
print("")
print("The same conversation through each API: keys+place, against chat")
print("size      chat         responses    ratio    messages     ratio    goal")
for size in sizes {
    let chat = decisionCost(body(size), api: .chat)
    let responses = decisionCost(body(size, api: .responses), api: .responses)
    let messages = decisionCost(body(size, api: .messages), api: .messages)
    func ratio(_ x: Double) -> String { String(format2: x / chat) + "x" }
    let cells = [String(size >> 10) + " KB", us(chat), us(responses), ratio(responses), us(messages), ratio(messages), size == 64 << 10 ? "messages < 1.2x" : ""]
    print(zip(cells, [10, 13, 13, 9, 13, 9, 0]).map { pad($0.0, $0.1) }.joined())
}
if sink == 42 { print("") }
