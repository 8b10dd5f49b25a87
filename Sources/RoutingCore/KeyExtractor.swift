import FastJSON
import XXHash

/// Derives `RequestKeys` from OpenAI chat, OpenAI completions and SGLang `/generate` bodies.
///
/// The canonical prompt is a byte string built from the body in one pass:
/// - chat: tools, functions and documents as canonical JSON, then each message as its role and
///   content (text parts joined with a newline, other parts as the hash of their canonical JSON),
///   then any other message fields as canonical JSON;
/// - completions and `/generate`: each prompt (text, or token ids as decimal text).
///
/// Fields are separated by control bytes (below 0x20). Canonical text never contains a raw control
/// byte (JSON escapes them, and `CanonicalString` keeps them escaped), so the separators are
/// unambiguous without length prefixes, and an earlier turn of a conversation stays a byte prefix
/// of the later turns, exactly as the engine's token sequence does.
public enum KeyExtractor {
    /// Field separators of the canonical prompt.
    enum Tag {
        static let message: UInt8 = 0x01
        static let content: UInt8 = 0x02
        static let part: UInt8 = 0x04
        static let nullContent: UInt8 = 0x05
        static let extras: UInt8 = 0x06
        static let tools: UInt8 = 0x10
        static let functions: UInt8 = 0x11
        static let documents: UInt8 = 0x12
        static let prompt: UInt8 = 0x13
        static let tokens: UInt8 = 0x14
        static let options: UInt8 = 0x15
        static let suffix: UInt8 = 0x16
    }

    /// Keys for `body`. `sessionHeader` is the explicit session header the caller found, if any
    /// (see `KeyingRules.sessionHeader(in:)`).
    public static func extract(
        api: RequestAPI,
        body: UnsafeRawBufferPointer,
        sessionHeader: (name: String, value: String)? = nil,
        rules: KeyingRules
    ) -> Result<RequestKeys, KeyError> {
        guard body.count <= rules.maxKeyBytes else {
            return .failure(
                KeyError(.tooLarge, "body of \(body.count) bytes exceeds routing.max_key_bytes (\(rules.maxKeyBytes))")
            )
        }
        guard body.count > 0 else { return .failure(KeyError(.malformedJSON, "empty body")) }
        var parser = BodyParser(reader: JSONReader(body), api: api, rules: rules)
        do {
            try parser.parse()
        } catch let error as KeyError {
            return .failure(error)
        } catch let error as JSONError {
            return .failure(KeyError(.malformedJSON, error.description))
        } catch {
            return .failure(KeyError(.malformedJSON, "\(error)"))
        }
        return .success(parser.finish(sessionHeader: sessionHeader))
    }

    /// Keys for a request: its body and its headers (`header` looks one up by lower-case name;
    /// the first configured session header present is the explicit session). The one way keys
    /// are made, for the proxy, `explain`, the admin API and the simulator.
    public static func extract(
        api: RequestAPI,
        body: UnsafeRawBufferPointer,
        header: (String) -> String?,
        rules: KeyingRules
    ) -> Result<RequestKeys, KeyError> {
        Self.extract(api: api, body: body, sessionHeader: rules.sessionHeader(in: header), rules: rules)
    }

    /// Keys for a request whose body is held in an array.
    public static func extract(
        api: RequestAPI,
        body: [UInt8],
        header: (String) -> String?,
        rules: KeyingRules
    ) -> Result<RequestKeys, KeyError> {
        body.withUnsafeBytes { Self.extract(api: api, body: $0, sessionHeader: rules.sessionHeader(in: header), rules: rules) }
    }

    /// Keys for a body held in an array.
    public static func extract(
        api: RequestAPI,
        body: [UInt8],
        sessionHeader: (name: String, value: String)? = nil,
        rules: KeyingRules
    ) -> Result<RequestKeys, KeyError> {
        body.withUnsafeBytes { Self.extract(api: api, body: $0, sessionHeader: sessionHeader, rules: rules) }
    }

    /// The seed every chain of `scope` starts from, and the domain of explicit session ids.
    static func sessionSeed(scope: UInt64) -> UInt64 {
        XXH3.hash("cacheroute.session", seed: scope)
    }
}
