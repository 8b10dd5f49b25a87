import ArgumentParser

@main
struct CacheRoute: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cacheroute",
        abstract: "A cache-aware load balancer for fleets of vLLM and SGLang replicas.",
        discussion: """
            Routes each request to the replica most likely to hold its prompt prefix in KV cache,
            without overloading anyone. Start with `cacheroute demo`.
            """,
        subcommands: [Demo.self, Serve.self, Check.self, Explain.self, Emulate.self, Simulate.self, Replay.self]
    )
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
