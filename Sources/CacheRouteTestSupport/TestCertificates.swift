import Foundation

/// A CA and a certificate it signed for `localhost` and `127.0.0.1` (usable by a server and as a
/// client certificate), made with `openssl` at test time.
public struct TestCertificates: Sendable {
    public let directory: String
    public var caFile: String { self.directory + "/ca.crt" }
    public var certFile: String { self.directory + "/server.crt" }
    public var keyFile: String { self.directory + "/server.key" }

    /// Makes a fresh CA and certificate in a new temporary directory; nil when `openssl` is missing.
    public static func make(serial: Int = 4096) async throws -> TestCertificates? {
        let directory = NSTemporaryDirectory() + "cacheroute-tls-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let certificates = TestCertificates(directory: directory)
        guard try await certificates.renew(serial: serial, newCA: true) else { return nil }
        return certificates
    }

    /// Issues a new certificate (and key) with `serial` from the CA, written over the old files
    /// the way cert-manager renews one (a new file renamed into place). Returns false without openssl.
    @discardableResult
    public func renew(serial: Int, newCA: Bool = false) async throws -> Bool {
        guard let openssl = TestSupport.which("openssl") else { return false }
        let d = self.directory
        var steps: [[String]] = []
        if newCA {
            steps.append([
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "\(d)/ca.key", "-out",
                "\(d)/ca.crt", "-days", "2", "-subj", "/CN=cacheroute test CA",
            ])
        }
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n"
            .write(toFile: "\(d)/ext.cnf", atomically: true, encoding: .utf8)
        steps += [
            [
                "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "\(d)/new.key", "-out", "\(d)/new.csr",
                "-subj", "/CN=localhost",
            ],
            [
                "x509", "-req", "-in", "\(d)/new.csr", "-CA", "\(d)/ca.crt", "-CAkey", "\(d)/ca.key", "-set_serial", "\(serial)", "-out",
                "\(d)/new.crt", "-days", "2", "-extfile", "\(d)/ext.cnf",
            ],
        ]
        for step in steps {
            let (status, output) = try await TestSupport.run(openssl, step)
            guard status == 0 else { throw CertificateError(description: "openssl \(step[0]) failed: \(output)") }
        }
        _ = rename("\(d)/new.key", "\(d)/server.key")
        _ = rename("\(d)/new.crt", "\(d)/server.crt")
        return true
    }

    /// A self-signed certificate no CA vouches for, in its own files: (cert, key).
    public func untrusted() async throws -> (cert: String, key: String) {
        let openssl = try opensslPath()
        let d = self.directory
        let (status, output) = try await TestSupport.run(openssl, [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "\(d)/rogue.key", "-out",
            "\(d)/rogue.crt", "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        guard status == 0 else { throw CertificateError(description: "openssl req failed: \(output)") }
        return ("\(d)/rogue.crt", "\(d)/rogue.key")
    }

    public func remove() {
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    public struct CertificateError: Error, CustomStringConvertible {
        public var description: String
    }
}

private func opensslPath() throws -> String {
    guard let path = TestSupport.which("openssl") else { throw TestCertificates.CertificateError(description: "openssl is not installed") }
    return path
}
