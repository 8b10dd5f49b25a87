import Access
import ArgumentParser
import CacheRouteRuntime
import FleetState
import RouterConfig

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate a configuration file and the files it names (certificates, keys, tokens).",
        discussion: "Exits 0 when valid; otherwise prints FILE:LINE:COLUMN: key.path: problem for each error (or the file that cannot be used) and exits 1."
    )

    @Option(name: .long, help: "The configuration file.")
    var config = "Config/cacheroute.yaml"

    func run() throws {
        let c: RouterConfiguration
        do {
            c = try RouterConfiguration.load(path: self.config)
        } catch {
            printError(error.description)
            throw ExitCode(1)
        }
        do {
            let access = try AccessPolicy.load(c)
            try ListenerTLS.validate(c)
            var summary = "\(self.config): ok: \(c.replicas.count) replica(s)"
            if !c.discovery.isEmpty { summary += ", \(c.discovery.count) DNS discovery source(s)" }
            summary += ", listen \(c.listen)\(c.tls == nil ? "" : " (TLS)"), admin \(c.adminListen)\(c.adminTLS == nil ? "" : " (TLS)")"
            if let keys = access.apiKeys { summary += ", \(keys.count) API key(s) for \(keys.tenants.count) tenant(s)" }
            print(summary)
        } catch {
            printError("\(self.config): \(error)")
            throw ExitCode(1)
        }
    }
}
