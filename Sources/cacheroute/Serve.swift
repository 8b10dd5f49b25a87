import ArgumentParser
import Foundation
import Logging
import NIOCore
import RouterConfig
import CacheRouteRuntime
import ServiceLifecycle
import UnixSignals

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the router in front of a fleet (OpenAI and SGLang APIs).",
        discussion: """
            Reloads the configuration on SIGHUP and when the file changes (an invalid file is \
            rejected and the running configuration keeps serving). SIGTERM or SIGINT drains: \
            no new connections, in-flight requests and streams finish within shutdown.drain_timeout.
            """
    )

    @Option(name: .long, help: "The configuration file.")
    var config = "Config/cacheroute.yaml"

    func run() async throws {
        // An early SIGHUP must not kill the process before the reload service traps it.
        signal(SIGHUP, SIG_IGN)
        let configuration: RouterConfiguration
        do {
            configuration = try RouterConfiguration.load(path: self.config)
        } catch {
            printError(error.description)
            throw ExitCode(1)
        }
        LogSetup.bootstrap(configuration.logging)
        let logger = Logger(label: "cacheroute")
        // Before anything touches the shared event loops (they start on first use).
        if let threads = configuration.threads { NIOSingletons.groupLoopCountSuggestion = threads }
        let runtime: RouterRuntime
        do {
            runtime = try await RouterRuntime.start(config: configuration, configPath: self.config, logger: logger)
        } catch {
            printError("cannot start: \(error) (listen \(configuration.listen.host):\(configuration.listen.port), admin_listen \(configuration.adminListen.host):\(configuration.adminListen.port))")
            throw ExitCode(1)
        }
        let group = ServiceGroup(
            configuration: .init(
                services: runtime.services,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await group.run()
    }
}
