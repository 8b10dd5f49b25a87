import Testing
import RoutingCore
import XXHash

/// XXH3-64 values pinned to `xxhsum -H3` (xxhash 0.8.1) and, for seeds, to the independent
/// Python `xxhash` package. A change here changes every placement.
struct XXH3Tests {
    @Test(arguments: [
        ("", 0x2d06_8005_38d3_94c2 as UInt64),
        ("a", 0xe6c6_32b6_1e96_4e1f),
        ("hello", 0x9555_e855_5c62_dcfd),
        ("The quick brown fox jumps over the lazy dog", 0xce7d_19a5_418f_b365),
    ])
    func matchesXxhsum(input: String, expected: UInt64) {
        #expect(XXH3.hash(input) == expected)
        #expect(XXH3.hash(Array(input.utf8)) == expected)
    }

    @Test func largeInputMatchesXxhsum() {
        // 4096 bytes: 0...255 sixteen times (`xxhsum -H3` prints eb4b7c3707879151).
        let bytes = (0..<16).flatMap { _ in (0...255).map { UInt8($0) } }
        #expect(XXH3.hash(bytes) == 0xeb4b_7c37_0787_9151)
    }

    @Test func seededMatchesReference() {
        #expect(XXH3.hash("hello", seed: 1) == 0x74b0_7ed3_97a8_9e92)
        #expect(XXH3.hash("hello", seed: 0xdead_beef_cafe_babe) == 0x8b29_9878_f730_128b)
        let bytes = (0..<16).flatMap { _ in (0...255).map { UInt8($0) } }
        #expect(XXH3.hash(bytes, seed: 42) == 0x0c53_5f8a_1bfd_00ad)
    }

    @Test func hexIsSixteenDigits() {
        #expect(UInt64(0xab).hex16 == "00000000000000ab")
        var x: UInt64 = 1
        for value in [UInt64(0), .max, 0x8000_0000_0000_0000] + (0..<64).map({ _ in x = SplitMix64.mix(x); return x }) {
            let digits = String(value, radix: 16)
            #expect(value.hex16 == String(repeating: "0", count: 16 - digits.count) + digits)
        }
        #expect(XXH3.libraryVersion >= 800)
    }
}
