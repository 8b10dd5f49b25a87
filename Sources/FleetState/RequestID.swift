import RoutingCore
import XXHash

/// The id of one request: the client's `X-Request-Id` when it sent a usable one, else one the
/// router made (16 hex digits). It goes to the replica as `X-Request-Id` (vLLM then names the
/// request after it: its logs and the answer's `id`, `chatcmpl-<id>`, match the router's access
/// log), back to the client as `X-Request-Id`, and into the access log as `request_id`.
public enum RequestID: Sendable, Equatable, CustomStringConvertible {
    case client(String)
    case generated(UInt64)

    /// The longest client id taken as it is; longer ones (and ones with other characters than
    /// letters, digits and `-_.:/+=@`) are replaced by a generated id.
    public static let maxClientBytes = 128

    public var description: String {
        switch self {
        case .client(let id): return id
        case .generated(let value): return value.hex16
        }
    }

    /// Whether a client's id can be used as it is.
    public static func isUsable(_ bytes: ArraySlice<UInt8>) -> Bool {
        guard !bytes.isEmpty, bytes.count <= Self.maxClientBytes else { return false }
        return bytes.allSatisfy { b in
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return true
            case UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: ":"), UInt8(ascii: "/"),
                UInt8(ascii: "+"), UInt8(ascii: "="), UInt8(ascii: "@"):
                return true
            default:
                return false
            }
        }
    }
}

/// Generated request ids of one event loop: a random start, then a bijective mix of a counter,
/// so ids never repeat within a loop and look unrelated to each other.
public struct RequestIDGenerator: Sendable {
    private var counter = UInt64.random(in: .min ... .max)

    public init() {}

    public mutating func next() -> RequestID {
        .generated(self.nextValue())
    }

    /// The next id as a number.
    public mutating func nextValue() -> UInt64 {
        self.counter &+= 1
        return SplitMix64.mix(self.counter)
    }
}
