// The memory store's bound under a million distinct answers: stores 1,000,000 chat answers
// (about 420 bytes each, 420 MB in all) into a memory cache bounded at `cache.max_bytes`, and
// prints the process's resident memory growth against that bound (the ratio should stay near or
// under 1: the bound counts keys and bookkeeping, not just answer bytes), with the store's own
// count of bytes, entries and evictions.
//
//     swift run -c release CacheMemoryBench [entries] [max_bytes_MiB]
import CacheStore
import Foundation
import Logging
import NIOPosix
import ResponseCache
import RoutingCore

func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    return (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
}

let arguments = CommandLine.arguments
let count = arguments.count > 1 ? Int(arguments[1]) ?? 1_000_000 : 1_000_000
let boundMiB = arguments.count > 2 ? Int(arguments[2]) ?? 64 : 64
var settings = CacheSettings()
settings.enabled = true
settings.maxBytes = boundMiB << 20
let layer = try CacheLayer(settings: settings, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "bench"), clock: CacheLayer.wallClock)
let before = residentBytes()
let started = Date()
var peak = before
for i in 0..<count {
    let answer = #"{"id":"chatcmpl-\#(i)","object":"chat.completion","created":1700000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"The answer to question number \#(i) is a short sentence of about this length, as FAQ answers are."},"finish_reason":"stop"}],"usage":{"prompt_tokens":40,"completion_tokens":20,"total_tokens":60}}"#
    let request = CacheRequest(
        api: .chat, mode: .exact, key: CacheKey(scope: 1, high: UInt64(i), low: UInt64(i) &* 0x9E37_79B9_7F4A_7C15), lookup: true, store: true,
        noStoreReason: nil, ttlSeconds: 3600, threshold: 0.95, stream: false, semantic: nil)
    layer.store(request, form: .json, contentType: "application/json", body: Array(answer.utf8), vector: nil, maxEntryBytes: 1 << 20)
    if i % 50_000 == 0 { peak = max(peak, residentBytes()) }
}
peak = max(peak, residentBytes())
let stats = layer.stats()
let grown = peak - before
print("stored \(count) distinct answers in \(String(format: "%.1f", Date().timeIntervalSince(started))) s into a \(boundMiB) MiB memory cache")
print("store: \(stats.entries) entries, \(stats.bytes >> 20) MiB counted, \(stats.evictions) evictions")
print("resident memory growth (peak): \(grown >> 20) MiB = \(String(format: "%.2f", Double(grown) / Double(settings.maxBytes)))x the bound")
