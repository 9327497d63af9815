#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The single owner of the protocol output descriptor.
///
/// Producers append whole framed messages; a message is never split or interleaved with
/// another. Whoever calls ``flush()`` while nobody else is writing becomes the writer and
/// drains everything queued, so pipelined responses leave in large `write(2)` calls while a
/// lone response is written at once, without a thread hop.
public final class OutputSink: Sendable {
    private struct State {
        var pending: [UInt8] = []
        var writing = false
        var broken = false
    }

    private let fd: Int32
    private let framing: Mutex<Framing>
    private let state = Mutex(State())
    private let onBroken: @Sendable () -> Void

    /// - Parameters:
    ///   - fd: the protocol output descriptor (left in blocking mode).
    ///   - onBroken: called once, from the writing thread, when the reader has gone away
    ///     (`EPIPE` or another write error); later output is discarded.
    public init(fd: Int32, onBroken: @escaping @Sendable () -> Void = {}) {
        self.fd = fd
        self.framing = Mutex(.newlineDelimited)
        self.onBroken = onBroken
    }

    /// The framing used for output; set once by the reader when it detects LSP-style input.
    public var currentFraming: Framing {
        get { framing.withLock { $0 } }
        set { framing.withLock { $0 = newValue } }
    }

    /// Whether the reader of the output has gone away.
    public var isBroken: Bool { state.withLock { $0.broken } }

    /// Queues one message (a JSON value, written compactly and framed) without writing it.
    public func enqueue(_ message: JSONValue) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(256)
        JSONWriter.write(message, into: &bytes)
        let framed = currentFraming.frame(bytes)
        state.withLock { state in
            guard !state.broken else { return }
            state.pending.append(contentsOf: framed)
        }
    }

    /// Queues one message and writes everything queued.
    public func send(_ message: JSONValue) {
        enqueue(message)
        flush()
    }

    /// Writes everything queued, unless another thread is already writing (it will pick up
    /// what was queued before it finishes).
    public func flush() {
        var chunk: [UInt8] = []
        let proceed = state.withLock { state -> Bool in
            guard !state.writing, !state.pending.isEmpty, !state.broken else { return false }
            state.writing = true
            swap(&chunk, &state.pending)
            return true
        }
        guard proceed else { return }
        while true {
            let ok = writeAll(chunk)
            chunk.removeAll(keepingCapacity: true)
            let more = state.withLock { state -> Bool in
                if !ok {
                    state.broken = true
                    state.pending = []
                }
                if state.pending.isEmpty || state.broken {
                    state.writing = false
                    return false
                }
                swap(&chunk, &state.pending)
                return true
            }
            if !ok { onBroken() }
            if !more { return }
        }
    }

    private func writeAll(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n > 0 {
                    offset += n
                } else if n < 0 && errno == EINTR {
                    continue
                } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                    // Someone else made the shared descriptor non-blocking: wait until writable.
                    var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&pfd, 1, -1)
                } else {
                    return false
                }
            }
            return true
        }
    }
}

/// How messages are delimited on the wire.
public enum Framing: Sendable, Equatable {
    /// One compact JSON text per line, `\n`-terminated.
    case newlineDelimited
    /// LSP-style: `Content-Length: N\r\n\r\n` followed by N bytes.
    case contentLength

    /// The bytes of `message` framed for the wire.
    public func frame(_ message: [UInt8]) -> [UInt8] {
        switch self {
        case .newlineDelimited:
            var out = message
            out.append(0x0A)
            return out
        case .contentLength:
            var out = Array("Content-Length: \(message.count)\r\n\r\n".utf8)
            out.append(contentsOf: message)
            return out
        }
    }
}
