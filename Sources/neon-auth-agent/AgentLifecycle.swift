#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization
import CNeonSystem
import JSONRPC
import NeonAuth

/// How an agent claims its socket, notices it should end, and ends: every session logged out
/// in parallel within `--shutdown-timeout`, the socket unlinked if it is still its own.
final class AgentLifecycle: @unchecked Sendable {
    private let pool: SessionPool
    private let log: Logger
    private let shutdownTimeout: Double
    private let finishing = Atomic<Bool>(false)
    /// Whether `stop` leaves the accounting to its caller (a private agent's front-end logs it).
    var quietStop = false
    /// The socket this agent bound: its path and (device, inode), set once by ``claim(_:)``.
    private let socket = Mutex<(path: String, device: UInt64, inode: UInt64)?>(nil)
    /// The lifetime lock's descriptor (closed, releasing the lock, when the socket is given up).
    private let lockFD = Mutex<Int32>(-1)

    init(pool: SessionPool, log: Logger, shutdownTimeout: Double) {
        self.pool = pool
        self.log = log
        self.shutdownTimeout = shutdownTimeout
    }

    /// Becomes the one agent serving `location`, or exits: takes its lifetime lock (`flock`,
    /// held until exit; another agent holding it means this one is not needed: exit 0), then
    /// binds a temporary name and renames it onto the socket path, so that a connecting
    /// front-end only ever finds a socket that is listening.
    /// - Returns: the listening descriptor.
    func claim(_ location: AgentLocation) -> Int32 {
        if let problem = AgentLocation.isPrivate(location.directory, uid: geteuid()) {
            log.error("the directory \(location.directory) \(problem): not serving there")
            exit(1)
        }
        let lock = open(location.lockPath, O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard lock >= 0 else {
            log.error("cannot open \(location.lockPath): \(String(cString: strerror(errno)))")
            exit(1)
        }
        // An agent that is ending releases the lock as it unlinks its socket; one still serving
        // keeps it (and its socket, which a front-end would have found): then this one exits.
        let lockDeadline = monotonicSeconds() + 3
        while flock(lock, LOCK_EX | LOCK_NB) != 0 {
            var info = stat()
            if stat(location.socketPath, &info) == 0 || monotonicSeconds() > lockDeadline {
                log.info("another agent already serves \(location.socketPath)")
                exit(0)
            }
            usleep(20_000)
        }
        lockFD.withLock { $0 = lock }
        // Under the lock, a socket file left there is stale (its agent died without unlinking it).
        unlink(location.socketPath)
        let temporary = location.directory + "/.\(location.name).\(getpid())"
        let listener = neon_auth_unix_listen(temporary, 128)
        guard listener >= 0 else {
            log.error("cannot listen on \(temporary): \(String(cString: strerror(errno)))")
            exit(1)
        }
        guard rename(temporary, location.socketPath) == 0 else {
            log.error("cannot rename its socket into place: \(String(cString: strerror(errno)))")
            unlink(temporary)
            exit(1)
        }
        var info = stat()
        if stat(location.socketPath, &info) == 0 {
            socket.withLock { $0 = (location.socketPath, UInt64(info.st_dev), UInt64(info.st_ino)) }
        }
        return listener
    }

    /// Whether the socket path still names the socket this agent bound.
    private var ownsSocket: Bool {
        guard let mine = socket.withLock({ $0 }) else { return false }
        var info = stat()
        return stat(mine.path, &info) == 0 && UInt64(info.st_dev) == mine.device && UInt64(info.st_ino) == mine.inode
    }

    /// Watches, on the calling thread, for the two ends of a shared agent: its socket removed
    /// or replaced (checked every half second), and `idleExit` seconds with no connection and
    /// an idle pool. Never returns.
    func watch(_ location: AgentLocation, server: AgentServer, idleExit: Double) -> Never {
        var idleSince: Double? = nil
        while true {
            usleep(500_000)
            if !ownsSocket { finish(reason: "its socket \(location.socketPath) was removed or replaced") }
            let now = monotonicSeconds()
            if server.secondsWithoutConnections > 0 && poolIsIdle() {
                let since = idleSince ?? now
                idleSince = since
                if now - since >= idleExit { finish(reason: "no session and no connection for \(idleExit) s") }
            } else {
                idleSince = nil
            }
        }
    }

    private func poolIsIdle() -> Bool {
        let result = Mutex(false)
        let done = DispatchSemaphore(value: 0)
        let pool = self.pool
        Task.detached {
            let idle = await pool.isIdle
            result.withLock { $0 = idle }
            done.signal()
        }
        done.wait()
        return result.withLock { $0 }
    }

    /// SIGTERM and SIGINT (blocked in every thread) end the agent gracefully.
    func installSignalHandlers(_ set: sigset_t) {
        DetachedThread.start { [self] in
            var signals = set
            var signo: Int32 = 0
            while sigwait(&signals, &signo) != 0 {}
            finish(reason: signo == SIGINT ? "SIGINT" : "SIGTERM")
        }
    }

    /// Logs every session out and returns the accounting, then exits shortly after (time for
    /// the `stop` answer to be written). For `neon-auth agent stop` and a private agent's end.
    func stopRequested() async -> SessionPool.Accounting {
        guard finishing.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            while true { try? await Task.sleep(nanoseconds: 1_000_000_000) }
        }
        unlinkOwnSocket()
        let accounting = await pool.shutdown(deadline: shutdownTimeout)
        if !quietStop { report(accounting, reason: "stop requested") }
        DetachedThread.start {
            usleep(300_000)
            exit(0)
        }
        return accounting
    }

    /// Unlinks the socket (if still its own), logs every session out, logs the accounting and
    /// exits 0. Only the first call does anything; later callers block.
    func finish(reason: String) -> Never {
        guard finishing.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            while true { pause() }
        }
        log.info("ending (\(reason))")
        unlinkOwnSocket()
        let result = Mutex<SessionPool.Accounting?>(nil)
        let done = DispatchSemaphore(value: 0)
        let pool = self.pool, deadline = shutdownTimeout
        if pool.beginShutdown() {
            Task.detached {
                let accounting = await pool.shutdown(deadline: deadline)
                result.withLock { $0 = accounting }
                done.signal()
            }
            _ = done.wait(timeout: .now() + deadline + 1)
        }
        if let accounting = result.withLock({ $0 }) { report(accounting, reason: reason) }
        exit(0)
    }

    /// Gives the name up: unlinks the socket (if still its own) and releases the lifetime lock,
    /// so that a new agent can serve the name while this one logs out.
    private func unlinkOwnSocket() {
        if ownsSocket, let path = socket.withLock({ $0?.path }) { unlink(path) }
        lockFD.withLock { fd in
            if fd >= 0 { close(fd) }
            fd = -1
        }
    }

    private func report(_ a: SessionPool.Accounting, reason: String) {
        var line = "exit: \(a.obtained) session(s) obtained from NeonCRM, \(a.loggedOut) logged out, \(a.abandoned.count) abandoned"
        if !a.abandoned.isEmpty { line += " (orgs: \(a.abandoned.joined(separator: ", ")))" }
        if !a.unanswered.isEmpty { line += "; \(a.unanswered.count) login(s) still unanswered (orgs: \(a.unanswered.joined(separator: ", ")))" }
        log.log(a.abandoned.isEmpty && a.unanswered.isEmpty ? .info : .warn, line)
    }
}
