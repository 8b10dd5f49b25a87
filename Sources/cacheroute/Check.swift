import ArgumentParser
import RouterConfig

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate a configuration file.",
        discussion: "Exits 0 when valid; otherwise prints FILE:LINE:COLUMN: key.path: problem for each error and exits 1."
    )

    @Option(name: .long, help: "The configuration file.")
    var config = "Config/cacheroute.yaml"

    func run() throws {
        do {
            let c = try RouterConfiguration.load(path: self.config)
            var summary = "\(self.config): ok: \(c.replicas.count) replica(s)"
            if !c.discovery.isEmpty { summary += ", \(c.discovery.count) DNS discovery source(s)" }
            summary += ", listen \(c.listen), admin \(c.adminListen)"
            print(summary)
        } catch {
            printError(error.description)
            throw ExitCode(1)
        }
    }
}
