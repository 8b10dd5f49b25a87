import ArgumentParser
import TraceReplay

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Darwin)
@preconcurrency import Darwin
#endif

@main
struct CacheRoute: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cacheroute",
        abstract: "A cache-aware load balancer for fleets of vLLM and SGLang replicas.",
        discussion: """
            Routes each request to the replica most likely to hold its prompt prefix in KV cache, \
            without overloading anyone. Start with `cacheroute demo`.
            """,
        subcommands: [Demo.self, Serve.self, Check.self, Explain.self, Analyze.self, Emulate.self, Simulate.self, Replay.self]
    )

    /// Standard output is line-buffered even into a file or a pipe: `emulate` announces its port,
    /// `demo --keep` its table and URLs, and both then keep running; fully buffered, a script or
    /// `tee` reading them would see nothing until exit.
    static func main() async {
        setvbuf(stdout, nil, _IOLBF, 0)
        await Self.main(nil)
    }
}

/// Loads a trace for `simulate` and `replay`: bad lines are reported (the first ten) and
/// skipped; an unreadable file or one without a usable request exits 1.
func loadTrace(_ path: String) throws -> Trace {
    let trace: Trace
    do {
        trace = try Trace.load(path: path)
    } catch {
        printError("\(path): \(error)")
        throw ExitCode(1)
    }
    for warning in trace.warnings.prefix(10) { printError("\(path): \(warning)") }
    if trace.warnings.count > 10 { printError("\(path): \(trace.warnings.count - 10) more lines skipped") }
    guard !trace.requests.isEmpty else {
        printError("\(path): no usable requests")
        throw ExitCode(1)
    }
    return trace
}

/// Printing to standard error.
func printError(_ text: String) {
    var stream = StandardError()
    print(text, to: &stream)
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        FileHandleOutput.standardError(string)
    }
}
