import FastJSON
import Foundation
import HTTPTransport
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ReplicaEmulator

/// Helpers shared by the end-to-end tests: emulated replicas on port 0, an HTTP client, SSE
/// parsing, and the external checkers (the `openai` Python client, `promtool`).
public enum TestSupport {
    public static let group = MultiThreadedEventLoopGroup.singleton
    public static let client = HTTPClient(group: MultiThreadedEventLoopGroup.singleton)

    public static var logger: Logger {
        var logger = Logger(label: "cacheroute.test")
        logger.logLevel = .warning
        return logger
    }

    /// Starts `count` emulated replicas (names r1...rN), runs `body`, stops them.
    public static func withEmulators<T>(
        _ count: Int,
        configure: (inout EmulatorSettings, Int) -> Void = { _, _ in },
        _ body: ([EmulatorServer]) async throws -> T
    ) async throws -> T {
        var servers: [EmulatorServer] = []
        for i in 0..<count {
            var settings = EmulatorSettings()
            settings.name = "r\(i + 1)"
            settings.instant = true
            configure(&settings, i)
            servers.append(try await EmulatorServer.start(settings: settings, port: 0, logger: Self.logger))
        }
        do {
            let result = try await body(servers)
            for s in servers { await s.stop() }
            return result
        } catch {
            for s in servers { await s.stop() }
            throw error
        }
    }

    public static func get(_ port: Int, _ path: String, timeout: Double = 5) async throws -> HTTPClientResponse {
        try await Self.client.execute(HTTPClientRequest(host: "127.0.0.1", port: port, path: path), timeout: timeout)
    }

    public static func post(_ port: Int, _ path: String, _ json: String, headers: HTTPHeaders = [:], timeout: Double = 10) async throws -> HTTPClientResponse {
        try await Self.client.execute(.post(host: "127.0.0.1", port: port, path: path, json: Array(json.utf8), headers: headers), timeout: timeout)
    }

    /// `data:` payloads of an SSE body, in order.
    public static func sseEvents(_ text: String) -> [String] {
        text.components(separatedBy: "\n\n").compactMap { event in
            let lines = event.split(separator: "\n").filter { $0.hasPrefix("data: ") }
            return lines.isEmpty ? nil : lines.map { String($0.dropFirst(6)) }.joined(separator: "\n")
        }
    }

    /// Runs a Python script; nil when Python or `module` is not installed (the caller skips).
    public static func python(_ script: String, requires module: String) async throws -> (status: Int32, output: String)? {
        guard let python = Self.which("python3") else { return nil }
        let check = try await Self.run(python, ["-c", "import \(module)"])
        guard check.status == 0 else { return nil }
        return try await Self.run(python, ["-c", script])
    }

    /// Drives an OpenAI-compatible server on `port` with the official `openai` Python client: models,
    /// chat (non-streaming, then streamed with usage), completions, and a 404 for an unknown model.
    /// `chatArguments` are added to the first chat call, `chatChecks` are Python lines run after it
    /// (on its response `r`). Returns whether it printed "ok", with its output; nil when Python or
    /// the package is missing (the caller skips).
    public static func openAIClientCheck(port: Int, chatArguments: String = "", chatChecks: String = "") async throws -> (passed: Bool, output: String)? {
        let script = """
            import openai, sys
            c = openai.OpenAI(base_url="http://127.0.0.1:\(port)/v1", api_key="none", max_retries=0)
            assert [m.id for m in c.models.list().data] == ["cacheroute-demo"]
            r = c.chat.completions.create(model="cacheroute-demo", messages=[{"role": "user", "content": "hi"}], max_tokens=3\(chatArguments))
            assert r.choices[0].message.role == "assistant" and r.usage.completion_tokens == 3, r
            \(chatChecks)
            s = c.chat.completions.create(model="cacheroute-demo", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                stream=True, stream_options={"include_usage": True})
            chunks = list(s)
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
            assert len(text) == 16 and chunks[-1].usage.completion_tokens == 4, chunks
            t = c.completions.create(model="cacheroute-demo", prompt="Once upon a time", max_tokens=2)
            assert t.choices[0].finish_reason == "length" and len(t.choices[0].text) == 8
            try:
                c.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
                sys.exit("expected NotFoundError")
            except openai.NotFoundError:
                pass
            print("ok")
            """
        guard let (status, output) = try await Self.python(script, requires: "openai") else { return nil }
        return (status == 0 && output.contains("ok"), output)
    }

    /// `promtool check metrics` on `text`; nil when promtool is not installed.
    public static func promtool(_ text: String) async throws -> (status: Int32, output: String)? {
        guard let promtool = Self.which("promtool") else { return nil }
        return try await Self.run(promtool, ["check", "metrics"], input: text)
    }

    public static func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let path = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    /// Runs a program to its end, off Swift's cooperative threads: waiting for a child on one of them
    /// (two on a 2-core machine) would stall every other test's tasks, and their timeouts would fire.
    public static func run(_ executable: String, _ arguments: [String], input: String? = nil, timeout: Double = 120) async throws -> (status: Int32, output: String) {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try Self.runBlocking(executable, arguments, input: input, timeout: timeout) })
            }
        }
    }

    static func runBlocking(_ executable: String, _ arguments: [String], input: String?, timeout: Double) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        let inPipe = Pipe()
        if input != nil { process.standardInput = inPipe }
        try process.run()
        // SIGKILL: a child inherits the test process's blocked-signal mask, so SIGTERM may never land.
        let pid = process.processIdentifier
        let watchdog = DispatchWorkItem { if process.isRunning { kill(pid, SIGKILL) } }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
        defer { watchdog.cancel() }
        if let input {
            inPipe.fileHandleForWriting.write(Data(input.utf8))
            try inPipe.fileHandleForWriting.close()
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
