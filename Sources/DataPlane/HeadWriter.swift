import NIOCore
import XXHash

/// Writes an HTTP head into one region of a `ByteBuffer` reserved for it.
///
/// A head is 20-40 pieces (names, values, separators). Written one by one into a `ByteBuffer`,
/// each piece pays a capacity check, a uniqueness check and an index update; here they are plain
/// copies into memory reserved once, with a bound check each (a head that outgrows its stated
/// bound traps instead of writing past it).
struct HeadWriter {
    private let base: UnsafeMutableRawPointer
    private let capacity: Int
    private(set) var count = 0

    fileprivate init(_ region: UnsafeMutableRawBufferPointer) {
        self.base = region.baseAddress!
        self.capacity = region.count
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count <= self.capacity - self.count, "head larger than its bound")
        if let source = bytes.baseAddress { (self.base + self.count).copyMemory(from: source, byteCount: bytes.count) }
        self.count += bytes.count
    }

    mutating func write(_ literal: StaticString) {
        self.write(UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    mutating func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { self.write($0) }
    }

    /// A string's UTF-8 bytes. Labelled so that a literal argument binds to the `StaticString`
    /// overload (unlabelled, a literal would be a `String`, which costs a copy and a check).
    mutating func write(string: String) {
        var string = string
        string.withUTF8 { self.write(UnsafeRawBufferPointer($0)) }
    }

    mutating func write(byte: UInt8) {
        precondition(self.count < self.capacity, "head larger than its bound")
        self.base.storeBytes(of: byte, toByteOffset: self.count, as: UInt8.self)
        self.count += 1
    }

    /// A non-negative integer in decimal (negative ones are written as 0).
    mutating func write(decimal value: Int) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: Int.max has 19 digits
        withUnsafeMutableBytes(of: &digits) { scratch in
            var v = UInt(max(0, value))
            var i = scratch.count
            repeat {
                i -= 1
                scratch[i] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
            } while v > 0
            self.write(UnsafeRawBufferPointer(rebasing: scratch[i...]))
        }
    }

    /// 16 lower-case hex digits (as `UInt64.hex16`).
    mutating func write(hex16 value: UInt64) {
        precondition(16 <= self.capacity - self.count, "head larger than its bound")
        value.writeHex16(to: self.base + self.count)
        self.count += 16
    }

    /// A three-digit status code (clamped to 100-999).
    mutating func write(status: Int) {
        let s = min(max(status, 100), 999)
        self.write(byte: UInt8(ascii: "0") + UInt8(s / 100))
        self.write(byte: UInt8(ascii: "0") + UInt8(s / 10 % 10))
        self.write(byte: UInt8(ascii: "0") + UInt8(s % 10))
    }
}

extension ByteBuffer {
    /// Appends a head of at most `maxBytes` bytes written by `body`.
    mutating func writeHead(maxBytes: Int, _ body: (inout HeadWriter) -> Void) {
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: maxBytes) { region in
            // Held to the stated bound, not the buffer's (rounded-up) capacity, so a bound that is
            // too small fails in tests rather than only when the rounding happens not to cover it.
            var writer = HeadWriter(UnsafeMutableRawBufferPointer(rebasing: region.prefix(maxBytes)))
            body(&writer)
            return writer.count
        }
    }
}
