// Timing shared by the micro-benchmarks: a monotonic clock and best-of-five per-call time.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Monotonic seconds.
public func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Seconds per call of `body`: a warm-up of a tenth of `iterations`, then the best of five runs.
public func measure(_ iterations: Int, _ body: () -> Void) -> Double {
    for _ in 0..<max(1, iterations / 10) { body() }
    var best = Double.infinity
    for _ in 0..<5 {
        let t0 = now()
        for _ in 0..<iterations { body() }
        best = min(best, (now() - t0) / Double(iterations))
    }
    return best
}
