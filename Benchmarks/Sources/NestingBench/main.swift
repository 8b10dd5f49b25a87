// Hostile nesting: key extraction of chat bodies whose tool parameters nest deeply (objects and
// arrays, keys in order and out of order, within the depth limit and beyond it), against a flat
// body of the same size, in one process. The goal: at most 2x the flat body's time at any size.
// Run: swift run -c release NestingBench [KiB...]
import RoutingCore

import BenchTiming

/// A chat body of about `bytes` with one tool whose `parameters` is `nested`, padded with a
/// description string to the size.
func body(_ bytes: Int, parameters: String) -> [UInt8] {
    let pad = max(0, bytes - parameters.utf8.count - 200)
    let text = String(repeating: "lorem ipsum ", count: pad / 12 + 1).prefix(pad)
    let json = #"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","description":"\#(text)","parameters":\#(parameters)}}]}"#
    return Array(json.utf8)
}

/// `depth` levels of objects around `inner`; `unordered`: two keys per level, out of order.
func objects(_ depth: Int, unordered: Bool, inner: String) -> String {
    var s = inner
    for i in 0..<depth { s = unordered ? #"{"z\#(i)":1,"a":\#(s)}"# : #"{"a":\#(s),"z\#(i)":1}"# }
    return s
}

/// Two decimals, right-aligned in 8 columns.
func fixed(_ v: Double) -> String {
    let s = String(Double(Int((v * 100).rounded())) / 100)
    return String(repeating: " ", count: max(0, 8 - s.count)) + s
}

let sizes = CommandLine.arguments.dropFirst().compactMap { Int($0) }.map { $0 << 10 }
let kib = sizes.isEmpty ? [600 << 10, 2400 << 10, 8 << 20] : sizes
var rules = KeyingRules()
rules.maxKeyBytes = 64 << 20
var sink = 0
print("body                                   size      flat        hostile     ratio   outcome")
for size in kib {
    // The payload sits at the bottom of the nesting: every level holds all of it.
    let payload = #""\#(String(repeating: "x", count: size / 2))""#
    let cases: [(String, String)] = [
        ("objects, 500 deep, keys in order", objects(500, unordered: false, inner: payload)),
        ("objects, 500 deep, keys out of order", objects(500, unordered: true, inner: payload)),
        ("objects, 100k deep (over the limit)", String(repeating: #"{"a":"#, count: 100_000) + "1" + String(repeating: "}", count: 100_000)),
        ("arrays, 100k deep (over the limit)", String(repeating: "[", count: 100_000) + "1" + String(repeating: "]", count: 100_000)),
    ]
    for (name, parameters) in cases {
        let hostile = body(size, parameters: parameters)
        let flat = body(hostile.count, parameters: #"{"type":"object"}"#)
        let iterations = max(3, (4 << 20) / hostile.count)
        let tFlat = measure(iterations) {
            if case .success(let k) = flat.withUnsafeBytes({ KeyExtractor.extract(api: .chat, body: $0, header: { _ in nil }, rules: rules) }) { sink &+= k.chain.count }
        }
        var outcome = ""
        let tHostile = measure(iterations) {
            switch hostile.withUnsafeBytes({ KeyExtractor.extract(api: .chat, body: $0, header: { _ in nil }, rules: rules) }) {
            case .success(let k): sink &+= k.chain.count; outcome = "keyed"
            case .failure(let e): outcome = "refused: \(e.message)"
            }
        }
        let label = name + String(repeating: " ", count: max(0, 38 - name.count))
        print("\(label) \(hostile.count >> 10) KiB  \(fixed(tFlat * 1e3)) ms  \(fixed(tHostile * 1e3)) ms  \(fixed(tHostile / tFlat))x   \(outcome)")
    }
}
if sink == 42 { print("") }
