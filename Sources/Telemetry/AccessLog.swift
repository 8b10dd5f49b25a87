import FleetState
import Logging
import RoutingCore

/// One line per request at info: request id, client address, route, status, replica, tier,
/// attempts, durations, sizes, token counts. Never prompt text, keys or session ids.
public struct AccessLog: ProxyObserver {
    let logger: Logger

    public init(logger: Logger) {
        self.logger = logger
    }

    public func retried(replica: String, outcome: AttemptOutcome) {}
    public func attemptFailed(replica: String, outcome: AttemptOutcome) {}

    public func requestFinished(_ s: RequestSummary) {
        var metadata: Logger.Metadata = [
            "route": "\(s.route)", "method": "\(s.method)", "path": "\(s.path)", "status": "\(s.status)",
            "ms": "\(Int((s.seconds * 1000).rounded()))", "attempts": "\(s.attempts)",
            "bytes_in": "\(s.requestBytes)", "bytes_out": "\(s.responseBytes)",
        ]
        if let id = s.requestID { metadata["request_id"] = "\(id)" }
        if let client = s.client { metadata["client"] = "\(client)" }
        if let replica = s.replica { metadata["replica"] = "\(replica)" }
        if let tier = s.tier { metadata["tier"] = "\(tier.rawValue)" }
        if let tenant = s.tenant, tenant != "none" { metadata["tenant"] = "\(tenant)" }
        if let cache = s.cache { metadata["cache"] = "\(cache)" }
        if let ttfb = s.firstByteSeconds { metadata["ttfb_ms"] = "\(Int((ttfb * 1000).rounded()))" }
        if let ttft = s.firstTokenSeconds { metadata["ttft_ms"] = "\(Int((ttft * 1000).rounded()))" }
        if s.streamed { metadata["stream"] = "true" }
        if s.clientGone { metadata["client_gone"] = "true" }
        if !s.upstreamErrors.isEmpty { metadata["upstream_errors"] = "\(s.upstreamErrors.joined(separator: ","))" }
        if let p = s.promptTokensEstimate { metadata["prompt_tokens_est"] = "\(p)" }
        if let c = s.usageCachedTokens { metadata["cached_tokens"] = "\(c)" }
        self.logger.info("request", metadata: metadata)
    }
}
