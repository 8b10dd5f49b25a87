import Access
import Testing

@Suite struct SHA256Tests {
    static func hex(_ bytes: [UInt8]) -> String { bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }

    /// FIPS 180-4 / NIST example vectors, and lengths around the padding boundary.
    @Test func knownVectors() {
        #expect(Self.hex(SHA256.hash("".utf8)) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(Self.hex(SHA256.hash("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            Self.hex(SHA256.hash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(Self.hex(SHA256.hash([UInt8](repeating: 0x61, count: 1_000_000))) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        // 55, 56 and 64 bytes: one block, two blocks of padding, exactly one block of data.
        #expect(Self.hex(SHA256.hash([UInt8](repeating: 0x61, count: 55))) == "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318")
        #expect(Self.hex(SHA256.hash([UInt8](repeating: 0x61, count: 56))) == "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a")
        #expect(Self.hex(SHA256.hash([UInt8](repeating: 0x61, count: 64))) == "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb")
    }

    @Test func constantTimeEqualityComparesWholeDigests() {
        let a = SHA256.hash("sk-one".utf8)
        #expect(SHA256.constantTimeEqual(a, SHA256.hash("sk-one".utf8)))
        #expect(!SHA256.constantTimeEqual(a, SHA256.hash("sk-two".utf8)))
        #expect(!SHA256.constantTimeEqual(a, Array(a.dropLast())))
    }
}

@Suite struct APIKeysTests {
    @Test func readsYAMLListsAndPlainLines() throws {
        let yaml = """
            # the production keys
            - {key: sk-acme-1, tenant: acme}
            - key: "sk-acme-2"
              tenant: acme
            - key: sk-beta   # a comment
              tenant: 'beta'
            - key: sk-nobody
            """
        let keys = try APIKeys.parse(yaml)
        #expect(keys.count == 4 && keys.tenants == ["acme", "beta", "default"])
        #expect(keys.tenant(of: "sk-acme-1".utf8) == "acme" && keys.tenant(of: "sk-acme-2".utf8) == "acme")
        #expect(keys.tenant(of: "sk-beta".utf8) == "beta" && keys.tenant(of: "sk-nobody".utf8) == "default")
        #expect(keys.tenant(of: "sk-acme-3".utf8) == nil && keys.tenant(of: "".utf8) == nil && keys.tenant(of: "sk-acme-1 ".utf8) == nil)

        let plain = try APIKeys.parse("sk-a\n\n  sk-b  \n# off: sk-c\n")
        #expect(plain.count == 2 && plain.tenant(of: "sk-b".utf8) == "default" && plain.tenant(of: "sk-c".utf8) == nil)
    }

    @Test func aBrokenFileSaysWhereAndWhy() {
        let cases: [(String, String)] = [
            ("", "the file holds no key"),
            ("- tenant: acme\n", "line 1: an entry without a 'key'"),
            ("- {key: sk-a, team: x}\n", "line 1: unknown field 'team' (expected key, tenant)"),
            ("sk-a\nsk b\n", "line 2: a key must be one word of printable characters"),
            ("- key: sk-a\n  tenant:\n", "line 2: an empty tenant"),
            ("- key: sk-a\n  color: red\n", "line 2: expected 'key: ...' or 'tenant: ...'"),
        ]
        for (text, message) in cases {
            #expect(throws: KeysFileError.self) { try APIKeys.parse(text) }
            do {
                _ = try APIKeys.parse(text)
            } catch {
                #expect(error.description == message, "\(text.debugDescription)")
            }
        }
    }

    @Test func aRepeatedKeyKeepsItsFirstTenant() throws {
        let keys = try APIKeys.parse("- {key: sk-a, tenant: one}\n- {key: sk-a, tenant: two}\n")
        #expect(keys.count == 1 && keys.tenant(of: "sk-a".utf8) == "one")
    }
}

@Suite struct TenantLimiterTests {
    @Test func requestsPerSecondWithABurst() {
        var limiter = TenantLimiter(limits: ["a": TenantLimit(requestsPerSecond: 2, burstSeconds: 2)])
        // A full bucket holds 4 requests; then one every half second.
        for _ in 0..<4 { #expect(limiter.admit(tenant: "a", promptTokens: 10, now: 0) == nil) }
        let over = limiter.admit(tenant: "a", promptTokens: 10, now: 0)
        #expect(over?.exceeded == .requests && abs((over?.retryAfter ?? 0) - 0.5) < 1e-9)
        #expect(limiter.admit(tenant: "a", promptTokens: 10, now: 0.25) != nil)
        #expect(limiter.admit(tenant: "a", promptTokens: 10, now: 0.5) == nil)
        // Unlimited tenants are not tracked at all.
        #expect(limiter.admit(tenant: "b", promptTokens: 1_000_000, now: 0) == nil)
        #expect(limiter.tracked == 1)
    }

    @Test func promptTokensPerSecond() {
        var limiter = TenantLimiter(defaultLimit: TenantLimit(promptTokensPerSecond: 1000, burstSeconds: 1))
        #expect(limiter.admit(tenant: "x", promptTokens: 600, now: 0) == nil)
        let over = limiter.admit(tenant: "x", promptTokens: 600, now: 0)
        #expect(over?.exceeded == .promptTokens && abs((over?.retryAfter ?? 0) - 0.2) < 1e-9)
        #expect(limiter.admit(tenant: "x", promptTokens: 600, now: 0.2) == nil)
        // A prompt larger than the whole bucket passes once the bucket is full (else never).
        #expect(limiter.admit(tenant: "y", promptTokens: 50_000, now: 0) == nil)
        #expect(limiter.admit(tenant: "y", promptTokens: 50_000, now: 0.5) != nil)
        #expect(limiter.admit(tenant: "y", promptTokens: 50_000, now: 1.0) == nil)
    }

    @Test func stateIsBoundedByCapacity() {
        var limiter = TenantLimiter(defaultLimit: TenantLimit(requestsPerSecond: 1, burstSeconds: 1), capacity: 100)
        for i in 0..<10_000 { _ = limiter.admit(tenant: "t\(i)", promptTokens: 1, now: Double(i) * 0.001) }
        #expect(limiter.tracked <= 100)
        // The most recent tenant is still limited: its state was kept.
        #expect(limiter.admit(tenant: "t9999", promptTokens: 1, now: 9.999) != nil)
    }
}
