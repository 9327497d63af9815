#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization
import JSONRPC
import NeonAuth

/// The one graceful way out: answer what is in flight, log out pooled sessions within a
/// deadline, exit. Entered from end of input, LSP `exit`, a closed or failing stdout, SIGTERM,
/// SIGINT or SIGHUP; a second signal exits at once.
final class Lifecycle: @unchecked Sendable {
    enum Reason: Equatable {
        case endOfInput
        /// LSP `exit` (a request or a notification).
        case exitRequested
        /// The reader of stdout went away (`EPIPE`): a normal end.
        case outputClosed
        /// Writing stdout failed otherwise (`ENOSPC`, `EIO`...): exit status ``Lifecycle/writeErrorStatus``.
        case outputFailed(Int32)
        case signal(Int32)

        var text: String {
            switch self {
            case .endOfInput: return "end of input"
            case .exitRequested: return "exit"
            case .outputClosed: return "stdout closed"
            case .outputFailed(let error): return "cannot write to stdout: \(String(cString: strerror(error)))"
            case .signal(let signo): return Lifecycle.signalName(signo)
            }
        }

        /// Whether answers can still be written.
        var outputUsable: Bool {
            switch self {
            case .outputClosed, .outputFailed: return false
            default: return true
            }
        }
    }

    /// The exit status after a write error on stdout other than a reader that went away
    /// (`EX_IOERR` of sysexits.h).
    static let writeErrorStatus: Int32 = 74
    /// A repeat of the first signal within this many seconds of it is the same user action (a
    /// launcher that forwards signals to its process group delivers them twice), not the
    /// second signal that exits at once.
    static let repeatWindow = 0.25

    private let agent: AgentClient
    private let log: Logger
    private let shutdownTimeout: Double
    private let inFlightTimeout: Double
    private let started = Atomic<Bool>(false)
    var server: StdioServer?
    var output: OutputSink?

    init(agent: AgentClient, log: Logger, shutdownTimeout: Double, inFlightTimeout: Double) {
        self.agent = agent
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

    static func signalName(_ signo: Int32) -> String {
        switch signo {
        case SIGTERM: return "SIGTERM"
        case SIGINT: return "SIGINT"
        case SIGHUP: return "SIGHUP"
        default: return "signal \(signo)"
        }
    }

    /// Takes the graceful signals on a thread of their own, with `sigwait` (the main thread
    /// blocked them before any thread was created, so no other thread receives them): the first
    /// starts the graceful shutdown (or, when one is already under way, e.g. after end of input,
    /// lets it finish), a second signal exits at once with status 1.
    /// - Parameter signals: ``gracefulSignals()``, blocked in every thread.
    /// Not a second signal: SIGHUP (a hang-up is often delivered twice, by the shell and by the
    /// kernel), and a repeat of the first signal within ``repeatWindow`` of it.
    /// The thread is started by ``startSignalThread()``, on the first need (see `main.swift`).
    func installSignalHandlers(_ signals: [Int32]) {
        signalSet.withLock { $0 = signals }
    }

    private let signalSet = Mutex<[Int32]>([])
    private let signalThreadStarted = Atomic<Bool>(false)

    /// Starts the signal thread of ``installSignalHandlers(_:)`` (once; later calls do
    /// nothing). Until then the graceful signals stay blocked and pending: the thread takes
    /// them at once when it starts. The front-end starts it when it first waits for input,
    /// starts any other thread, or has to wait at shutdown, so a process that reads one request
    /// and ends at once (the common shell case) never pays for a thread.
    func startSignalThread() {
        guard signalThreadStarted.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        let signals = signalSet.withLock { $0 }
        DetachedThread.start { [self] in
            var set = sigset_t()
            sigemptyset(&set)
            for signo in signals { sigaddset(&set, signo) }
            var first: (signo: Int32, at: Double)? = nil
            while true {
                var signo: Int32 = 0
                guard sigwait(&set, &signo) == 0 else { continue }
                let now = monotonicSeconds()
                guard let earlier = first else {
                    first = (signo, now)
                    if started.load(ordering: .acquiring) {
                        log.info("\(Self.signalName(signo)): already shutting down; a second signal exits at once")
                        continue
                    }
                    let received = signo
                    DetachedThread.start { self.shutdown(.signal(received), inFlightLimit: min(self.inFlightTimeout, 3)) }
                    continue
                }
                if signo == SIGHUP || (signo == earlier.signo && now - earlier.at < Self.repeatWindow) {
                    log.info("\(Self.signalName(signo)) again: taken as the same request to stop")
                    continue
                }
                log.warn("second signal (\(Self.signalName(signo))): exiting at once, without waiting for logouts")
                _exit(1)
            }
        }
    }

    /// Shuts down and exits the process; only the first call does anything (later callers
    /// block for good, leaving the exit to the first).
    ///
    /// 1. While stdout can take answers: waits for requests in flight (at most `inFlightLimit`,
    ///    default the in-flight timeout), then answers every one still waiting with -32005, so
    ///    that each request with an id gets exactly one response.
    /// 2. Ends its use of the agent while the answers drain: a private agent logs out every
    ///    session, and every session of a login still running as it arrives, within
    ///    `--shutdown-timeout`; the shared agent just loses this connection (its sessions stay
    ///    pooled for the next process).
    /// 3. Logs the accounting and exits: 0, or ``writeErrorStatus`` after a write error.
    func shutdown(_ reason: Reason, inFlightLimit: Double? = nil) {
        guard started.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            while true { pause() }
        }
        log.info("shutting down (\(reason.text))")
        if reason.outputUsable, let server {
            // Waiting for anything: a signal must be able to cut it short.
            if !server.waitForInFlight(timeout: 0) { startSignalThread() }
            if !server.waitForInFlight(timeout: inFlightLimit ?? inFlightTimeout) {
                let expired = server.answerRemaining(with: NeonError.cancelled.rpcError(timeout: 0))
                log.warn("shutting down with \(expired) request(s) still in flight: answered -32005")
            }
        }
        // Log out pooled sessions while the remaining responses drain to a possibly slow reader.
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<SessionPool.Accounting?>(nil)
        let agent = self.agent, deadline = shutdownTimeout
        let shared = agent.usesSharedAgent
        if agent.finishIfUnconnected() {
            // No agent was needed (e.g. only `sign`): no logout to wait for, no thread to start.
            done.signal()
        } else {
            DetachedThread.start {
                let accounting = agent.finish(deadline: deadline + 0.5)
                result.withLock { $0 = accounting }
                done.signal()
            }
        }
        // End of input waits for a slow reader as long as it keeps reading; a signal asks to
        // stop, so its wait is bounded.
        var bounded = false
        if case .signal = reason { bounded = true }
        var drained = false
        if reason.outputUsable, let output {
            drained = output.drain(stallTimeout: 10, limit: bounded ? max(3, shutdownTimeout) : nil)
            if !drained { log.warn("stdout is not taking the remaining responses: exiting with some unwritten") }
        }
        if done.wait(timeout: .now() + shutdownTimeout + 1) == .timedOut {
            log.warn("logout at exit did not finish in time")
        }
        if let accounting = result.withLock({ $0 }) {
            report(accounting)
        } else if shared {
            log.info("exit: this process's sessions stay pooled in the shared agent (`neon-auth agent stop` logs them out)")
        } else if log.enabled(.info) {
            log.info("exit: no session was obtained from NeonCRM")
        }
        if log.dropped > 0 { log.warn("\(log.dropped) log line(s) were dropped because stderr was not being read") }
        // With stderr the protocol's own pipe (`2>&1`) the lines above went into the output's
        // queue: they are written before exit as the answers were.
        if drained, let output { _ = output.drain(stallTimeout: 10, limit: bounded ? 3 : nil) }
        // A write error at any point, not only the one that started the shutdown, fails the run.
        if let failure = output?.failure, !OutputSink.isReaderGone(failure) {
            log.error("\(Reason.outputFailed(failure).text): some responses were lost (exit status \(Self.writeErrorStatus))")
            exit(Self.writeErrorStatus)
        }
        exit(0)
    }

    /// The exit summary: its figures are NeonCRM's (sessions obtained = logged out + abandoned),
    /// and each session left behind is named by org ID.
    private func report(_ a: SessionPool.Accounting) {
        let abandoned = a.abandoned.count
        var line = "exit: \(a.obtained) session(s) obtained from NeonCRM, \(a.loggedOut) logged out, \(abandoned) abandoned"
        if !a.abandoned.isEmpty { line += " (orgs: \(a.abandoned.joined(separator: ", ")))" }
        if a.loggingOut > 0 { line += "; \(a.loggingOut) logout(s) unanswered at the deadline" }
        if !a.unanswered.isEmpty {
            line += "; \(a.unanswered.count) login(s) still unanswered (orgs: \(a.unanswered.joined(separator: ", "))): if NeonCRM completes one, that session expires after its idle window"
        }
        log.log(abandoned + a.unanswered.count > 0 ? .warn : .info, line)
    }
}
