import CacheRouteTestSupport
import Discovery
import Foundation
import HTTPTransport
import NIOHTTP1
import ReplicaEmulator
import RouterConfig
import Admin
import CacheRouteRuntime
import DataPlane
import Discovery
import FleetState
import ReplicaProbes
import Telemetry
import RoutingCore
import Testing

@Suite struct DNSMessageTests {
    /// A response to an SRV query: two targets (names compressed against the question), their
    /// A records in the additional section, one AAAA.
    static func srvResponse() -> [UInt8] {
        var b: [UInt8] = [0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 3]
        func name(_ s: String) -> [UInt8] { s.split(separator: ".").flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) } + [0] }
        b += name("_http._tcp.vllm.test") + [0, 33, 0, 1]  // question at offset 12
        func srv(port: UInt16, target: String) {
            b += [0xC0, 12, 0, 33, 0, 1, 0, 0, 0, 30]
            let t = name(target)
            let length = 6 + t.count
            b += [0, UInt8(length), 0, 10, 0, 5, UInt8(port >> 8), UInt8(port & 0xFF)] + t
        }
        srv(port: 8001, target: "a.vllm.test")
        srv(port: 8002, target: "b.vllm.test")
        b += name("a.vllm.test") + [0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 0, 0, 1]
        b += name("b.vllm.test") + [0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 0, 0, 2]
        b += name("b.vllm.test") + [0, 28, 0, 1, 0, 0, 0, 30, 0, 16] + [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1]
        return b
    }

    @Test func queriesAndAnswersRoundTrip() throws {
        let q = try DNSMessage.query(id: 0xBEEF, name: "vllm.default.svc.cluster.local.", type: .a)
        #expect(q.prefix(4) == [0xBE, 0xEF, 0x01, 0x00])
        #expect(Array(q[12..<17]) == [4] + Array("vllm".utf8))
        #expect(q.suffix(4) == [0, 1, 0, 1])
        #expect(throws: DNSError.self) { try DNSMessage.query(id: 1, name: "a..b", type: .a) }
        let r = try DNSMessage.parse(Self.srvResponse())
        #expect(r.id == 0x1234 && r.rcode == 0 && !r.truncated)
        #expect(r.answers.map(\.data) == [
            .srv(priority: 10, weight: 5, port: 8001, target: "a.vllm.test"), .srv(priority: 10, weight: 5, port: 8002, target: "b.vllm.test"),
        ])
        #expect(r.answers[0].name == "_http._tcp.vllm.test")
        #expect(r.additional.map(\.data) == [.address("10.0.0.1"), .address("10.0.0.2"), .address("2001:db8::1")])
    }

    @Test func hostileBytesNeverTrap() {
        var bytes = Self.srvResponse()
        // A compression loop: the first answer's name points at itself.
        let loop = Array(bytes[0..<38]) + [0xC0, 38] + Array(bytes[40...])
        #expect(throws: DNSError.self) { try DNSMessage.parse(loop) }
        var rng = SplitMix64State(seed: 3)
        for _ in 0..<2000 {
            let i = Int(rng.next() % UInt64(bytes.count))
            bytes[i] = UInt8(truncatingIfNeeded: rng.next())
            _ = try? DNSMessage.parse(bytes)
            _ = try? DNSMessage.parse(Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count)))))
        }
    }

    @Test func serverAddressesParse() {
        #expect(DNSResolver.server("10.96.0.10")! == ("10.96.0.10", 53))
        #expect(DNSResolver.server("127.0.0.1:5353")! == ("127.0.0.1", 5353))
        #expect(DNSResolver.server("[::1]:5353")! == ("::1", 5353))
        #expect(DNSResolver.server("10.0.0.1:99999") == nil)
    }
}

/// A dnsmasq on loopback serving `hosts` (A records from a hosts directory, which dnsmasq
/// watches with inotify) and fixed SRV records. Signals are no use here: a child of the test
/// process inherits its blocked-signal mask, so dnsmasq would never see SIGHUP or SIGTERM.
final class LocalDNS {
    let process: Process
    let port: Int
    let hostsFile: String

    init?(hosts: String, extra: [String]) throws {
        guard let dnsmasq = TestSupport.which("dnsmasq") ?? ["/usr/sbin/dnsmasq", "/sbin/dnsmasq"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            return nil
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cacheroute-dns-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/hosts.d", withIntermediateDirectories: true)
        self.hostsFile = dir + "/hosts.d/hosts"
        try hosts.write(toFile: self.hostsFile, atomically: true, encoding: .utf8)
        self.port = Int.random(in: 20_000...40_000)
        self.process = Process()
        self.process.executableURL = URL(fileURLWithPath: dnsmasq)
        self.process.arguments = [
            "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--bind-interfaces",
            "--listen-address=127.0.0.1", "--port=\(self.port)", "--hostsdir=\(dir)/hosts.d", "--local-ttl=0",
            "--pid-file=\(dir)/pid", "--user=\(NSUserName())",
        ] + extra
        self.process.standardOutput = FileHandle.nullDevice
        self.process.standardError = FileHandle.nullDevice
        try self.process.run()
    }

    func setHosts(_ hosts: String) throws {
        try hosts.write(toFile: self.hostsFile, atomically: true, encoding: .utf8)
    }

    func stop() {
        guard self.process.isRunning else { return }
        kill(self.process.processIdentifier, SIGKILL)
        self.process.waitUntilExit()
    }

    var server: String { "127.0.0.1:\(self.port)" }

    /// Waits until dnsmasq answers.
    func ready() async -> Bool {
        let resolver = DNSResolver(host: "127.0.0.1", port: self.port, timeout: 0.3)
        for _ in 0..<40 {
            if (try? await resolver.query("ready.test", .a)) != nil { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return false
    }
}

@Suite(.serialized)
struct DNSDiscoveryTests {
    @Test func aRecordsBecomeTheFleetAndMembershipFollowsDNS() async throws {
        // Three emulated replicas on one port, on 127.0.0.2-4 (all loopback on Linux).
        var settings = EmulatorSettings()
        settings.instant = true
        settings.name = "e1"
        let first = try await EmulatorServer.start(settings: settings, host: "127.0.0.2", port: 0, logger: TestSupport.logger)
        let port = first.port
        var servers = [first]
        for i in 3...4 {
            settings.name = "e\(i - 1)"
            servers.append(try await EmulatorServer.start(settings: settings, host: "127.0.0.\(i)", port: port, logger: TestSupport.logger))
        }
        defer { for s in servers { Task { await s.stop() } } }
        guard let dns = try LocalDNS(hosts: "127.0.0.2 vllm.test\n127.0.0.3 vllm.test\n", extra: []) else {
            print("skipped: dnsmasq is not installed (Debian package dnsmasq-base)")
            return
        }
        defer { dns.stop() }
        #expect(await dns.ready())

        var c = testConfiguration([])
        var entry = DNSDiscovery(name: "vllm.test", namePrefix: "vllm")
        entry.port = port
        entry.intervalSeconds = 0.2
        entry.server = dns.server
        c.discovery = [entry]
        let runtime = try await RouterRuntime.start(config: c, configPath: nil, logger: TestSupport.logger)
        let discovery = Task { try? await runtime.discovery.run() }
        defer { discovery.cancel() }
        #expect(await eventually { runtime.state.fleet.replicas.count == 2 })
        #expect(runtime.state.fleet.replicas.map(\.name) == ["vllm-127.0.0.2-\(port)", "vllm-127.0.0.3-\(port)"])
        let before = runtime.state.fleet
        for session in 0..<8 {
            let r = try await TestSupport.post(runtime.proxy.port, "/v1/chat/completions", chatBody(session: 500 + session))
            #expect(r.status == .ok)
        }
        // A third pod appears: it joins; the others keep their identity (no remapping among them).
        try dns.setHosts("127.0.0.2 vllm.test\n127.0.0.3 vllm.test\n127.0.0.4 vllm.test\n")
        #expect(await eventually { runtime.state.fleet.replicas.count == 3 })
        let after = runtime.state.fleet
        for name in before.replicas.map(\.name) {
            #expect(after.ids[after.index(of: name)!] == before.ids[before.index(of: name)!])
        }
        var servedByNew = false
        for session in 0..<40 where !servedByNew {
            let body = #"{"model":"cacheroute-demo","max_tokens":1,"messages":[{"role":"user","content":"new pod \#(session)"}]}"#
            servedByNew = try await TestSupport.post(runtime.proxy.port, "/v1/chat/completions", body).headers["x-cacheroute-replica"].first == "vllm-127.0.0.4-\(port)"
        }
        #expect(servedByNew)
        // DNS goes away: the last good set stays.
        dns.stop()
        try await Task.sleep(for: .milliseconds(800))
        #expect(runtime.state.fleet.replicas.count == 3)
        await runtime.stop()
    }

    @Test func srvRecordsGiveTargetsAndPorts() async throws {
        try await TestSupport.withEmulators(2) { servers in
            let extra = [
                "--srv-host=_http._tcp.vllm.test,r1.vllm.test,\(servers[0].port)",
                "--srv-host=_http._tcp.vllm.test,r2.vllm.test,\(servers[1].port)",
                "--host-record=r1.vllm.test,127.0.0.1",
                "--host-record=r2.vllm.test,127.0.0.1",
            ]
            guard let dns = try LocalDNS(hosts: "", extra: extra) else {
                print("skipped: dnsmasq is not installed (Debian package dnsmasq-base)")
                return
            }
            defer { dns.stop() }
            #expect(await dns.ready())
            var entry = DNSDiscovery(name: "_http._tcp.vllm.test", namePrefix: "pod")
            entry.record = .srv
            entry.server = dns.server
            entry.models = ["cacheroute-demo"]
            let found = try await DiscoveryService.resolve(entry)
            #expect(Set(found.map(\.url)) == ["http://127.0.0.1:\(servers[0].port)", "http://127.0.0.1:\(servers[1].port)"])
            #expect(found.allSatisfy { $0.models == ["cacheroute-demo"] && $0.name.hasPrefix("pod-127.0.0.1-") })
        }
    }
}
