#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Synchronization
import CNeonSystem

/// The single owner of the protocol output descriptor.
///
/// Messages are written whole and never interleaved. What can go out without blocking is
/// written at once by the thread that has it: the reading thread hands over a whole read's
/// answers (see ``beginStaging()``) in one `write(2)` when the descriptor has room (a pipe's
/// free space, grown to 1 MiB when the system allows, less a margin; a socket's with
/// `MSG_DONTWAIT`; any amount for a file or /dev/null). The rest is queued for one dedicated
/// writer thread that writes with blocking calls, so a client that reads slowly never blocks the
/// reader or the concurrency pool. The reader applies backpressure with ``waitForRoom()``: when more than
/// `maxQueuedBytes` wait to be written it stops reading requests until the client catches up.
/// Below that bound it paces itself only while the client is reading: past `paceBytes` queued,
/// it waits for the writer as long as the last write completed within `paceWindow` seconds, so
/// that a fast client keeps the queue (and memory) small, while a client that writes all its
/// requests before reading any answer can still queue up to `maxQueuedBytes`.
public final class OutputSink: Sendable {
    private struct State {
        var pending: [UInt8] = []
        var writing = false
        var directWriting = false
        var writerSleeping = false
        /// The writer thread was started (on the first ``flush()`` that needs it, so that a
        /// short run whose answers are all written directly starts none).
        var writerStarted = false
        var broken = false
        /// The `errno` of the write that failed, once one has.
        var failure: Int32? = nil
        /// ``close()`` was called: the writer thread ends once the queue is empty.
        var closed = false
        /// Bytes written so far (drain watches it for progress).
        var written = 0
        /// Monotonic seconds at which the last write completed (at first: when the sink was
        /// made, so that the reader also paces itself while the writer thread starts).
        var lastWriteDone = monotonicSeconds()
        var framing = Framing.newlineDelimited
    }

    private let fd: Int32
    /// One of the `NEON_AUTH_OUTPUT_` kinds (CNeonSystem), decided once.
    private let kind: Int32
    /// A pipe's pages (its buffers: Linux stores a write in whole pages, merging a short write
    /// into the last page only when it fits), read when the sink is made and after growing it
    /// (a pipe shrunk later by someone else can make a direct write wait until the client
    /// reads), and this process's page size.
    private let pipePages: Atomic<Int>, pageSize: Int
    /// An upper bound of the pipe's pages holding data, and of the writes they hold, counting
    /// every write since the pipe was last seen empty (a client's reads only lower the truth):
    /// while the bound leaves room, a write cannot block and needs no `FIONREAD`. Only the one
    /// thread writing at a time (the `writing`/`directWriting` protocol) changes them.
    private let pagesUsed: Atomic<Int>, writesHeld = Atomic<Int>(0)
    /// stderr is the same file (`2>&1`): whoever logs should send its lines through
    /// ``sendOutOfBand(_:)``, between whole answers.
    public let sharesFileWithStderr: Bool
    /// stderr is the same pipe: a line written to fd 2 anyway (a library's) takes pages this
    /// process does not count.
    private let stderrSharesPipe: Bool
    /// Messages end with a newline (``Framing/newlineDelimited``): a partial write to a pipe
    /// then ends at a line's end, so that another writer of the pipe (a log line, `2>&1`) can
    /// only come between whole answers.
    private let linesFraming = Atomic<Bool>(true)
    /// Whether growing the pipe (to ``pipeGoal``) was tried; only the thread writing changes it.
    private let pipeGrowTried = Atomic<Bool>(false)
    /// The reading thread's buffer for one read's answers (see ``beginStaging()``).
    private nonisolated(unsafe) let staged: UnsafeMutablePointer<OutputBuffer>
    /// The thread between ``beginStaging()`` and ``endStaging()`` (0: none).
    private let stagingThread = Atomic<UInt>(0)
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)
    private let room = DispatchSemaphore(value: 0)
    private let maxQueuedBytes: Int
    private let onBroken: @Sendable (Int32) -> Void

    /// - Parameters:
    ///   - fd: the protocol output descriptor (left in blocking mode).
    ///   - maxQueuedBytes: the bound on unwritten output at which the reader pauses.
    ///   - onBroken: called once, from the thread whose `write(2)` failed, with its `errno`:
    ///     `EPIPE` when the reader of the output has gone away, anything else (`ENOSPC`, `EIO`...)
    ///     is a real write error; later output is discarded. See ``isReaderGone(_:)``.
    public init(fd: Int32, maxQueuedBytes: Int = 8 << 20, onBroken: @escaping @Sendable (Int32) -> Void = { _ in }) {
        self.fd = fd
        self.maxQueuedBytes = maxQueuedBytes
        self.onBroken = onBroken
        var kind = neon_auth_output_kind(fd)
        var capacity = 0
        if kind == Int32(NEON_AUTH_OUTPUT_PIPE) {
            capacity = neon_auth_grow_pipe(fd, 0)  // as it is; grown when first found short
            if capacity <= 0 { kind = Int32(NEON_AUTH_OUTPUT_OTHER) }
        }
        self.kind = kind
        pageSize = Int(getpagesize())
        pipePages = Atomic(capacity / pageSize)
        pagesUsed = Atomic(capacity / pageSize)  // unknown until first looked at
        sharesFileWithStderr = neon_auth_same_file(fd, 2) == 1
        stderrSharesPipe = kind == Int32(NEON_AUTH_OUTPUT_PIPE) && sharesFileWithStderr
        staged = .allocate(capacity: 1)
        staged.initialize(to: OutputBuffer(capacity: Self.stagingLimit + (16 << 10)))  // a limit's worth and one more answer
    }

    deinit {
        staged.pointee.release()
        staged.deinitialize(count: 1)
        staged.deallocate()
    }

    /// The pipe capacity asked for once a write finds the pipe short, in bytes: a few of the
    /// 64 KiB writes a read's answers make. Not more: an unprivileged user's pipes share a
    /// quota (/proc/sys/fs/pipe-user-pages-soft, 64 MiB by default), and past it every new
    /// pipe of that user gets 2 pages.
    static let pipeGoal = 256 << 10

    /// The framing used for output; switched once by the reader when it detects LSP-style input.
    public var framing: Framing {
        get { state.withLock { $0.framing } }
        set {
            state.withLock { $0.framing = newValue }
            linesFraming.store(newValue == .newlineDelimited, ordering: .relaxed)
        }
    }

    /// Whether the reader of the output has gone away (or writing failed otherwise).
    public var isBroken: Bool { state.withLock { $0.broken } }

    /// The `errno` of the write that failed, if one has (see ``isReaderGone(_:)``).
    public var failure: Int32? { state.withLock { $0.failure } }

    /// Queues one message without waking the writer (the reader batches a whole read's worth
    /// of responses, then calls ``flush()``). On the staging thread it joins the read's answers.
    public func enqueue(_ message: JSONValue) {
        var body: [UInt8] = []
        body.reserveCapacity(256)
        JSONWriter.write(message, into: &body)
        if isStagingThread {
            let framing = state.withLock { $0.framing }
            framing.append(body, to: &staged.pointee)
            if staged.pointee.count >= Self.stagingLimit { submitStaged() }
            return
        }
        state.withLock { state in
            guard !state.broken else { return }
            state.framing.append(body, to: &state.pending)
        }
    }

    /// Queues whole lines that are not protocol messages (log lines, when stderr is this very
    /// pipe or socket) between the queued answers, and writes what can go at once.
    /// - Returns: `false` when they were dropped: the output broke, or more than
    ///   `maxQueuedBytes` wait already (a log line never makes the service wait).
    public func sendOutOfBand(_ lines: [UInt8]) -> Bool {
        let queued = state.withLock { state -> Bool in
            guard !state.broken, state.pending.count < maxQueuedBytes else { return false }
            state.pending.append(contentsOf: lines)
            return true
        }
        if queued { flush() }
        return queued
    }

    /// Queues one message and wakes the writer (inside ``coalescing(_:)``, once at its end; on the
    /// staging thread, it goes out with the read's answers).
    public func send(_ message: JSONValue) {
        enqueue(message)
        if isStagingThread { return }
        if let pending = Self.coalesced {
            if !pending.sinks.contains(where: { $0 === self }) { pending.sinks.append(self) }
        } else {
            flush()
        }
    }

    private var isStagingThread: Bool {
        let thread = stagingThread.load(ordering: .relaxed)
        return thread != 0 && thread == UInt(pthread_self())
    }

    /// Starts collecting what the calling thread (the one reading requests) answers: every
    /// ``enqueue(_:)``, ``send(_:)`` and ``stage(appending:)`` from it goes to one buffer until
    /// ``endStaging()`` hands the whole buffer over at once.
    public func beginStaging() {
        stagingThread.store(UInt(pthread_self()), ordering: .relaxed)
    }

    /// Lets `body` append one message's bytes (newline-delimited framing; the caller checks)
    /// to the read's answers, without a lock. Only between ``beginStaging()`` and
    /// ``endStaging()``, on that thread.
    /// - Returns: `false` (nothing added) when `body` declines.
    @inline(__always)
    public func stage(appending body: (inout OutputBuffer) -> Bool) -> Bool {
        guard body(&staged.pointee) else { return false }
        staged.pointee.append(0x0A)
        if staged.pointee.count >= Self.stagingLimit { submitStaged() }
        return true
    }

    /// Ends ``beginStaging()``: writes the read's answers at once as far as the descriptor
    /// takes them without blocking, and queues the rest (and what others queued) for the writer.
    public func endStaging() {
        stagingThread.store(0, ordering: .relaxed)
        guard staged.pointee.count > 0 else {
            flush()
            return
        }
        submitStaged()
    }

    /// The read's answers collected so far go out once they reach this many bytes (as a C
    /// program's 64 KiB stdio buffer would): memory stays flat whatever one read brings in.
    static let stagingLimit = 64 << 10

    /// Writes (or queues) what is staged and empties the staging buffer.
    private func submitStaged() {
        let buffer = staged
        let direct = state.withLock { state -> Bool in
            if state.broken { return false }
            if state.pending.isEmpty && !state.writing && !state.directWriting {
                state.directWriting = true
                return true
            }
            state.pending.append(contentsOf: buffer.pointee.bytes)
            return false
        }
        if direct { finishDirect(buffer.pointee.bytes) } else { wakeWriterIfNeeded() }
        buffer.pointee.removeAll(keepingAtMost: 2 * Self.stagingLimit)
    }

    /// The sinks `send` queued to on this thread inside ``coalescing(_:)``.
    private final class Coalesced { var sinks: [OutputSink] = [] }
    private static let coalescingKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()
    private static var coalesced: Coalesced? {
        pthread_getspecific(coalescingKey).map { Unmanaged<Coalesced>.fromOpaque($0).takeUnretainedValue() }
    }

    /// Runs `body` with every ``send(_:)`` on this thread queued only, then flushes each sink
    /// once: a reader that delivers many answers from one read writes them in one `write(2)`.
    public static func coalescing(_ body: () -> Void) {
        guard coalesced == nil else { return body() }
        let pending = Coalesced()
        pthread_setspecific(coalescingKey, Unmanaged.passUnretained(pending).toOpaque())
        body()
        pthread_setspecific(coalescingKey, nil)
        for sink in pending.sinks { sink.flush() }
    }

    /// Writes what is queued: at once on the calling thread as far as the descriptor takes it
    /// without blocking (nobody else writing), which saves a thread hand-off per round trip;
    /// the rest by waking the writer thread.
    public func flush() {
        var chunk: [UInt8] = []
        let direct = state.withLock { state -> Bool in
            guard !state.writing, !state.directWriting, !state.broken, !state.pending.isEmpty else { return false }
            state.directWriting = true
            swap(&chunk, &state.pending)
            return true
        }
        if direct { chunk.withUnsafeBytes { finishDirect($0) } } else { wakeWriterIfNeeded() }
    }

    /// Writes what `bytes` the descriptor takes now (the caller set `directWriting`), then
    /// what others queued meanwhile, as long as the descriptor keeps taking everything; puts
    /// what is left at the head of the queue, clears `directWriting` and wakes the writer
    /// thread when something is left for it.
    private func finishDirect(_ bytes: UnsafeRawBufferPointer) {
        var (written, failure) = writeWithoutBlocking(bytes)
        var chunk: [UInt8] = []
        var fromChunk = false  // after the first round, what was written came from `chunk`
        while true {
            let now = written > 0 ? monotonicSeconds() : 0
            enum Next { case done(WriterAction), more, broken }
            let next = state.withLock { state -> Next in
                if written > 0 {
                    state.written += written
                    state.lastWriteDone = now
                }
                if failure != 0 {
                    state.directWriting = false
                    defer { state.broken = true }
                    state.pending = []
                    if !state.broken { state.failure = failure }
                    return state.broken ? .done(.none) : .broken
                }
                let count = fromChunk ? chunk.count : bytes.count
                if written < count {
                    var rest = fromChunk ? Array(chunk[written...]) : Array(UnsafeRawBufferPointer(rebasing: bytes[written...]))
                    rest.append(contentsOf: state.pending)
                    state.pending = rest
                } else if !state.pending.isEmpty && !state.broken {
                    chunk.removeAll(keepingCapacity: true)
                    swap(&chunk, &state.pending)
                    return .more  // still `directWriting`
                }
                state.directWriting = false
                return .done(Self.writerAction(&state))
            }
            switch next {
            case .done(let action):
                perform(action)
                return
            case .broken:
                onBroken(failure)
                return
            case .more:
                fromChunk = true
                (written, failure) = chunk.withUnsafeBytes { writeWithoutBlocking($0) }
            }
        }
    }

    private func wakeWriterIfNeeded() {
        let action = state.withLock { Self.writerAction(&$0) }
        perform(action)
    }

    /// What the writer thread needs: nothing, a wake-up, or to be started (it starts on the first
    /// flush that leaves something for it, so a short run whose answers are all written directly
    /// starts none).
    private enum WriterAction { case none, wake, start }

    /// Under the lock: what the writer thread needs for what is queued now.
    private static func writerAction(_ state: inout State) -> WriterAction {
        guard !state.pending.isEmpty || state.closed, !state.directWriting else { return .none }
        if !state.writerStarted {
            guard !state.pending.isEmpty else { return .none }
            state.writerStarted = true
            return .start
        }
        guard state.writerSleeping else { return .none }
        state.writerSleeping = false
        return .wake
    }

    private func perform(_ action: WriterAction) {
        switch action {
        case .none: break
        case .wake: wake.signal()
        case .start: DetachedThread.start { [self] in writerLoop() }
        }
    }

    /// Bytes of a `wanted`-byte write to the pipe that cannot block: from the bound of pages in
    /// use (see ``pagesUsed``), asking the kernel (`FIONREAD`) only when the bound is too high.
    private func pipeRoom(for wanted: Int) -> Int {
        let margin = stderrSharesPipe ? 4 : 2
        var pipePages = self.pipePages.load(ordering: .relaxed)
        var used = pagesUsed.load(ordering: .relaxed)
        if !stderrSharesPipe && used + wanted / pageSize + 1 + margin <= pipePages { return wanted }
        let unread = neon_auth_pipe_unread(fd)
        if unread < 0 { return 0 }
        if unread == 0 {
            used = 0
            writesHeld.store(0, ordering: .relaxed)
        } else {
            // Full pages for the unread bytes, plus at most one partly filled page per write
            // held and the one the client is reading.
            used = min(used, (Int(unread) + pageSize - 1) / pageSize + writesHeld.load(ordering: .relaxed) + 1)
        }
        pagesUsed.store(used, ordering: .relaxed)
        if (pipePages - used - margin - 1) * pageSize < wanted && !pipeGrowTried.load(ordering: .relaxed) {
            pipeGrowTried.store(true, ordering: .relaxed)
            let grown = neon_auth_grow_pipe(fd, Self.pipeGoal)
            if grown > 0 {
                pipePages = Int(grown) / pageSize
                self.pipePages.store(pipePages, ordering: .relaxed)
            }
        }
        let free = pipePages - used - margin
        return free > 1 ? min(wanted, (free - 1) * pageSize) : 0
    }

    /// Counts a write of `n` bytes to the pipe in the bound (at most n / page + 1 new pages).
    private func countPipeWrite(_ n: Int) {
        pagesUsed.add(n / pageSize + 1, ordering: .relaxed)
        writesHeld.add(1, ordering: .relaxed)
    }

    /// Writes as much of `bytes` as the descriptor takes without waiting for the client.
    /// - Returns: the bytes written, and 0 or the `errno` of a failed write.
    private func writeWithoutBlocking(_ bytes: UnsafeRawBufferPointer) -> (Int, Int32) {
        var offset = 0
        while offset < bytes.count {
            let left = bytes.count - offset
            let n: Int
            switch kind {
            case Int32(NEON_AUTH_OUTPUT_NEVER_BLOCKS):
                n = write(fd, bytes.baseAddress! + offset, left)
            case Int32(NEON_AUTH_OUTPUT_PIPE):
                let room = pipeRoom(for: left)
                guard room > 0 else { return (offset, 0) }
                n = write(fd, bytes.baseAddress! + offset, wholeLines(bytes.baseAddress! + offset, room, of: left))
                if n > 0 { countPipeWrite(n) }
            case Int32(NEON_AUTH_OUTPUT_SOCKET):
                n = Glibc.send(fd, bytes.baseAddress! + offset, left, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL))
            default:
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                guard poll(&pfd, 1, 0) == 1, pfd.revents & Int16(POLLOUT) != 0 else { return (offset, 0) }
                n = write(fd, bytes.baseAddress! + offset, min(left, Int(PIPE_BUF)))
                if n > 0 { return (offset + n, 0) }  // poll promised PIPE_BUF bytes at most
            }
            if n > 0 {
                offset += n
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                return (offset, 0)  // full (a socket), or someone made the descriptor non-blocking
            } else {
                return (offset, n == 0 ? EIO : errno)
            }
        }
        return (offset, 0)
    }

    /// Most bytes handed to one blocking `write(2)` to a descriptor other than a pipe: a blocking
    /// write returns only when all of it was taken, so this keeps each write short and lets
    /// drain() and the pacing see a slow client's progress every few KiB.
    static let maxSlice = 64 << 10

    /// The bytes to hand to the writer thread's next `write(2)` out of `remaining` at `start`. To
    /// a pipe: what fits without waiting (``pipeRoom(for:)``), so that a write never stops half
    /// way for a log line written to the same pipe (`2>&1`) to get in; when nothing fits, waits
    /// until the pipe has a free page and then writes at most `PIPE_BUF` bytes, which Linux
    /// writes whole. Either way cut at a line's end (``wholeLines(_:_:of:)``).
    private func sliceLength(_ start: UnsafeRawPointer, _ remaining: Int) -> Int {
        guard kind == Int32(NEON_AUTH_OUTPUT_PIPE) else { return min(remaining, Self.maxSlice) }
        let room = pipeRoom(for: remaining)
        if room > 0 { return wholeLines(start, room, of: remaining) }
        var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        _ = poll(&pfd, 1, 100)
        let after = pipeRoom(for: remaining)
        return wholeLines(start, after > 0 ? after : Int(PIPE_BUF), of: remaining)
    }

    /// `limit` bytes of the `available` at `start`, shortened to end after a newline when
    /// lines frame the messages and one ends within the limit.
    private func wholeLines(_ start: UnsafeRawPointer, _ limit: Int, of available: Int) -> Int {
        guard limit < available else { return available }
        guard linesFraming.load(ordering: .relaxed) else { return limit }
        let bytes = start.assumingMemoryBound(to: UInt8.self)
        var end = limit
        while end > 0 && bytes[end - 1] != 0x0A { end -= 1 }  // one line back at most, as a rule
        return end > 0 ? end : limit
    }

    /// Queued bytes past which the reader waits for a client that is reading (see the type).
    static let paceBytes = 256 << 10
    /// How recent the last completed write must be for the client to count as reading, seconds.
    static let paceWindow = 0.010

    /// Blocks while more than `maxQueuedBytes` are waiting to be written, and while more than
    /// ``paceBytes`` are while the client is reading (a write completed within ``paceWindow``).
    public func waitForRoom() {
        while true {
            let (queued, broken, lastWriteDone) = state.withLock { ($0.pending.count, $0.broken, $0.lastWriteDone) }
            if broken || queued <= Self.paceBytes { return }
            if queued <= maxQueuedBytes && monotonicSeconds() - lastWriteDone > Self.paceWindow { return }
            _ = room.wait(timeout: .now() + .milliseconds(queued > maxQueuedBytes ? 50 : 1))
        }
    }

    /// Waits until everything queued has been written (or the output broke), for as long as
    /// the reader keeps taking bytes: it gives up after `stallTimeout` seconds in which nothing
    /// could be written, or after `limit` seconds in all when one is given.
    /// - Returns: `true` when nothing is left to write.
    @discardableResult
    public func drain(stallTimeout: Double, limit: Double? = nil) -> Bool {
        flush()
        let start = monotonicSeconds()
        var lastProgress = start
        var lastWritten = state.withLock { $0.written }
        while state.withLock({ !$0.broken && ($0.writing || $0.directWriting || !$0.pending.isEmpty) }) {
            let written = state.withLock { $0.written }
            if written != lastWritten {
                lastWritten = written
                lastProgress = monotonicSeconds()
            } else if monotonicSeconds() - lastProgress > stallTimeout {
                return false
            }
            if let limit, monotonicSeconds() - start > limit { return false }
            usleep(1000)
        }
        return true
    }

    /// Ends the writer thread once everything queued is written (or the output broke); for
    /// sinks that live shorter than the process (one per agent connection). The descriptor is
    /// not closed: it is the caller's.
    public func close() {
        let startWriter = state.withLock { state -> Bool in
            state.closed = true
            guard !state.writerStarted, !state.pending.isEmpty else { return false }
            state.writerStarted = true
            return true
        }
        if startWriter { DetachedThread.start { [self] in writerLoop() } }
        wake.signal()
    }

    private func writerLoop() {
        var chunk: [UInt8] = []
        while true {
            enum Step { case write, sleep, end }
            let step = state.withLock { state -> Step in
                if state.pending.isEmpty || state.broken || state.directWriting {
                    state.writing = false
                    if state.closed && (state.pending.isEmpty || state.broken) { return .end }
                    state.writerSleeping = true
                    return .sleep
                }
                state.writing = true
                swap(&chunk, &state.pending)
                return .write
            }
            if step == .end { return }
            guard step == .write else {
                wake.wait()
                continue
            }
            room.signal()
            let failure = writeAll(chunk)
            if failure != 0 {
                let first = state.withLock { state -> Bool in
                    defer { state.broken = true }
                    state.pending = []
                    if !state.broken { state.failure = failure }
                    return !state.broken
                }
                room.signal()
                if first { onBroken(failure) }
            }
            chunk.removeAll(keepingCapacity: chunk.capacity <= 1 << 20)
        }
    }

    /// Whether a write error means only that the reader went away (`EPIPE`, or `ECONNRESET`
    /// on a socket), the normal end of `… | neon-auth | head -1`.
    public static func isReaderGone(_ error: Int32) -> Bool { error == EPIPE || error == ECONNRESET }

    /// Writes all of `bytes`. - Returns: 0, or the `errno` of the write that failed.
    private func writeAll(_ bytes: [UInt8]) -> Int32 {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                // At most one slice per call: a blocking write of the whole queue to a slow pipe
                // would return only when all of it was taken, hiding the client's progress
                // from drain() and the pacing.
                let n = write(fd, raw.baseAddress! + offset, sliceLength(raw.baseAddress! + offset, raw.count - offset))
                if n > 0 {
                    offset += n
                    if kind == Int32(NEON_AUTH_OUTPUT_PIPE) { countPipeWrite(n) }
                    let now = monotonicSeconds()
                    state.withLock {
                        $0.written += n
                        $0.lastWriteDone = now
                    }
                } else if n < 0 && errno == EINTR {
                    continue
                } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                    // Someone else made the shared descriptor non-blocking: wait until writable.
                    var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&pfd, 1, 100)
                } else {
                    return n == 0 ? EIO : errno
                }
            }
            return 0
        }
    }
}

/// How messages are delimited on the wire.
public enum Framing: Sendable, Equatable {
    /// One compact JSON text per line, `\n`-terminated.
    case newlineDelimited
    /// LSP-style: exactly `Content-Length: N\r\n\r\n` followed by the N bytes of the message.
    case contentLength

    /// Appends `message`, framed, to `out`.
    public func append(_ message: [UInt8], to out: inout [UInt8]) {
        switch self {
        case .newlineDelimited:
            out.append(contentsOf: message)
            out.append(0x0A)
        case .contentLength:
            out.append(contentsOf: "Content-Length: \(message.count)\r\n\r\n".utf8)
            out.append(contentsOf: message)
        }
    }

    /// Appends `message`, framed, to `out`.
    public func append(_ message: [UInt8], to out: inout OutputBuffer) {
        switch self {
        case .newlineDelimited:
            out.append(contentsOf: message)
            out.append(0x0A)
        case .contentLength:
            out.append(contentsOf: Array("Content-Length: \(message.count)\r\n\r\n".utf8))
            out.append(contentsOf: message)
        }
    }
}

/// Seconds on the monotonic clock (not affected by wall-clock changes).
@Sendable public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Seconds on a clock that also counts time the machine spent suspended (`CLOCK_BOOTTIME`):
/// NeonCRM's idle window runs on while a laptop sleeps, so every idle, refresh and
/// rejection-cache decision uses this clock.
@Sendable public func bootTimeSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_BOOTTIME, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// The standard descriptors, as a process must find them before it opens anything.
public enum StandardDescriptors {
    /// Points each of descriptors 0-2 that is closed at `/dev/null`. Call first thing: if a
    /// parent closed stderr, the next file opened (the protocol's duplicate of stdout, a
    /// socket) would land on fd 2, and log lines would corrupt it.
    public static func openClosed() {
        for fd: Int32 in 0...2 where fcntl(fd, F_GETFD) == -1 {
            let null = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY)
            if null >= 0 && null != fd {
                _ = dup2(null, fd)
                close(null)
            }
        }
    }
}

/// Plain detached OS threads, for work that blocks (a blocked write or wait must not sit on
/// the cooperative pool, where it would starve other work).
public enum DetachedThread {
    private final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    /// Called once, on the thread that starts the first of these threads, before it starts
    /// (set it before any thread is started; see ``onFirstStart(_:)``).
    private static let firstStart = Mutex<(@Sendable () -> Void)?>(nil)

    /// Sets what runs once, before the first thread this type starts: a process that starts a
    /// thread for its work is no longer a short one (the front-end starts its signal thread
    /// then, see `Lifecycle`).
    public static func onFirstStart(_ body: @escaping @Sendable () -> Void) {
        firstStart.withLock { $0 = body }
    }

    /// Runs `body` on a new detached thread.
    public static func start(_ body: @escaping @Sendable () -> Void) {
        if let first = firstStart.withLock({ hook -> (@Sendable () -> Void)? in
            defer { hook = nil }
            return hook
        }) { first() }
        var thread = pthread_t()
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, context)
        pthread_detach(thread)
    }
}
