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
/// Producers queue whole framed messages and never write themselves: one dedicated writer
/// thread drains the queue with large `write(2)` calls, so a message is never split or
/// interleaved with another, and a client that reads slowly never blocks the reader or the
/// concurrency pool. The reader applies backpressure with ``waitForRoom()``: when more than
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
    }

    /// The framing used for output; switched once by the reader when it detects LSP-style input.
    public var framing: Framing {
        get { state.withLock { $0.framing } }
        set { state.withLock { $0.framing = newValue } }
    }

    /// Whether the reader of the output has gone away (or writing failed otherwise).
    public var isBroken: Bool { state.withLock { $0.broken } }

    /// The `errno` of the write that failed, if one has (see ``isReaderGone(_:)``).
    public var failure: Int32? { state.withLock { $0.failure } }

    /// Queues one message without waking the writer (the reader batches a whole read's worth
    /// of responses, then calls ``flush()``).
    public func enqueue(_ message: JSONValue) {
        var body: [UInt8] = []
        body.reserveCapacity(256)
        JSONWriter.write(message, into: &body)
        state.withLock { state in
            guard !state.broken else { return }
            state.framing.append(body, to: &state.pending)
        }
    }

    /// Lets `body` append one message's bytes straight into the queue (newline-delimited
    /// framing only), avoiding a copy on the hot path.
    /// - Returns: `false` (queue unchanged) when `body` declines or framing is not newline-delimited.
    public func enqueue(appending body: (inout [UInt8]) -> Bool) -> Bool {
        state.withLock { state in
            guard state.framing == .newlineDelimited, !state.broken else { return false }
            let mark = state.pending.count
            guard body(&state.pending) else {
                state.pending.removeSubrange(mark...)
                return false
            }
            state.pending.append(0x0A)
            return true
        }
    }

    /// Queues one message and wakes the writer (inside ``coalescing(_:)``, once at its end).
    public func send(_ message: JSONValue) {
        enqueue(message)
        if let pending = Self.coalesced {
            if !pending.sinks.contains(where: { $0 === self }) { pending.sinks.append(self) }
        } else {
            flush()
        }
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

    /// Writes what is queued: at once on the calling thread when that cannot block (nobody else
    /// is writing, at most `PIPE_BUF` bytes are queued and the descriptor reports room), which
    /// saves a thread hand-off per round trip; otherwise by waking the writer thread.
    public func flush() {
        var chunk: [UInt8] = []
        let direct = state.withLock { state -> Bool in
            guard !state.writing, !state.directWriting, !state.broken, !state.pending.isEmpty,
                  state.pending.count <= Int(PIPE_BUF) else { return false }
            state.directWriting = true
            swap(&chunk, &state.pending)
            return true
        }
        if direct {
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let writable = poll(&pfd, 1, 0) == 1 && pfd.revents & Int16(POLLOUT) != 0
            let failure = writable ? writeAll(chunk) : 0
            let first = state.withLock { state -> Bool in
                state.directWriting = false
                if !writable {
                    chunk.append(contentsOf: state.pending)
                    state.pending = chunk
                } else if failure != 0 {
                    defer { state.broken = true }
                    state.pending = []
                    if !state.broken { state.failure = failure }
                    return !state.broken
                }
                return false
            }
            if first { onBroken(failure) }
        }
        let (wakeWriter, startWriter) = state.withLock { state -> (Bool, Bool) in
            guard !state.pending.isEmpty || state.closed, !state.directWriting else { return (false, false) }
            if !state.writerStarted {
                guard !state.pending.isEmpty else { return (false, false) }
                state.writerStarted = true
                return (false, true)
            }
            guard state.writerSleeping else { return (false, false) }
            state.writerSleeping = false
            return (true, false)
        }
        if startWriter { DetachedThread.start { [self] in writerLoop() } }
        if wakeWriter { wake.signal() }
    }

    /// Most bytes handed to one `write(2)`; to a pipe, no more than the room left in it (at
    /// least ``minSlice``). A blocking write to a full pipe returns only when all of it was
    /// taken, so this keeps each write short and lets drain() and the pacing see a slow
    /// client's progress every few KiB.
    static let maxSlice = 64 << 10, minSlice = 4 << 10

    /// The bytes to hand to the next `write(2)` out of `remaining`.
    private func sliceLength(_ remaining: Int) -> Int {
        if remaining <= Self.minSlice { return remaining }  // one answer at a time: no system call
        let room = neon_auth_pipe_room(fd)
        guard room >= 0 else { return min(remaining, Self.maxSlice) }  // not a pipe
        return min(remaining, Self.maxSlice, max(Int(room), Self.minSlice))
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
                let n = write(fd, raw.baseAddress! + offset, sliceLength(raw.count - offset))
                if n > 0 {
                    offset += n
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

    /// Runs `body` on a new detached thread.
    public static func start(_ body: @escaping @Sendable () -> Void) {
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
