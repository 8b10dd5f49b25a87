/// Prompt text does not outlive its use: what held it is zeroed in place before it is freed, so
/// freed memory (and a core dump) does not keep it.
extension Array where Element == UInt8 {
    /// Zeroes this array's storage in place, without copy-on-write: every copy sharing the storage
    /// sees zeros. Only for storage nothing reads any more.
    public func scrub() {
        self.withUnsafeBytes { raw in
            guard let base = raw.baseAddress, raw.count > 0 else { return }
            UnsafeMutableRawPointer(mutating: base).initializeMemory(as: UInt8.self, repeating: 0, count: raw.count)
        }
    }
}
