#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Synchronization

/// Serves JSON-RPC 2.0 over a pair of file descriptors.
///
/// Framing is newline-delimited, or LSP-style `Content-Length` when the stream starts with
/// such a header (see ``FrameDecoder``). One thread (the caller of ``run()``) reads with
/// blocking `read(2)` and frames messages;
/// immediate methods are answered on that thread, deferred ones run as tasks. Responses go
/// through one ``OutputSink``. Lines longer than `maxMessageBytes` are answered with
/// -32600 without being held in memory whole.
public final class StdioServer: Sendable {
    private let inputFD: Int32
    private let output: OutputSink
    private let dispatcher: Dispatcher
    private let maxMessageBytes: Int
    private let pending = PendingAnswers()
    private let stopRequested = Atomic<Bool>(false)
    /// LSP framing was detected (the fast paths answer newline-delimited streams only).
    private let contentLengthFraming = Atomic<Bool>(false)
    private let afterRead: (@Sendable () -> Void)?
    /// See ``init(inputFD:output:dispatcher:maxMessageBytes:afterRead:onFirstWait:)``.
    private let onFirstWait: (@Sendable () -> Void)?
    /// Seconds a read may find nothing, or `run()` may go on, before ``onFirstWait`` is called.
    public static let firstWaitGrace = 0.005

    /// - Parameters:
    ///   - inputFD: the descriptor requests are read from (never switched to non-blocking).
    ///   - output: where responses go.
    ///   - dispatcher: the method table.
    ///   - maxMessageBytes: the longest line accepted, in bytes, excluding its terminator.
    ///   - afterRead: called on the reading thread once the messages of each read are handled
    ///     and their answers written (e.g. to send on, in one write, what `.started` handlers
    ///     queued for another process).
    ///   - onFirstWait: called once on the reading thread when the process first has to wait for
    ///     input (no input within ``firstWaitGrace`` seconds), or once it has been reading for
    ///     that long: the front-end starts its signal thread then, so that a process that reads
    ///     a request and ends at once never starts it (the graceful signals stay blocked, and
    ///     pending, until then).
    public init(inputFD: Int32, output: OutputSink, dispatcher: Dispatcher, maxMessageBytes: Int,
                afterRead: (@Sendable () -> Void)? = nil, onFirstWait: (@Sendable () -> Void)? = nil) {
        self.inputFD = inputFD
        self.output = output
        self.dispatcher = dispatcher
        self.maxMessageBytes = maxMessageBytes
        self.afterRead = afterRead
        self.onFirstWait = onFirstWait
    }

    /// Reads and answers messages until end of input, a read error or ``requestStop()``, then
    /// returns. Deferred calls may still be running; see ``waitForInFlight(timeout:)``.
    public func run() {
        var decoder = FrameDecoder(maxMessageBytes: maxMessageBytes)
        let chunkSize = 64 * 1024
        let chunk = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: chunkSize)
        defer { chunk.deallocate() }
        let output = self.output
        var firstWait = onFirstWait
        let startedAt = monotonicSeconds()
        while !output.isBroken && !isStopping {
            if let pending = firstWait {
                let left = Self.firstWaitGrace - (monotonicSeconds() - startedAt)
                var pfd = pollfd(fd: inputFD, events: Int16(POLLIN), revents: 0)
                if left <= 0 || poll(&pfd, 1, Int32((left * 1000).rounded(.up))) <= 0 {
                    firstWait = nil
                    pending()
                }
            }
            output.waitForRoom()
            let n = read(inputFD, chunk.baseAddress, chunkSize)
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK {
                    // Someone else made the shared descriptor non-blocking: wait for input.
                    var pfd = pollfd(fd: inputFD, events: Int16(POLLIN), revents: 0)
                    _ = poll(&pfd, 1, -1)
                    continue
                }
                break
            }
            if n == 0 { break }
            // Every answer given on this thread during the read (fast paths, immediate
            // handlers, `.started` handlers that reply at once) goes out together after it.
            output.beginStaging()
            decoder.consume(UnsafeBufferPointer(rebasing: chunk[0..<n]), onFraming: setFraming, handle: handleEvent)
            // The client's answers first: what goes to another process (e.g. a `holdSession`
            // telling the agent of a session handed out here) is not on the client's path.
            output.endStaging()
            afterRead?()
        }
        output.beginStaging()
        if !isStopping { decoder.finish(onFraming: setFraming, handle: handleEvent) }
        output.endStaging()
        afterRead?()
    }

    private func setFraming(_ framing: Framing) {
        output.framing = framing
        contentLengthFraming.store(framing == .contentLength, ordering: .relaxed)
    }

    /// Ends ``run()`` after the message being handled (for LSP `exit`): that message, a whole
    /// batch included, is answered as usual; nothing after it is read. Callable from a handler.
    public func requestStop() { stopRequested.store(true, ordering: .releasing) }

    /// Whether ``requestStop()`` was called.
    public var stopWasRequested: Bool { stopRequested.load(ordering: .acquiring) }
    private var isStopping: Bool { stopWasRequested }

    /// Waits until every deferred call has been answered.
    /// - Parameter timeout: the longest wait, in seconds.
    /// - Returns: `true` when nothing is in flight any more.
    public func waitForInFlight(timeout: Double) -> Bool {
        pending.waitUntilEmpty(timeout: timeout)
    }

    /// Answers every request still waiting for a deferred handler with `error` at once, and
    /// sends each batch still in flight with the answers it has plus `error` for the rest, so
    /// that no request with an id goes unanswered at exit. Handlers that finish later are ignored.
    /// - Returns: how many requests got `error`.
    @discardableResult
    public func answerRemaining(with error: RPCError) -> Int {
        pending.expireAll(with: error, output: output)
    }

    private func handleEvent(_ event: FrameDecoder.Event) {
        if isStopping { return }  // after `exit`: nothing more is read
        switch event {
        case .message(let bytes):
            handleMessage(bytes)
        case .tooLong:
            output.enqueue(ResponseWriter.failure(
                id: .null,
                error: RPCError(.invalidRequest, "Invalid Request: message longer than \(maxMessageBytes) bytes",
                                data: ["limit": .number(String(maxMessageBytes))])))
        case .badHeader:
            output.enqueue(ResponseWriter.failure(
                id: .null, error: RPCError(.parseError, "Parse error: header block without a valid Content-Length")))
        }
    }

    private func handleMessage(_ bytes: UnsafeBufferPointer<UInt8>) {
        let dispatcher = self.dispatcher
        if !contentLengthFraming.load(ordering: .relaxed),
           output.stage(appending: { dispatcher.answerFast(bytes, into: &$0) }) { return }
        switch MessageReader.read(bytes) {
        case .failure(let error):
            output.enqueue(ResponseWriter.failure(id: .null, error: error))
        case .single(let call):
            switch dispatcher.answerImmediately(call) {
            case .done(let response):
                if let response { output.enqueue(response) }
            case .needsTask:
                let answer = pending.add(batch: false, slots: [nil], waiting: [.some(call.requestId)], output: output)
                dispatcher.start(call) { answer.fill(0, with: $0) }
            }
        case .batch(let calls):
            let outcomes = calls.map { dispatcher.answerImmediately($0) }
            var slots = [JSONValue?](repeating: nil, count: calls.count)
            var waiting = [JSONValue??](repeating: nil, count: calls.count)
            var deferred: [Int] = []
            for (index, outcome) in outcomes.enumerated() {
                switch outcome {
                case .done(let response): slots[index] = response
                case .needsTask:
                    deferred.append(index)
                    waiting[index] = .some(calls[index].requestId)
                }
            }
            if deferred.isEmpty {
                let responses = slots.compactMap { $0 }
                if !responses.isEmpty { output.enqueue(.array(responses)) }
                return
            }
            // One start (a task, for a deferred handler) per member, never a task group: Swift's runtime keeps
            // a group's children in a singly linked list and unlinks each finished child by
            // walking it from the oldest, and the N waiters of one login finish newest first, so
            // a group made a batch of N openSession cost O(N^2) (20,000: 4.2 s; 40,000 ran past
            // the end-of-input bound and the answer was lost). The last member sends the answer.
            let answer = pending.add(batch: true, slots: slots, waiting: waiting, output: output)
            for index in deferred {
                dispatcher.start(calls[index]) { answer.fill(index, with: $0) }
            }
        }
    }
}

extension IncomingCall {
    /// The id a response must carry (`nil`: a notification, which gets none).
    var requestId: JSONValue? {
        switch self {
        case .request(let request): return request.id
        case .invalid(let id, _): return id
        }
    }
}

/// The deferred work in flight: each request (or batch) whose answer a task is computing, so
/// that shutdown can wait for them and answer what is left (see
/// ``StdioServer/answerRemaining(with:)``).
final class PendingAnswers: Sendable {
    private struct State {
        var entries: [Int: PendingAnswer] = [:]
        var nextToken = 0
    }
    private let state = Mutex(State())
    private let emptied = DispatchSemaphore(value: 0)

    /// Registers one message's answer.
    /// - Parameters:
    ///   - batch: whether the message was a batch (its answer is an array).
    ///   - slots: the responses known already, one per member (`nil`: none yet, or a notification).
    ///   - waiting: per member, `nil` when it needs no task; otherwise the member's id
    ///     (`.some(nil)` for a notification, which gets no answer).
    ///   - output: where the answer is sent.
    func add(batch: Bool, slots: [JSONValue?], waiting: [JSONValue??], output: OutputSink) -> PendingAnswer {
        state.withLock { s in
            s.nextToken += 1
            let answer = PendingAnswer(token: s.nextToken, batch: batch, slots: slots, waiting: waiting, output: output) { [self] token in
                remove(token)
            }
            s.entries[s.nextToken] = answer
            return answer
        }
    }

    private func remove(_ token: Int) {
        let empty = state.withLock { s -> Bool in
            s.entries[token] = nil
            return s.entries.isEmpty
        }
        if empty { emptied.signal() }
    }

    func waitUntilEmpty(timeout: Double) -> Bool {
        let deadline = monotonicSeconds() + timeout
        while !state.withLock({ $0.entries.isEmpty }) {
            let left = deadline - monotonicSeconds()
            if left <= 0 { return false }
            _ = emptied.wait(timeout: .now() + min(left, 0.05))
        }
        return true
    }

    func expireAll(with error: RPCError, output: OutputSink) -> Int {
        let all = state.withLock { Array($0.entries.values) }
        let count = all.reduce(0) { $0 + $1.expire(with: error) }
        output.flush()
        return count
    }
}

/// The answer to one message that waits for deferred handlers: filled member by member, sent
/// once, either when the last member is answered or when it is expired at shutdown. It is
/// queued for output before it stops counting as in flight, so that nobody waiting for the
/// in-flight work to end can exit before the answer is queued.
final class PendingAnswer: Sendable {
    private struct State {
        var slots: [JSONValue?]
        var waiting: [JSONValue??]
        var remaining: Int
        var done = false
    }
    private let token: Int
    private let batch: Bool
    private let state: Mutex<State>
    private let output: OutputSink
    private let onDone: @Sendable (Int) -> Void

    init(token: Int, batch: Bool, slots: [JSONValue?], waiting: [JSONValue??], output: OutputSink,
         onDone: @escaping @Sendable (Int) -> Void) {
        self.token = token
        self.batch = batch
        self.output = output
        state = Mutex(State(slots: slots, waiting: waiting, remaining: waiting.reduce(0) { $0 + ($1 == nil ? 0 : 1) }))
        self.onDone = onDone
    }

    /// Records member `index`'s response; the last one sends the whole answer (nothing once
    /// the answer was expired, nor for notifications only).
    func fill(_ index: Int, with response: JSONValue?) {
        let finished = state.withLock { s -> (Bool, JSONValue?) in
            guard !s.done, s.waiting[index] != nil else { return (false, nil) }
            s.waiting[index] = nil
            s.slots[index] = response
            s.remaining -= 1
            guard s.remaining == 0 else { return (false, nil) }
            s.done = true
            return (true, message(s.slots))
        }
        guard finished.0 else { return }
        if let message = finished.1 { output.send(message) }
        onDone(token)
    }

    /// Ends the wait: every member still waiting that has an id gets `error`, and the answer
    /// is queued (the caller flushes).
    /// - Returns: how many members got `error` (0 when the answer was already sent).
    func expire(with error: RPCError) -> Int {
        let result = state.withLock { s -> (JSONValue?, Int)? in
            guard !s.done else { return nil }
            s.done = true
            var expired = 0
            for index in s.slots.indices {
                guard let waitingId = s.waiting[index] else { continue }
                s.waiting[index] = nil
                if let id = waitingId {
                    s.slots[index] = ResponseWriter.failure(id: id, error: error)
                    expired += 1
                }
            }
            return (message(s.slots), expired)
        }
        guard let (message, expired) = result else { return 0 }
        if let message { output.enqueue(message) }
        onDone(token)
        return expired
    }

    private func message(_ slots: [JSONValue?]) -> JSONValue? {
        if batch {
            let responses = slots.compactMap { $0 }
            return responses.isEmpty ? nil : .array(responses)
        }
        return slots[0]
    }
}

/// Splits a byte stream into lines with a length cap, independent of how reads split it.
///
/// A CR before LF is dropped, a UTF-8 byte-order mark at the start of the stream is
/// skipped, blank lines are skipped, and a final line without a terminator is delivered at
/// end of input. A line longer than the cap is reported once and discarded up to its end.
struct LineReader {
    enum Event {
        case line(UnsafeBufferPointer<UInt8>)
        case tooLong
    }

    let maxLineBytes: Int
    private var pending: [UInt8] = []
    private var discarding = false
    private var atStreamStart = true

    init(maxLineBytes: Int) { self.maxLineBytes = maxLineBytes }

    mutating func consume(_ bytes: UnsafeBufferPointer<UInt8>, handle: (Event) -> Void) {
        var start = 0
        while start < bytes.count {
            guard let found = memchr(bytes.baseAddress! + start, 0x0A, bytes.count - start) else {
                append(UnsafeBufferPointer(rebasing: bytes[start...]), handle: handle)
                return
            }
            let newline = bytes.baseAddress!.distance(to: found.assumingMemoryBound(to: UInt8.self))
            if discarding {
                discarding = false
            } else if pending.isEmpty {
                deliver(UnsafeBufferPointer(rebasing: bytes[start..<newline]), handle: handle)
            } else {
                append(UnsafeBufferPointer(rebasing: bytes[start..<newline]), handle: handle)
                if !discarding {
                    pending.withUnsafeBufferPointer { deliver($0, handle: handle) }
                }
                discarding = false
            }
            pending.removeAll(keepingCapacity: pending.capacity <= 1 << 16)
            start = newline + 1
        }
    }

    mutating func finish(handle: (Event) -> Void) {
        if !discarding && !pending.isEmpty {
            pending.withUnsafeBufferPointer { deliver($0, handle: handle) }
        }
        pending = []
        discarding = false
    }

    /// Adds a piece of an unfinished line, switching to discarding when it gets too long.
    private mutating func append(_ piece: UnsafeBufferPointer<UInt8>, handle: (Event) -> Void) {
        guard !discarding else { return }
        // Room for a CR that belongs to the terminator and a BOM that starts the stream: the
        // exact check happens in deliver(), so the outcome never depends on how reads split.
        if pending.count + piece.count > maxLineBytes + 1 + (atStreamStart ? 3 : 0) {
            discarding = true
            atStreamStart = false
            pending = []
            handle(.tooLong)
            return
        }
        pending.append(contentsOf: piece)
    }

    private mutating func deliver(_ rawLine: UnsafeBufferPointer<UInt8>, handle: (Event) -> Void) {
        var line = rawLine
        if atStreamStart {
            atStreamStart = false
            if line.count >= 3, line[0] == 0xEF, line[1] == 0xBB, line[2] == 0xBF {
                line = UnsafeBufferPointer(rebasing: line[3...])
            }
        }
        if let last = line.last, last == 0x0D { line = UnsafeBufferPointer(rebasing: line[..<(line.count - 1)]) }
        if line.count > maxLineBytes {
            handle(.tooLong)
            return
        }
        if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { return }
        handle(.line(line))
    }
}
