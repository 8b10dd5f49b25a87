import Access
import ArgumentParser
import HTTPTransport
import Logging
import ReplicaEmulator
import ReplicaModel
import RoutingCore
import ServiceLifecycle
import UnixSignals

struct Emulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one emulated vLLM or SGLang replica (prefix cache, timing, metrics, faults).",
        discussion: """
            Serves the OpenAI API (chat, completions, streaming), /v1/models, /health, /metrics, and in \
            SGLang mode /generate, with a real prefix cache (KV blocks, LRU) and continuous-batching \
            timing. Defaults model an 8B model on one H100: prefill 20k tokens/s, decode steps of \
            7 ms + 0.07 ms per sequence, 256 sequences, 500k tokens of KV cache.

            Faults can be set here or at runtime: POST /admin/faults {"mode": "503"}; GET /admin/stats.
            """
    )

    @Option(help: "Port to listen on (0: any free port).")
    var port: Int

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Replica name.")
    var name = "emulator"

    @Option(help: "Served model name.")
    var model = "cacheroute-demo"

    @Option(help: "vllm or sglang: endpoints and metric names.")
    var engine = "vllm"

    @Option(name: .customLong("capacity-tokens"), help: "KV-cache capacity in tokens.")
    var capacityTokens = 500_000

    @Option(name: .customLong("block-tokens"), help: "KV block size in tokens.")
    var blockTokens = 16

    @Option(help: "Speed factor (2 = twice as fast as the modeled H100).")
    var speed = 1.0

    @Flag(help: "Answer at once (no prefill or decode time), cache still modeled: for measuring proxy overhead.")
    var instant = false

    @Option(name: .customLong("max-model-len"), help: "Longest prompt + output in tokens.")
    var maxModelLen = 131_072

    @Option(help: "Fault for generation requests: none, 500, 503, hang, close, die-mid-stream, stall-mid-stream.")
    var fault = "none"

    @Option(name: .customLong("fault-probability"), help: "Fraction of requests the fault applies to.")
    var faultProbability = 1.0

    @Option(name: .customLong("fault-after"), help: "Chunks before die-mid-stream drops the connection (stall-mid-stream: stops sending).")
    var faultAfter = 3

    @Option(help: "Health fault: ok, fail, slow, hang, flap (every other /health fails).")
    var health = "ok"

    @Option(name: .customLong("tls-cert"), help: "Serve HTTPS with this PEM certificate chain (with --tls-key).")
    var tlsCert: String?

    @Option(name: .customLong("tls-key"), help: "The PEM private key of --tls-cert.")
    var tlsKey: String?

    func run() async throws {
        guard let engine = Engine(rawValue: self.engine) else { throw ValidationError("--engine must be vllm or sglang") }
        guard let mode = FaultPlan.Mode(rawValue: self.fault) else {
            throw ValidationError("--fault must be one of \(FaultPlan.Mode.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard let health = FaultPlan.Health(rawValue: self.health) else { throw ValidationError("--health must be one of \(FaultPlan.Health.allCases.map(\.rawValue).joined(separator: ", "))") }
        guard self.speed > 0 else { throw ValidationError("--speed must be positive") }
        guard self.blockTokens > 0, self.capacityTokens >= self.blockTokens else {
            throw ValidationError("--capacity-tokens must hold at least one block of --block-tokens")
        }
        var tls: ServerTLS?
        switch (self.tlsCert, self.tlsKey) {
        case (let cert?, let key?):
            do {
                tls = try ServerTLS(ServerTLSFiles(certFile: cert, keyFile: key))
            } catch {
                throw ValidationError(error.description)
            }
        case (nil, nil):
            break
        default:
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        var settings = EmulatorSettings()
        settings.name = self.name
        settings.model = self.model
        settings.engine = engine
        settings.capacityTokens = self.capacityTokens
        settings.blockTokens = self.blockTokens
        settings.timing.speed = self.speed
        settings.instant = self.instant
        settings.maxModelLen = self.maxModelLen
        settings.faults.mode = mode
        settings.faults.probability = self.faultProbability
        settings.faults.afterChunks = self.faultAfter
        settings.faults.health = health
        var logger = Logger(label: "cacheroute.emulator")
        logger.logLevel = .info
        let server = try await EmulatorServer.start(settings: settings, host: self.host, port: self.port, tls: tls, logger: logger)
        print("emulated replica \(self.name) listening on \(self.host):\(server.port)\(tls == nil ? "" : " (HTTPS)")")
        let group = ServiceGroup(
            configuration: .init(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        )
        try await group.run()
    }
}
