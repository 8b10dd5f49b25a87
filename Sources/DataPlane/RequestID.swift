import FleetState
import HTTPTransport

extension RequestID {
    /// The client's id from the first `X-Request-Id` field of `head`, if it is usable.
    static func fromClient(_ head: HTTP1Head) -> RequestID? {
        guard let field = head.first(.xRequestID), Self.isUsable(head.bytes[field.value]) else { return nil }
        return .client(head.string(field.value))
    }

    /// The most bytes `writeField` writes.
    static let maxFieldBytes = "x-request-id: \r\n".utf8.count + max(Self.maxClientBytes, 16)

    /// Writes `x-request-id: <id>\r\n`.
    func writeField(to w: inout HeadWriter) {
        w.write("x-request-id: ")
        switch self {
        case .client(let id): w.write(string: id)
        case .generated(let value): w.write(hex16: value)
        }
        w.write("\r\n")
    }
}
