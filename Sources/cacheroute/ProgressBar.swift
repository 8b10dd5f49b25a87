import Foundation
import Synchronization

/// A one-line progress bar on standard error (only when it is a terminal).
final class ProgressBar: Sendable {
    private let state: Mutex<(fractions: [Double], labels: [String], last: Double)>
    private let enabled: Bool

    init(enabled: Bool, total: Int) {
        self.enabled = enabled && isatty(2) != 0
        self.state = Mutex((Array(repeating: 0, count: total), Array(repeating: "", count: total), 0))
    }

    func update(stage: Int, fraction: Double, label: String) {
        guard self.enabled else { return }
        let line: String? = self.state.withLock { s in
            s.fractions[stage] = fraction
            s.labels[stage] = label
            let done = s.fractions.reduce(0, +) / Double(s.fractions.count)
            guard done - s.last >= 0.005 || fraction >= 1 else { return nil }
            s.last = done
            let width = 30
            let filled = Int(done * Double(width))
            let active = zip(s.labels, s.fractions).filter { $0.1 > 0 && $0.1 < 1 }.map(\.0).joined(separator: ", ")
            return "\r[\(String(repeating: "#", count: filled))\(String(repeating: ".", count: width - filled))] \(Int(done * 100))% \(active)\u{1B}[K"
        }
        if let line { FileHandle.standardError.write(Data(line.utf8)) }
    }

    func finish() {
        guard self.enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
