import ArgumentParser
import FastJSON
import Foundation
import RouterConfig
import RoutingCore

struct Explain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show where a request would go and why, as JSON.",
        discussion: """
            Reads a request body (a file, or '-' / nothing for standard input) and prints the routing \
            decision against the configured replicas, all assumed healthy and idle. The API is taken \
            from --api, else guessed from the body (system or anthropic_version: messages, input or \
            instructions: responses, messages: chat, prompt: completions, text or input_ids: /generate).
            """
    )

    @Option(name: .long, help: "The configuration file.")
    var config = "Config/cacheroute.yaml"

    @Option(name: .customShort("H"), help: "A request header, 'name: value' (repeatable).")
    var header: [String] = []

    @Option(name: .long, help: "chat, completions, generate, responses or messages (or the request path).")
    var api: String?

    @Argument(help: "The request body file, or '-' for standard input.")
    var request = "-"

    func run() throws {
        let config: RouterConfiguration
        do {
            config = try RouterConfiguration.load(path: self.config)
        } catch {
            printError(error.description)
            throw ExitCode(1)
        }
        guard !config.replicas.isEmpty else {
            printError("\(self.config): no static replicas to explain against (discovery finds replicas at run time; use /admin/explain)")
            throw ExitCode(1)
        }
        let body: [UInt8]
        do {
            body = try FileHandleOutput.read(self.request)
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        var headers: [(String, String)] = []
        for h in self.header {
            guard let colon = h.firstIndex(of: ":") else {
                printError("-H '\(h)': expected 'name: value'")
                throw ExitCode(1)
            }
            headers.append((h[..<colon].trimmingCharacters(in: .whitespaces).lowercased(), h[h.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        let api: RequestAPI
        if let text = self.api {
            guard let parsed = RequestAPI(rawValue: text) ?? RequestAPI(path: text) else {
                printError("--api: expected chat, completions, generate, responses or messages, got '\(text)'")
                throw ExitCode(1)
            }
            api = parsed
        } else {
            api = RequestAPI.detect(body: body) ?? .chat
        }
        let lookup: (String) -> String? = { name in headers.last { $0.0 == name.lowercased() }?.1 }
        let settings = config.routing
        let keys = KeyExtractor.extract(api: api, body: body, header: lookup, rules: settings.keying)
        let fleet = FleetSnapshot(replicas: config.replicas, vnodesPerWeight: settings.placement.vnodesPerWeight)
        let decision = Router(settings: settings).decide(keys, header: lookup, fleet: fleet, now: 0)
        print(decision.report(keys: keys, fleet: fleet, settings: settings).pretty)
    }
}
