import RealModule
import XXHash

/// A consistent-hash ring (ketama style) over replicas, with virtual nodes proportional to weight.
///
/// Lookups walk clockwise from a key's point and yield distinct replicas in ring order, which is the
/// preference order for that key. Removing a replica moves only the keys it owned; adding one takes
/// about 1/N of the keys, from every other replica.
public struct HashRing: Sendable {
    /// Sorted point hashes.
    let points: [UInt64]
    /// For each point, the position in `members` that owns it.
    let owners: [Int32]
    /// The replicas on the ring, as indices into the fleet's replica list.
    public let members: [Int]

    /// Builds a ring. `members` are (fleet index, name, weight); names must be unique.
    public init(members: [(index: Int, name: String, weight: Double)], vnodesPerWeight: Int) {
        var pairs: [(UInt64, Int32)] = []
        for (position, member) in members.enumerated() where member.weight > 0 {
            let count = max(1, Int((member.weight * Double(vnodesPerWeight)).rounded()))
            let nameSeed = XXH3.hash(member.name)
            pairs.reserveCapacity(pairs.count + count)
            for v in 0..<count {
                pairs.append((XXH3.hash(UInt64(v), seed: nameSeed), Int32(position)))
            }
        }
        // Ties (astronomically rare) are broken by member position so every instance builds the same ring.
        pairs.sort { $0.0 == $1.0 ? $0.1 < $1.1 : $0.0 < $1.0 }
        self.points = pairs.map(\.0)
        self.owners = pairs.map(\.1)
        self.members = members.map(\.index)
    }

    public var isEmpty: Bool { self.points.isEmpty }

    /// Number of replicas with at least one point.
    public var count: Int { Set(self.owners).count }

    /// Index of the first point at or after `key`, wrapping around.
    @inline(__always)
    func firstPoint(atOrAfter key: UInt64) -> Int {
        var lo = 0
        var hi = self.points.count
        while lo < hi {
            let mid = (lo + hi) >> 1
            if self.points[mid] < key { lo = mid + 1 } else { hi = mid }
        }
        return lo == self.points.count ? 0 : lo
    }

    /// The replica that owns `key` (a fleet index), or nil on an empty ring.
    public func owner(of key: UInt64) -> Int? {
        guard !self.points.isEmpty else { return nil }
        return self.members[Int(self.owners[self.firstPoint(atOrAfter: key)])]
    }

    /// Up to `limit` distinct replicas clockwise from `key` (fleet indices, preference order).
    public func successors(of key: UInt64, limit: Int) -> [Int] {
        guard !self.points.isEmpty, limit > 0 else { return [] }
        let wanted = min(limit, self.members.count)
        var result: [Int] = []
        result.reserveCapacity(wanted)
        // Members seen so far: a bit mask for fleets up to 64, an array beyond.
        var seenMask: UInt64 = 0
        var seen = self.members.count > 64 ? [Bool](repeating: false, count: self.members.count) : []
        var i = self.firstPoint(atOrAfter: key)
        var steps = 0
        while result.count < wanted, steps < self.points.count {
            let position = Int(self.owners[i])
            let isNew: Bool
            if seen.isEmpty {
                isNew = seenMask & (1 << UInt64(position)) == 0
                seenMask |= 1 << UInt64(position)
            } else {
                isNew = !seen[position]
                seen[position] = true
            }
            if isNew { result.append(self.members[position]) }
            i += 1
            if i == self.points.count { i = 0 }
            steps += 1
        }
        return result
    }
}

/// Rendezvous (highest random weight) scores: each replica's score for a key; the highest wins.
/// Adding a replica moves a key only to the new replica, and only if it outranks the current one.
public enum Rendezvous {
    /// Weighted score of `replicaSeed` (the XXH3 of its name) for `key`: `weight / -ln(u)`.
    @inline(__always)
    public static func score(key: UInt64, replicaSeed: UInt64, weight: Double) -> Double {
        let h = XXH3.hash(key, seed: replicaSeed)
        // u in (0, 1): the top 53 bits, offset by half a step so it is never 0 or 1.
        let u = (Double(h >> 11) + 0.5) / 9_007_199_254_740_992.0
        return weight / -Double.log(u)
    }
}
