@testable import RoutingCore
import Testing

@Suite struct InsightClassTests {
    @Test func valuesAreClassed() {
        #expect(PrefixInsight.charClass(Array("the day 2026-12-03T10:33:21.345Z was".utf8)) == .dateLike)
        #expect(PrefixInsight.charClass(Array("id 3f2a9c1e-77b0-4d2e-9a1b-0c3d5e7f9a2b for".utf8)) == .hex)
        #expect(PrefixInsight.charClass(Array("order 123456789 now".utf8)) == .digits)
        #expect(PrefixInsight.charClass(Array("dear Alice Smith".utf8)) == .words)
    }
}
