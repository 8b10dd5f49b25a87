// Decision cost: parse + keys + placement for chat bodies of 4 KB, 64 KB and 512 KB, against raw
// XXH3 over the same bytes (the floor), in one process. Run: swift run -c release DecisionBench
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

func chatBody(_ bytes: Int) -> [UInt8] {
    let system = text(2048, seed: 1)
    var messages = [#"{"role":"system","content":"\#(system)"}"#]
    var size = system.utf8.count
    var turn: UInt64 = 0
    while size < bytes - 200 {
        let chunk = text(min(4096, bytes - size - 100), seed: 100 + turn)
        messages.append(#"{"role":"\#(turn % 2 == 0 ? "user" : "assistant")","content":"\#(chunk)"}"#)
        size += chunk.utf8.count + 40
        turn += 1
    }
    let body = #"{"model":"llama-3-8b","stream":true,"max_tokens":256,"messages":[\#(messages.joined(separator: ","))]}"#
    return Array(body.utf8)
}

func pad(_ s: String, _ width: Int) -> String {
    s + String(repeating: " ", count: max(0, width - s.count))
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
    let body = chatBody(size)
    let iterations = max(20, (64 << 20) / body.count)
    let floor = measure(iterations) { sink &+= XXH3.hash(body) }
    let keysOnly = measure(iterations) {
        if case .success(let k) = KeyExtractor.extract(api: .chat, body: body, rules: rules) { sink &+= k.scope }
    }
    var t = 0.0
    let full = measure(iterations) {
        let keys = KeyExtractor.extract(api: .chat, body: body, rules: rules)
        let decision = router.decide(keys, fleet: fleet, now: t)
        if case .success(let k) = keys, let r = decision.replica {
            let ticket = router.commit(k, decision: decision, replica: r, fleet: fleet, now: t)
            router.finish(ticket)
        }
        t += 0.001
    }
    let goal = size == 4 << 10 ? "< 20 us" : size == 512 << 10 ? "< 3x floor" : ""
    let ratio = String(Int((full / floor * 100).rounded())) + " %"
    let cells = [String(body.count), us(floor), us(keysOnly), us(full), ratio, goal]
    print(zip(cells, [10, 13, 13, 13, 25, 0]).map { pad($0.0, $0.1) }.joined())
}
if sink == 42 { print("") }
