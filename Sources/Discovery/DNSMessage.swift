/// DNS messages (RFC 1035, AAAA from RFC 3596, SRV from RFC 2782): the query the resolver sends
/// and the parts of an answer discovery needs. Parsing never traps on hostile input: every read
/// is bounds-checked and compression pointers are followed a bounded number of times.
public enum DNSRecordType: UInt16, Sendable {
    case a = 1
    case cname = 5
    case aaaa = 28
    case srv = 33
}

public struct DNSRecord: Sendable, Equatable {
    public enum Data: Sendable, Equatable {
        /// A or AAAA: the address as text.
        case address(String)
        case srv(priority: UInt16, weight: UInt16, port: UInt16, target: String)
        case cname(String)
        case other(UInt16)
    }

    public var name: String
    public var ttl: UInt32
    public var data: Data
}

public struct DNSResponse: Sendable, Equatable {
    public var id: UInt16
    /// RCODE: 0 no error, 2 server failure, 3 no such name.
    public var rcode: UInt8
    public var truncated: Bool
    public var answers: [DNSRecord]
    public var additional: [DNSRecord]
}

public struct DNSError: Error, Sendable, CustomStringConvertible, Equatable {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}

public enum DNSMessage {
    /// A standard query with recursion desired.
    public static func query(id: UInt16, name: String, type: DNSRecordType) throws(DNSError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(32 + name.utf8.count)
        func u16(_ v: UInt16) {
            out.append(UInt8(v >> 8))
            out.append(UInt8(v & 0xFF))
        }
        u16(id)
        u16(0x0100)  // RD
        u16(1)
        u16(0)
        u16(0)
        u16(0)
        let trimmed = name.hasSuffix(".") ? String(name.dropLast()) : name
        for label in trimmed.split(separator: ".", omittingEmptySubsequences: false) {
            let bytes = Array(label.utf8)
            guard !bytes.isEmpty, bytes.count <= 63 else { throw DNSError("invalid DNS name '\(name)'") }
            out.append(UInt8(bytes.count))
            out += bytes
        }
        out.append(0)
        guard out.count - 12 <= 255 + 1 else { throw DNSError("DNS name too long: '\(name)'") }
        u16(type.rawValue)
        u16(1)  // IN
        return out
    }

    public static func parse(_ bytes: [UInt8]) throws(DNSError) -> DNSResponse {
        var reader = Reader(bytes: bytes)
        let id = try reader.u16()
        let flags = try reader.u16()
        guard flags & 0x8000 != 0 else { throw DNSError("not a DNS response") }
        let qd = Int(try reader.u16())
        let an = Int(try reader.u16())
        let ns = Int(try reader.u16())
        let ar = Int(try reader.u16())
        for _ in 0..<qd {
            _ = try reader.name()
            try reader.skip(4)
        }
        var answers: [DNSRecord] = []
        for _ in 0..<an { answers.append(try reader.record()) }
        for _ in 0..<ns { _ = try reader.record() }
        var additional: [DNSRecord] = []
        for _ in 0..<ar {
            guard let record = try? reader.record() else { break }
            additional.append(record)
        }
        return DNSResponse(id: id, rcode: UInt8(flags & 0x0F), truncated: flags & 0x0200 != 0, answers: answers, additional: additional)
    }

    struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func u8() throws(DNSError) -> UInt8 {
            guard self.offset < self.bytes.count else { throw DNSError("truncated DNS message") }
            defer { self.offset += 1 }
            return self.bytes[self.offset]
        }

        mutating func u16() throws(DNSError) -> UInt16 {
            UInt16(try self.u8()) << 8 | UInt16(try self.u8())
        }

        mutating func u32() throws(DNSError) -> UInt32 {
            UInt32(try self.u16()) << 16 | UInt32(try self.u16())
        }

        mutating func skip(_ n: Int) throws(DNSError) {
            guard self.offset + n <= self.bytes.count else { throw DNSError("truncated DNS message") }
            self.offset += n
        }

        /// A possibly compressed name at the current offset.
        mutating func name() throws(DNSError) -> String {
            var labels: [String] = []
            var position = self.offset
            var jumped = false
            var jumps = 0
            while true {
                guard position < self.bytes.count else { throw DNSError("truncated DNS name") }
                let length = Int(self.bytes[position])
                if length == 0 {
                    if !jumped { self.offset = position + 1 }
                    break
                }
                if length & 0xC0 == 0xC0 {
                    guard position + 1 < self.bytes.count else { throw DNSError("truncated DNS name") }
                    let pointer = (length & 0x3F) << 8 | Int(self.bytes[position + 1])
                    if !jumped { self.offset = position + 2 }
                    jumped = true
                    jumps += 1
                    guard jumps <= 32, pointer < self.bytes.count else { throw DNSError("DNS name compression loop") }
                    position = pointer
                    continue
                }
                guard length <= 63, position + 1 + length <= self.bytes.count else { throw DNSError("invalid DNS label") }
                labels.append(String(decoding: self.bytes[(position + 1)..<(position + 1 + length)], as: UTF8.self))
                position += 1 + length
                guard labels.count <= 128 else { throw DNSError("DNS name too long") }
            }
            return labels.joined(separator: ".")
        }

        mutating func record() throws(DNSError) -> DNSRecord {
            let name = try self.name()
            let type = try self.u16()
            _ = try self.u16()
            let ttl = try self.u32()
            let length = Int(try self.u16())
            let start = self.offset
            guard start + length <= self.bytes.count else { throw DNSError("truncated DNS record") }
            let data: DNSRecord.Data
            switch DNSRecordType(rawValue: type) {
            case .a where length == 4:
                data = .address(self.bytes[start..<(start + 4)].map(String.init).joined(separator: "."))
            case .aaaa where length == 16:
                data = .address(Self.ipv6(Array(self.bytes[start..<(start + 16)])))
            case .srv where length >= 7:
                let priority = try self.u16()
                let weight = try self.u16()
                let port = try self.u16()
                data = .srv(priority: priority, weight: weight, port: port, target: try self.name())
            case .cname:
                data = .cname(try self.name())
            default:
                data = .other(type)
            }
            self.offset = start + length
            return DNSRecord(name: name, ttl: ttl, data: data)
        }

        /// RFC 5952 text form (longest zero run compressed).
        static func ipv6(_ b: [UInt8]) -> String {
            let groups = (0..<8).map { UInt16(b[2 * $0]) << 8 | UInt16(b[2 * $0 + 1]) }
            var bestStart = -1
            var bestLength = 0
            var i = 0
            while i < 8 {
                if groups[i] == 0 {
                    var j = i
                    while j < 8, groups[j] == 0 { j += 1 }
                    if j - i > bestLength, j - i > 1 {
                        bestStart = i
                        bestLength = j - i
                    }
                    i = j
                } else {
                    i += 1
                }
            }
            func hex(_ range: Range<Int>) -> String { range.map { String(groups[$0], radix: 16) }.joined(separator: ":") }
            guard bestStart >= 0 else { return hex(0..<8) }
            return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
        }
    }
}
