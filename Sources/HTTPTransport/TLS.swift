import Access
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

/// The cipher suites offered for TLS 1.2: ECDHE key exchange and AEAD ciphers only (no CBC, no
/// RSA key exchange, no SHA-1). TLS 1.3 suites are all AEAD and need no list.
let modernTLS12Ciphers = [
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
].joined(separator: ":")

/// Why TLS material could not be used.
public struct TLSSetupError: Error, Sendable, CustomStringConvertible {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// What a listener presents: a TLS context made from PEM files, swapped when the files are
/// reloaded. A connection takes the context current when it is accepted, so a swap drops none
/// (open connections keep the certificate they were accepted with).
public final class ServerTLS: Sendable {
    /// A context made from files, ready to be served.
    public struct Prepared: Sendable {
        let context: NIOSSLContext
        let files: ServerTLSFiles
        let serial: String

        /// Reads `files`; throws when they do not make a context.
        public init(_ files: ServerTLSFiles) throws(TLSSetupError) {
            (self.context, self.serial) = try ServerTLS.makeContext(files)
            self.files = files
        }
    }

    private let current: NIOLockedValueBox<Prepared>

    public convenience init(_ files: ServerTLSFiles) throws(TLSSetupError) {
        self.init(try Prepared(files))
    }

    public init(_ prepared: Prepared) {
        self.current = NIOLockedValueBox(prepared)
    }

    public var context: NIOSSLContext { self.current.withLockedValue { $0.context } }
    public var files: ServerTLSFiles { self.current.withLockedValue { $0.files } }
    /// The serial number of the leaf certificate served now (hex), for logs.
    public var serial: String { self.current.withLockedValue { $0.serial } }

    /// Serves `prepared` to connections accepted from now on.
    public func install(_ prepared: Prepared) {
        self.current.withLockedValue { $0 = prepared }
    }

    static func makeContext(_ files: ServerTLSFiles) throws(TLSSetupError) -> (NIOSSLContext, String) {
        let chain = try certificates(files.certFile, what: "cert_file")
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: files.keyFile, format: .pem)
        } catch {
            throw TLSSetupError("key_file \(files.keyFile): cannot read a PEM private key (\(error))")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.cipherSuites = modernTLS12Ciphers
        configuration.applicationProtocols = ["http/1.1"]
        if let ca = files.clientCAFile {
            configuration.trustRoots = .certificates(try certificates(ca, what: "client_ca_file"))
            configuration.certificateVerification = .noHostnameVerification
        }
        do {
            let context = try NIOSSLContext(configuration: configuration)
            return (context, chain[0].serialNumber.map { String($0, radix: 16, uppercase: true).leftPadded(2) }.joined())
        } catch {
            throw TLSSetupError("cert_file \(files.certFile) and key_file \(files.keyFile) do not make a TLS context: \(error)")
        }
    }
}

/// A TLS client context for replicas, made once per configuration and shared by the upstream
/// pools and the probes.
public final class ClientTLS: Sendable, Equatable {
    public let context: NIOSSLContext
    public let settings: ClientTLSSettings

    public init(_ settings: ClientTLSSettings) throws(TLSSetupError) {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.cipherSuites = modernTLS12Ciphers
        configuration.applicationProtocols = ["http/1.1"]
        if let ca = settings.caFile { configuration.trustRoots = .certificates(try certificates(ca, what: "upstream.tls.ca_file")) }
        if settings.dangerouslySkipVerification { configuration.certificateVerification = .none }
        switch (settings.certFile, settings.keyFile) {
        case (let cert?, let key?):
            configuration.certificateChain = try certificates(cert, what: "upstream.tls.cert_file").map { .certificate($0) }
            do {
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            } catch {
                throw TLSSetupError("upstream.tls.key_file \(key): cannot read a PEM private key (\(error))")
            }
        case (nil, nil):
            break
        default:
            throw TLSSetupError("upstream.tls needs both cert_file and key_file for a client certificate")
        }
        do {
            self.context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSetupError("upstream.tls: cannot make a TLS context: \(error)")
        }
        self.settings = settings
    }

    public static func == (a: ClientTLS, b: ClientTLS) -> Bool { a === b }

    /// The TLS handler for a connection to `host`: SNI and verification name from the override or
    /// the host (an IP address gets no SNI and is verified against the certificate's IP entries).
    public func handler(host: String) throws -> NIOSSLClientHandler {
        let name = self.settings.serverName ?? host
        let isAddress = (try? SocketAddress(ipAddress: name, port: 0)) != nil
        return try NIOSSLClientHandler(context: self.context, serverHostname: isAddress ? nil : name)
    }
}

func certificates(_ path: String, what: String) throws(TLSSetupError) -> [NIOSSLCertificate] {
    let chain: [NIOSSLCertificate]
    do {
        chain = try NIOSSLCertificate.fromPEMFile(path)
    } catch {
        throw TLSSetupError("\(what) \(path): cannot read PEM certificates (\(error))")
    }
    guard !chain.isEmpty else { throw TLSSetupError("\(what) \(path): no certificate in the file") }
    return chain
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        self.count >= width ? self : String(repeating: "0", count: width - self.count) + self
    }
}

/// A TLS error said briefly: "TLS handshake failed: CERTIFICATE_VERIFY_FAILED" rather than the
/// nested error values with BoringSSL's source paths.
public struct TLSFailure: Error, Sendable, CustomStringConvertible {
    public var description: String

    public init?(_ error: any Error) {
        guard let ssl = error as? NIOSSLError else { return nil }
        switch ssl {
        case .handshakeFailed(let inner):
            // BoringSSL's reason is the last ':'-separated field before " at <file>".
            let text = "\(inner)"
            let reasons = text.split(separator: ":").map { $0.split(separator: " ").first.map(String.init) ?? "" }
                .filter { !$0.isEmpty && $0.allSatisfy { $0.isUppercase || $0 == "_" || $0.isNumber } && $0.contains("_") }
            self.description = "TLS handshake failed: \(reasons.last ?? text)"
        default:
            self.description = "TLS: \(ssl)"
        }
    }
}
