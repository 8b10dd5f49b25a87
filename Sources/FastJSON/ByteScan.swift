/// 16-byte-at-a-time scanning of JSON string bodies.
///
/// Written as lane arithmetic on `SIMD16<UInt8>` (xor, subtract, and-not, high bit), which the
/// compiler lowers to straight SSE2/NEON code (`SIMDMask` comparisons currently lower to a per-lane
/// loop). A lane's high bit marks a hit; lanes never borrow from each other, so the first hit is
/// exact: the lowest set high bit of the two 64-bit halves.
///
/// The scan for canonicalization does not stop at escapes that are already canonical (`\n`, `\"`,
/// `\\`, `\t`...): it compares each byte with the next to find only `\/` and `\u`. Stops at a quote
/// are checked for an odd run of backslashes before it (an escaped quote) by the caller.
enum ByteScan {
    /// High bit set in each lane where `x` is zero.
    @inline(__always)
    static func zeroLanes(_ x: SIMD16<UInt8>) -> SIMD16<UInt8> {
        (x &- 1) & ~x
    }

    /// Offset (0-15) of the first lane with its high bit set, or nil.
    @inline(__always)
    static func firstHit(_ lanes: SIMD16<UInt8>) -> Int? {
        let halves = unsafeBitCast(lanes, to: (UInt64, UInt64).self)
        let lo = halves.0 & 0x8080_8080_8080_8080
        if lo != 0 { return lo.trailingZeroBitCount >> 3 }
        let hi = halves.1 & 0x8080_8080_8080_8080
        if hi != 0 { return 8 + hi.trailingZeroBitCount >> 3 }
        return nil
    }

    /// Index of the first byte canonicalization must act on at or after `from`, or `end`: a quote,
    /// a backslash starting `\/` or `\u` (or every backslash when `allEscapes`), a control byte, a
    /// non-ASCII byte. The final up-to-16 bytes are left to the caller's exact byte loop: the
    /// result is then at most `end - 16`... `end`, never past a hit.
    @inline(__always)
    static func special(_ base: UnsafeRawPointer, from: Int, end: Int, allEscapes: Bool) -> Int {
        var i = from
        while i &+ 17 <= end {
            let v = (base + i).loadUnaligned(as: SIMD16<UInt8>.self)
            let backslash = Self.zeroLanes(v ^ 0x5C)
            let escape: SIMD16<UInt8>
            if allEscapes {
                escape = backslash
            } else {
                let w = (base + (i &+ 1)).loadUnaligned(as: SIMD16<UInt8>.self)
                escape = backslash & (Self.zeroLanes(w ^ 0x2F) | Self.zeroLanes(w ^ 0x75))
            }
            let hit = Self.zeroLanes(v ^ 0x22) | escape | Self.zeroLanes(v & 0xE0) | v
            if let offset = Self.firstHit(hit) { return i &+ offset }
            i &+= 16
        }
        return i
    }
}
