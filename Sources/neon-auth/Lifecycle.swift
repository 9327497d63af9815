#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization
import JSONRPC
import NeonAuth

/// The one graceful way out: answer what is in flight, log out pooled sessions within a
/// deadline, exit. Entered from end of input, a closed stdout, SIGTERM or SIGINT; a second
/// signal exits at once.
final class Lifecycle: @unchecked Sendable {
    enum Reason: String {
        case endOfInput = "end of input"
        case outputClosed = "stdout closed"
        case signal = "signal"
    }

    private let pool: SessionPool
    private let log: Logger
    private let shutdownTimeout: Double
    private let inFlightTimeout: Double
    private let started = Atomic<Bool>(false)
    var server: StdioServer?
    var output: OutputSink?

    init(pool: SessionPool, log: Logger, shutdownTimeout: Double, inFlightTimeout: Double) {
        self.pool = pool
        self.log = log
        self.shutdownTimeout = shutdownTimeout
        self.inFlightTimeout = inFlightTimeout
    }

    /// The signals that ask for a graceful shutdown: SIGTERM, SIGINT and SIGHUP (the terminal
    /// went away), except SIGHUP when the parent left it ignored (`nohup`). Call before the
    /// dispositions are changed.
    static func gracefulSignals() -> [Int32] {
        var hangup = sigaction()
        sigaction(SIGHUP, nil, &hangup)
        let ignored = unsafeBitCast(hangup.__sigaction_handler.sa_handler, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self)
        return ignored ? [SIGTERM, SIGINT] : [SIGTERM, SIGINT, SIGHUP]
    }

    /// Takes the graceful signals on a thread of their own, with `sigwait` (the main thread
    /// blocked them before any thread was created, so no other thread receives them): the first
    /// starts the graceful shutdown (or, when one is already under way, e.g. after end of input,
    /// lets it finish), a second signal exits at once with status 1.
    /// - Parameter signals: ``gracefulSignals()``, blocked in every thread.
    /// A hang-up is often delivered twice (by the shell and by the kernel), so SIGHUP never
    /// counts as the second signal.
    func installSignalHandlers(_ signals: [Int32]) {
        DetachedThread.start { [self] in
            var set = sigset_t()
            sigemptyset(&set)
            for signo in signals { sigaddset(&set, signo) }
            var received = 0
            while true {
                var signo: Int32 = 0
                guard sigwait(&set, &signo) == 0 else { continue }
                if signo != SIGHUP || received == 0 { received += 1 }
                if received > 1 {
                    log.warn("second signal: exiting at once")
                    _exit(1)
                }
                if started.load(ordering: .acquiring) {
                    log.info("signal: already shutting down; a second signal exits at once")
                    continue
                }
                DetachedThread.start { self.shutdown(.signal, inFlightLimit: min(self.inFlightTimeout, 3)) }
            }
        }
    }

    /// Shuts down and exits the process; only the first call does anything.
    func shutdown(_ reason: Reason, inFlightLimit: Double? = nil) {
        guard started.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            // Another thread is shutting down; the reader thread just waits for it.
            while true { pause() }
        }
        log.info("shutting down (\(reason.rawValue))")
        if reason != .outputClosed, let server {
            if !server.waitForInFlight(timeout: inFlightLimit ?? inFlightTimeout) {
                log.warn("shutting down with requests still in flight")
            }
        }
        // Log out pooled sessions while the remaining responses drain to a possibly slow reader.
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<(Int, Int)>((0, 0))
        let pool = self.pool, deadline = shutdownTimeout
        if pool.beginShutdown() {
            Task.detached {
                let r = await pool.shutdown(deadline: deadline)
                result.withLock { $0 = r }
                done.signal()
            }
        } else {
            done.signal()  // never logged in: nothing to log out
        }
        // End of input waits for a slow reader as long as it keeps reading; a signal asks to
        // stop, so its wait is bounded.
        if let output, !output.drain(stallTimeout: 10, limit: reason == .signal ? max(3, shutdownTimeout) : nil) {
            log.warn("stdout is not taking the remaining responses: exiting with some unwritten")
        }
        if done.wait(timeout: .now() + shutdownTimeout + 1) == .timedOut {
            log.warn("logout at exit did not finish in time")
        }
        // Requests still in flight were cancelled by the pool's shutdown: their answers
        // (-32005) come now; write them too.
        if reason != .outputClosed, let server, let output {
            _ = server.waitForInFlight(timeout: 1)
            _ = output.drain(stallTimeout: 2, limit: 3)
        }
        let (loggedOut, abandoned) = result.withLock { $0 }
        if loggedOut + abandoned > 0 || log.enabled(.info) {
            let level: LogLevel = abandoned > 0 ? .warn : .info
            log.log(level, "exit: \(loggedOut) session(s) logged out, \(abandoned) abandoned")
        }
        if log.dropped > 0 { log.warn("\(log.dropped) log line(s) were dropped because stderr was not being read") }
        exit(0)
    }
}

