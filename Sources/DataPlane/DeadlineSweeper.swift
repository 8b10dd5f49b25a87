import NIOCore

/// Something with deadlines to check.
protocol DeadlineOwner: AnyObject {
    /// Enforces the owner's deadlines; false when it is gone for good (the sweeper drops it).
    func checkDeadlines(now: NIODeadline) -> Bool
}

/// One timer per event loop instead of one per request: every 250 ms it asks the connections
/// of its loop to check their deadlines (head, body, first byte, idle gaps, keep-alive).
final class DeadlineSweeper: @unchecked Sendable {
    let loop: any EventLoop
    /// Held strongly until they report they are done: a weak reference would give every
    /// client connection a side table, which slows down each of its retains and releases.
    private var owners: [any DeadlineOwner] = []
    private var task: RepeatedTask?

    init(loop: any EventLoop) {
        self.loop = loop
    }

    func register(_ owner: any DeadlineOwner) {
        self.loop.preconditionInEventLoop()
        self.owners.append(owner)
        if self.task == nil {
            self.task = self.loop.scheduleRepeatedTask(initialDelay: .milliseconds(250), delay: .milliseconds(250)) { _ in
                self.sweep()
            }
        }
    }

    private func sweep() {
        let now = NIODeadline.now()
        self.owners.removeAll { !$0.checkDeadlines(now: now) }
    }
}
