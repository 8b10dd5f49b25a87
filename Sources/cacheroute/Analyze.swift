import ArgumentParser
import FastJSON
import LiveLoad
import Foundation
import RouterConfig
import RoutingCore
import TraceReplay

struct Analyze: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find what breaks prefix caching in a file of requests.",
        discussion: """
            Reads requests in the trace format `simulate` reads (one JSON object per line with \
            `body`, optional `path`, `headers`, `timestamp` in ms) and prints the instruction \
            templates, the byte ranges that vary from request to request while what follows stays \
            the same (timestamps, ids, names early in a system prompt), reordered tools, and what \
            moving them would make shareable: the same report as /admin/prefixes. Only hashes and \
            counts are kept while reading.
            """
    )

    @Option(name: .long, help: "The request file (JSON lines with a body each).")
    var requests: String?

    @Flag(name: .long, help: "Analyse a built-in example instead: 8 tenants, one with a timestamp early in its system prompt, one with a request id, one shuffling its tools.")
    var example = false

    @Option(name: .long, help: "A configuration file for the keying rules (block size, raw-prompt depth); defaults otherwise.")
    var config: String?

    @Flag(name: .long, help: "Print JSON instead of text.")
    var json = false

    func run() throws {
        var rules = KeyingRules()
        var settings = InsightSettings()
        if let path = self.config {
            do {
                let c = try RouterConfiguration.load(path: path)
                rules = c.routing.keying
                settings = c.insight
            } catch {
                printError(error.description)
                throw ExitCode(1)
            }
        }
        let trace: Trace
        if self.example {
            let requests = PlantedWorkload.requests(400).enumerated().map { n, r in
                TraceRequest(line: n + 1, timestampMs: Double(n) * 250, content: .body(path: "/v1/chat/completions", headers: [], body: r.body))
            }
            trace = Trace(name: "example", requests: requests)
        } else {
            guard let path = self.requests else {
                printError("give --requests FILE (or --example)")
                throw ExitCode(1)
            }
            do {
                trace = try Trace.load(path: path)
            } catch {
                printError("\(error)")
                throw ExitCode(1)
            }
            for w in trace.warnings { printError("\(path): \(w)") }
        }
        let (report, skipped) = PrefixAnalysis.analyze(trace, rules: rules, settings: settings.prefixInsight)
        if skipped > 0 { printError("\(skipped) line(s) without a generation request body skipped") }
        if self.json {
            print(report.json.pretty)
        } else {
            print(report.text, terminator: "")
        }
    }
}
