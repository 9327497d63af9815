#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch

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
    private let inFlight = DispatchGroup()

    /// - Parameters:
    ///   - inputFD: the descriptor requests are read from (never switched to non-blocking).
    ///   - output: where responses go.
    ///   - dispatcher: the method table.
    ///   - maxMessageBytes: the longest line accepted, in bytes, excluding its terminator.
    public init(inputFD: Int32, output: OutputSink, dispatcher: Dispatcher, maxMessageBytes: Int) {
        self.inputFD = inputFD
        self.output = output
        self.dispatcher = dispatcher
        self.maxMessageBytes = maxMessageBytes
    }

    /// Reads and answers messages until end of input (or a read error), then returns.
    /// Deferred calls may still be running; see ``waitForInFlight(timeout:)``.
    public func run() {
        var decoder = FrameDecoder(maxMessageBytes: maxMessageBytes)
        let chunkSize = 64 * 1024
        let chunk = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: chunkSize)
        defer { chunk.deallocate() }
        let output = self.output
        while !output.isBroken {
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
            decoder.consume(UnsafeBufferPointer(rebasing: chunk[0..<n]), onFraming: { output.framing = $0 }, handle: handleEvent)
            output.flush()
        }
        decoder.finish(onFraming: { output.framing = $0 }, handle: handleEvent)
        output.flush()
    }

    /// Waits until every deferred call has been answered.
    /// - Parameter timeout: the longest wait, in seconds.
    /// - Returns: `true` when nothing is in flight any more.
    public func waitForInFlight(timeout: Double) -> Bool {
        inFlight.wait(timeout: .now() + timeout) == .success
    }

    private func handleEvent(_ event: FrameDecoder.Event) {
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
        if output.enqueue(appending: { dispatcher.answerFast(bytes, into: &$0) }) { return }
        switch MessageReader.read(bytes) {
        case .failure(let error):
            output.enqueue(ResponseWriter.failure(id: .null, error: error))
        case .single(let call):
            switch dispatcher.answerImmediately(call) {
            case .done(let response):
                if let response { output.enqueue(response) }
            case .needsTask:
                inFlight.enter()
                let router = self.dispatcher, output = self.output, group = self.inFlight
                Task {
                    if let response = await router.answer(call) { output.send(response) }
                    group.leave()
                }
            }
        case .batch(let calls):
            let outcomes = calls.map { dispatcher.answerImmediately($0) }
            if outcomes.allSatisfy({ if case .done = $0 { true } else { false } }) {
                let responses = outcomes.compactMap { if case .done(let r) = $0 { r } else { nil } }
                if !responses.isEmpty { output.enqueue(.array(responses)) }
                return
            }
            inFlight.enter()
            let router = self.dispatcher, output = self.output, group = self.inFlight
            Task {
                let responses = await withTaskGroup(of: (Int, JSONValue?).self) { tasks in
                    for (index, outcome) in outcomes.enumerated() {
                        switch outcome {
                        case .done(let response): tasks.addTask { (index, response) }
                        case .needsTask: tasks.addTask { (index, await router.answer(calls[index])) }
                        }
                    }
                    var collected = [JSONValue?](repeating: nil, count: calls.count)
                    for await (index, response) in tasks { collected[index] = response }
                    return collected.compactMap { $0 }
                }
                if !responses.isEmpty { output.send(.array(responses)) }
                group.leave()
            }
        }
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
