#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization
import CNeonSystem
import JSONRPC
import NeonAuth

/// Serves the agent's methods to each front-end connection: one reading thread per connection
/// (``StdioServer`` over the socket) and its own writer (``OutputSink``).
final class AgentServer: Sendable {
    private let service: AgentService
    private let log: Logger
    private let maxMessageBytes: Int
    /// Monotonic seconds at which the last connection ended (or the agent started).
    private let lastConnectionEnded = Mutex<Double>(monotonicSeconds())

    init(service: AgentService, log: Logger, maxMessageBytes: Int) {
        self.service = service
        self.log = log
        self.maxMessageBytes = maxMessageBytes
    }

    /// Seconds since the agent last had a connection (0 while it has one).
    var secondsWithoutConnections: Double {
        service.connections > 0 ? 0 : monotonicSeconds() - lastConnectionEnded.withLock { $0 }
    }

    /// Accepts connections on `listener` for ever, on the calling thread. A peer of another uid
    /// is refused at once (SO_PEERCRED), before anything is read.
    func acceptLoop(_ listener: Int32) {
        let uid = geteuid()
        while true {
            let fd = neon_auth_unix_accept(listener)
            if fd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                if errno == EMFILE || errno == ENFILE {
                    log.warn("out of file descriptors; not accepting for a moment")
                    usleep(100_000)
                    continue
                }
                log.error("accept failed: \(String(cString: strerror(errno)))")
                return
            }
            var peer: UInt32 = 0
            guard neon_auth_peer_uid(fd, &peer, nil) == 0, peer == uid else {
                log.warn("refused a connection from uid \(peer) (only uid \(uid) may use this agent)")
                close(fd)
                continue
            }
            DetachedThread.start { self.serve(fd, closeWhenDone: true) }
        }
    }

    /// Serves one connection until its peer closes it; then releases every hold it has.
    /// - Parameters:
    ///   - fd: the connection (read and written).
    ///   - closeWhenDone: close `fd` at the end (not for a private agent's standard input).
    func serve(_ fd: Int32, closeWhenDone: Bool, output outputFD: Int32? = nil) {
        let connection = service.connect()
        let output = OutputSink(fd: outputFD ?? fd)
        connection.attach(output)
        let dispatcher = Dispatcher(handlers: service.handlers(for: connection))
        let server = StdioServer(inputFD: fd, output: output, dispatcher: dispatcher, maxMessageBytes: maxMessageBytes)
        server.run()
        if !server.waitForInFlight(timeout: 60) {
            _ = server.answerRemaining(with: NeonError.cancelled.rpcError(timeout: 0))
        }
        connection.attach(nil)
        _ = output.drain(stallTimeout: 2, limit: 5)
        output.close()
        let done = DispatchSemaphore(value: 0)
        let service = self.service
        Task.detached {
            await service.disconnect(connection)
            done.signal()
        }
        done.wait()
        lastConnectionEnded.withLock { $0 = monotonicSeconds() }
        if closeWhenDone { close(fd) }
    }
}
