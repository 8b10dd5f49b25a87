import Testing

@testable import RoutingCore

@Suite struct HashedListTests {
    @Test func collidingKeysSurviveRemovalsAndNodesAreReused() {
        var list = HashedList(capacity: 64)
        // Keys sharing their low bits probe into one run of slots; removals shift the run back.
        let keys = (0..<40).map { UInt64($0) << 32 | 5 }
        var nodes: [UInt64: Int32] = [:]
        for key in keys {
            let node = list.add(key)
            list.pushBack(node)
            nodes[key] = node
        }
        for key in keys where key >> 32 % 3 == 0 { list.remove(nodes[key]!) }
        for key in keys {
            #expect((list.node(of: key) != nil) == (key >> 32 % 3 != 0), "key \(key >> 32)")
        }
        #expect(list.count == 26)
        // The list skips removed nodes and keeps the order of the rest.
        var order: [UInt64] = []
        var node = list.head
        while node >= 0 {
            order.append(list.key(of: node) >> 32)
            node = list.next[Int(node)]
        }
        #expect(order == (0..<40).filter { $0 % 3 != 0 }.map(UInt64.init))
        // Freed nodes come back before the arrays grow.
        let reused = list.add(999)
        #expect(reused < 40 && list.node(of: 999) == reused)
        // Growing the table keeps every key.
        list.reserve(capacity: 1000)
        #expect(keys.filter { $0 >> 32 % 3 != 0 }.allSatisfy { list.node(of: $0) != nil } && list.node(of: 999) == reused)
    }
}
