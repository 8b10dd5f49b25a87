import CJSONScan
import FastJSON
import Testing

/// Every vectorized string scan the CPU runs (AVX-512 VBMI, AVX-512, AVX2, SSE2: not only the one
/// `cjs_scan_string` picks) must agree exactly with the plain C scan on adversarial input: escapes
/// at block edges, runs of backslashes, quotes, control bytes, and valid and invalid UTF-8 of
/// every length.
struct ScanTests {
    static let pieces: [[UInt8]] = [
        [UInt8(ascii: "\\")], [UInt8(ascii: "\\"), UInt8(ascii: "\\")], [UInt8(ascii: "\"")],
        [UInt8(ascii: "\\"), UInt8(ascii: "\"")], [UInt8(ascii: "\\"), UInt8(ascii: "n")],
        [UInt8(ascii: "\\"), UInt8(ascii: "u")], [UInt8(ascii: "\\"), UInt8(ascii: "/")],
        [UInt8(ascii: "\\"), UInt8(ascii: "x")], [UInt8(ascii: "u")], [UInt8(ascii: "n")], [0x01], [0x1F], [0x7F], [0x00], [UInt8(ascii: "b")],
        Array("é".utf8), Array("日".utf8), Array("😀".utf8), [0xC3], [0xE6, 0x97], [0xF0, 0x9F, 0x98],
        [0x80], [0xBF], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xFF],
    ]

    func random(_ state: inout UInt64, length: Int, invalidOK: Bool) -> [UInt8] {
        var out: [UInt8] = []
        while out.count < length {
            state = SplitMixForTests.next(state)
            let r = Int(state % 100)
            if r < 70 {
                out.append(UInt8(ascii: "a") + UInt8(state >> 32 % 26) % 26)
            } else {
                let choices = invalidOK ? Self.pieces.count : 19
                out.append(contentsOf: Self.pieces[Int((state >> 16) % UInt64(choices))])
            }
        }
        return out
    }

    /// The vector implementations: all but the last (the plain C scan itself).
    static var vectorImplementations: Range<Int> { 0..<(cjs_scan_implementation_count() - 1) }

    @Test func theScanInUseIsTheFirstImplementation() {
        let bytes = Array("ab\\\"c\u{e9}\"".utf8)
        let used = bytes.withUnsafeBufferPointer { cjs_scan_string($0.baseAddress, 0, $0.count) }
        let first = bytes.withUnsafeBufferPointer { cjs_scan_string_using(0, $0.baseAddress, 0, $0.count) }
        // a b \ " c é (two bytes), then the closing quote at 7.
        #expect(used.end == 7 && first.end == 7 && used.flags == first.flags)
        #expect(cjs_scan_implementation_count() >= 1 && cjs_scan_implementation_count() <= Int(CJS_MAX_IMPLEMENTATIONS))
    }

    @Test func vectorScanAgreesWithPlainScan() {
        for implementation in Self.vectorImplementations {
            var state: UInt64 = 42
            for round in 0..<4000 {
                let length = [1, 15, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200, 1000][round % 13]
                var bytes = self.random(&state, length: length, invalidOK: round % 3 != 0)
                // A closing quote then ASCII, so both scans judge the same bytes.
                bytes += Array("\"}, \"x\": 1".utf8)
                for from in [0, 1, 3] where from < bytes.count {
                    let fast = bytes.withUnsafeBufferPointer { cjs_scan_string_using(implementation, $0.baseAddress, from, $0.count) }
                    let slow = bytes.withUnsafeBufferPointer { cjs_scan_string_portable($0.baseAddress, from, $0.count) }
                    #expect(fast.end == slow.end, "implementation \(implementation): end differs, round \(round) from \(from): \(bytes)")
                    #expect(
                        fast.flags == slow.flags,
                        "implementation \(implementation): flags \(fast.flags) vs \(slow.flags), round \(round) from \(from): \(bytes)")
                    if fast.end != slow.end || fast.flags != slow.flags { return }
                }
            }
        }
    }

    /// A body that ends inside a UTF-8 sequence (no closing quote), at and around block edges.
    @Test func bodyEndingInsideASequenceIsInvalidUTF8() {
        for length in [1, 2, 31, 32, 33, 63, 64, 65, 127, 128, 129] {
            for cut in [[0xC3], [0xE6, 0x97], [0xF0, 0x9F, 0x98]] as [[UInt8]] where cut.count <= length {
                let bytes = [UInt8](repeating: UInt8(ascii: "a"), count: length - cut.count) + cut
                let slow = bytes.withUnsafeBufferPointer { cjs_scan_string_portable($0.baseAddress, 0, $0.count) }
                #expect(slow.flags & UInt32(CJS_BAD_UTF8) != 0)
                for implementation in Self.vectorImplementations {
                    let fast = bytes.withUnsafeBufferPointer { cjs_scan_string_using(implementation, $0.baseAddress, 0, $0.count) }
                    #expect(fast.end == slow.end && fast.flags == slow.flags, "implementation \(implementation), length \(length), \(cut)")
                }
            }
        }
    }

    /// `cjs_scan_string` answers short plain strings itself before it calls an implementation.
    @Test func shortStringShortcutAgreesWithPlainScan() {
        var state: UInt64 = 5
        for round in 0..<4000 {
            var bytes = self.random(&state, length: round % 24, invalidOK: round % 2 == 0)
            bytes += Array("\", \"role\": \"user\", \"x\": 1}".utf8)
            for from in 0..<min(bytes.count, 4) {
                let fast = bytes.withUnsafeBufferPointer { cjs_scan_string($0.baseAddress, from, $0.count) }
                let slow = bytes.withUnsafeBufferPointer { cjs_scan_string_portable($0.baseAddress, from, $0.count) }
                #expect(fast.end == slow.end && fast.flags == slow.flags, "round \(round) from \(from): \(bytes)")
                if fast.end != slow.end || fast.flags != slow.flags { return }
            }
        }
    }

    /// A string that runs to the end of the body (no closing quote) ends in a partial block.
    @Test func unterminatedStringsAgreeAtEveryLength() {
        var state: UInt64 = 9
        for length in 0..<200 {
            let bytes = self.random(&state, length: length, invalidOK: true).filter { $0 != UInt8(ascii: "\"") }
            let slow = bytes.withUnsafeBufferPointer { cjs_scan_string_portable($0.baseAddress, 0, $0.count) }
            for implementation in Self.vectorImplementations {
                let fast = bytes.withUnsafeBufferPointer { cjs_scan_string_using(implementation, $0.baseAddress, 0, $0.count) }
                #expect(fast.end == slow.end && fast.flags == slow.flags, "implementation \(implementation), length \(length): \(bytes)")
            }
        }
    }

    @Test func utf8VerdictMatchesTheStandardLibrary() {
        var state: UInt64 = 7
        for round in 0..<3000 {
            let body = self.random(&state, length: [3, 40, 70, 130][round % 4], invalidOK: true)
                .filter { $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") && $0 >= 0x20 }
            let bytes = body + Array("\"".utf8)
            let valid = String(validating: body, as: UTF8.self) != nil
            for implementation in 0..<cjs_scan_implementation_count() {
                let scan = bytes.withUnsafeBufferPointer { cjs_scan_string_using(implementation, $0.baseAddress, 0, $0.count) }
                #expect((scan.flags & UInt32(CJS_BAD_UTF8) == 0) == valid, "implementation \(implementation): \(body)")
            }
        }
    }
}

enum SplitMixForTests {
    static func next(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
