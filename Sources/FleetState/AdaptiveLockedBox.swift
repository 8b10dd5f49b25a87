#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A value behind a mutex that spins briefly before it sleeps.
///
/// The routing state is locked two or three times per request by every event loop, each time for
/// a few microseconds. With a plain mutex a loop that finds it taken sleeps in the kernel and is
/// woken by a second system call when it is released; for sections this short that costs more
/// than the section. On Linux this is glibc's adaptive mutex (`PTHREAD_MUTEX_ADAPTIVE_NP`): it
/// spins a bounded number of times, then sleeps like a plain one.
public final class AdaptiveLockedBox<Value>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        self.mutex = .allocate(capacity: 1)
        var attributes = pthread_mutexattr_t()
        pthread_mutexattr_init(&attributes)
        #if canImport(Glibc)
        pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_ADAPTIVE_NP))
        #endif
        let err = pthread_mutex_init(self.mutex, &attributes)
        precondition(err == 0, "pthread_mutex_init failed: \(err)")
        pthread_mutexattr_destroy(&attributes)
    }

    deinit {
        pthread_mutex_destroy(self.mutex)
        self.mutex.deallocate()
    }

    @inline(__always)
    public func withLockedValue<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        pthread_mutex_lock(self.mutex)
        defer { pthread_mutex_unlock(self.mutex) }
        return try body(&self.value)
    }
}
