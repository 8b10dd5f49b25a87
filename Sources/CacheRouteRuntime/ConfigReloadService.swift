import FleetState
import HTTPTransport
import Foundation
import Logging
import NIOConcurrencyHelpers
import RouterConfig
import ServiceLifecycle
import UnixSignals

/// Reloads the configuration on SIGHUP and when the file changes. A new file is validated first;
/// a valid one swaps in (in-flight requests are untouched, new ones use it); an invalid one is
/// logged, counted and ignored, and the running configuration keeps serving.
public final class ConfigReloadService: Service, Sendable {
    let path: String
    let state: RouterState
    let listenerTLS: ListenerTLS
    let logger: Logger
    let onResult: @Sendable (_ success: Bool) -> Void
    /// One reload at a time (SIGHUP and the file watcher may fire together), and the files as the
    /// last reload read them: a change SIGHUP already applied is not applied (and counted) again
    /// when the watcher sees it.
    let reloading = NIOLockedValueBox<[Data?]?>(nil)

    public init(
        path: String, state: RouterState, listenerTLS: ListenerTLS = .none, logger: Logger,
        onResult: @escaping @Sendable (Bool) -> Void = { _ in }
    ) {
        self.path = path
        self.state = state
        self.listenerTLS = listenerTLS
        self.logger = logger
        self.onResult = onResult
    }

    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in signals.cancelOnGracefulShutdown() { self.reload(reason: "SIGHUP") }
            }
            group.addTask {
                self.reloading.withLockedValue { $0 = self.fingerprint() }
                while !Task.isCancelled, !Task.isShuttingDownGracefully {
                    let config = self.state.config
                    guard config.reload.watchFile else {
                        try? await Task.sleep(for: .seconds(1))
                        continue
                    }
                    try? await Task.sleep(for: .milliseconds(Int(config.reload.pollSeconds * 1000)))
                    let now = self.fingerprint()
                    if now != self.reloading.withLockedValue({ $0 }) { self.reload(reason: "file change") }
                }
            }
            await group.next()
            group.cancelAll()
        }
    }

    /// The file's contents and those of the files it names (certificates, keys, tokens), to
    /// notice a change however it was made (editor, rename, ConfigMap or cert-manager symlink swap).
    func fingerprint() -> [Data?] {
        [FileManager.default.contents(atPath: self.path)] + self.state.config.referencedFiles.map { FileManager.default.contents(atPath: $0) }
    }

    /// Reads, validates and applies the file; returns whether it was applied.
    @discardableResult
    public func reload(reason: String) -> Bool {
        self.reloading.withLockedValue { seen in
            // Read before the files are: a change landing during the reload is seen next time
            // (unless the reload named other files: then as they are now).
            let paths = self.state.config.referencedFiles
            let before = self.fingerprint()
            let applied = self.reloadLocked(reason: reason)
            seen = self.state.config.referencedFiles == paths ? before : self.fingerprint()
            return applied
        }
    }

    private func reloadLocked(reason: String) -> Bool {
        do {
            let config = try RouterConfiguration.load(path: self.path)
            let old = self.state.config
            // Every file it names must be usable before anything swaps: all or nothing.
            let access = try AccessPolicy.load(config, previous: self.state.access)
            try self.listenerTLS.reload(config)
            if (config.tls == nil) != (old.tls == nil) || (config.adminTLS == nil) != (old.adminTLS == nil) {
                self.logger.warning("TLS turns on or off only on restart; certificates of listeners with TLS were reloaded", metadata: ["reason": "\(reason)"])
            }
            if config.listen != old.listen || config.adminListen != old.adminListen {
                self.logger.warning("listener addresses change only on restart; keeping the current ones", metadata: ["reason": "\(reason)"])
            }
            if config.threads != old.threads {
                self.logger.warning("'threads' changes only on restart; keeping the current event loops", metadata: ["reason": "\(reason)"])
            }
            self.state.apply(config, access: access)
            self.state.countReload(success: true)
            var metadata: Logger.Metadata = ["reason": "\(reason)", "replicas": "\(config.replicas.count)", "version": "\(self.state.version)"]
            if let data = self.listenerTLS.data { metadata["certificate_serial"] = "\(data.serial)" }
            self.logger.notice("configuration reloaded", metadata: metadata)
            self.onResult(true)
            return true
        } catch {
            self.state.countReload(success: false)
            self.logger.error("configuration rejected; the running one stays", metadata: ["reason": "\(reason)", "error": "\(error)"])
            self.onResult(false)
            return false
        }
    }
}
