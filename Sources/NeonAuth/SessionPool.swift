import JSONRPC
import Synchronization

/// Logs in and out of NeonCRM API v1 for the session pool: one attempt per call. The seam
/// that tests replace.
public protocol SessionBackend: Sendable {
    /// Logs `key`'s credential in at `key.v1BaseURL` and returns the new user session ID.
    /// - Parameter timeout: seconds allowed for this attempt.
    func login(_ key: SessionPool.Key, timeout: Double) async throws(NeonError) -> Secret
    /// Logs the session out.
    func logout(_ key: SessionPool.Key, sessionId: Secret) async throws(NeonError)
}

/// Why the pool refused a `closeSession`.
public enum SessionPoolError: Error, Sendable, Equatable {
    /// The ID was not issued by this process, or is no longer pooled.
    case unknownSession
    /// Releasing a session that has no holder left (without `logout`).
    case notHeld
}

/// The pool of NeonCRM API v1 sessions, one current session per (v1 base URL, org ID, API key).
///
/// Semantics:
/// - `open` hands out the current session if it is fresh (`reused: true`, no HTTP call) and adds a
///   holder; otherwise it logs in. Concurrent opens for one key share one login (single flight).
/// - A session is *used* when it is handed out or released. One unused for
///   `idleTimeout - idleMargin` seconds is stale: never handed out again. NeonCRM fact
///   (../shared/neoncrm-auth.md, "Session lifetime"): sessions expire after 30 minutes of inactivity.
/// - Refresh ahead: when a session handed out is within `refreshAhead` seconds of going stale, one
///   background login starts; callers keep getting the current session until the new one is ready.
/// - A stale or replaced session leaves the hand-out slot at once; it is logged out as soon as
///   nobody holds it (at once if nobody does).
/// - `replace` drops the named session only if it is still the current one (compare-and-swap) and
///   releases the caller's hold on it; all concurrent replacers share the one new login.
/// - `close` releases a hold; with `logout` it logs the session out at once, whoever holds it.
/// - Logins are retried on transient failures (unreachable, timeout, HTTP 5xx/429, v1 errors 1
///   and 2) with capped exponential backoff and full jitter, within `loginDeadline`. A rejected
///   credential is remembered for `rejectionTTL` seconds and fails fast meanwhile.
/// - A login is never cancelled once sent: NeonCRM may complete it anyway. One that completes
///   after nobody wants its session (its key was evicted, or the pool is shutting down) is
///   logged out at once. Every session NeonCRM issued is accounted for: logged out, or still
///   outstanding (pooled, being logged out, or its logout failed); see ``accounting``.
/// - Time is read from `clock`, by default `CLOCK_BOOTTIME` (``bootTimeSeconds()``), which
///   counts suspend: NeonCRM's idle window runs on while the machine sleeps.
///
/// The hand-out state (which session is current per key, every known session, holders, last use)
/// lives behind one lock, so that ``openPooled(_:)`` and ``releasePooled(_:)`` can serve the
/// common case (a fresh pooled session, a release that logs nothing out) synchronously, without
/// a task or an actor hop; everything else (logins, refresh, logouts) is the actor's.
public actor SessionPool {
    /// What identifies one pooled user: two API keys of one org never share a session.
    public struct Key: Hashable, Sendable {
        public var v1BaseURL: String
        public var credential: Credential
        public init(v1BaseURL: String, credential: Credential) {
            self.v1BaseURL = v1BaseURL
            self.credential = credential
        }
    }

    /// Non-secret description of who opened a session, for `status`.
    public struct Label: Sendable, Equatable {
        public var profile: String?
        public var environment: String
        public init(profile: String? = nil, environment: String = "production") {
            self.profile = profile
            self.environment = environment
        }
    }

    /// Timing policy of the pool (seconds).
    public struct Policy: Sendable {
        /// NeonCRM's idle window (1800 in production).
        public var idleTimeout: Double = 1800
        /// Safety margin before the idle window ends, `0 <= idleMargin < idleTimeout`.
        public var idleMargin: Double = 60
        /// Advisory window before staleness in which a background refresh starts.
        public var refreshAhead: Double = 120
        /// Total time one login may take, retries included.
        public var loginDeadline: Double = 10
        /// First retry delay; doubles each retry up to `maxBackoff`; full jitter.
        public var baseBackoff: Double = 0.2
        public var maxBackoff: Double = 2
        /// How long a rejected credential fails fast without contacting NeonCRM.
        public var rejectionTTL: Double = 10
        /// When set, a timer calls ``sweep()`` this often (seconds), started with the pool's
        /// first session (a pool that never logs in runs no timer).
        public var sweepInterval: Double? = nil
        public init() {}
    }

    /// The result of ``open(_:label:replace:)``.
    public struct Opened: Sendable, Equatable {
        public var userSessionId: Secret
        /// `true` when the pooled session was handed out with no login.
        public var reused: Bool
        /// Seconds from now during which ``openPooled(_:)`` would hand this same session out
        /// again with no login and no refresh (see ``leaseWindow``); 0 when a refresh is under
        /// way (it is about to be replaced).
        public var leaseSeconds: Double
    }

    /// Seconds after its last use during which a session is handed out as it is: after that a
    /// refresh is due (`idleTimeout - idleMargin - refreshAhead`). A front-end that was handed
    /// a session may hand it out again itself for this long after the agent last saw it used
    /// (its lease), since nothing but an explicit logout, an eviction or a `replace` takes a
    /// session out of the hand-out slot sooner.
    public nonisolated var leaseWindow: Double { max(0, policy.idleTimeout - policy.idleMargin - policy.refreshAhead) }

    /// What became of every session NeonCRM issued to this pool, for the exit summary.
    public struct Accounting: Sendable, Equatable {
        /// Sessions NeonCRM issued (successful logins).
        public var obtained = 0
        /// Sessions logged out at NeonCRM (successful logouts).
        public var loggedOut = 0
        /// The org ID of each session that is neither logged out nor pooled (its logout failed,
        /// or is still waiting for NeonCRM's answer), sorted. After ``shutdown(deadline:)``
        /// nothing is pooled: `obtained == loggedOut + abandoned.count`.
        public var abandoned: [String] = []
        /// How many of `abandoned` are logouts still waiting for NeonCRM's answer.
        public var loggingOut = 0
        /// The org ID of each login still waiting for NeonCRM's answer, sorted: if NeonCRM
        /// completes one, that session expires on its own after NeonCRM's idle window.
        public var unanswered: [String] = []
        public init() {}
    }

    /// Counters since start-up.
    public struct Counters: Sendable, Equatable {
        public var logins = 0, loginFailures = 0, loginRetries = 0, reuses = 0, replaces = 0, logouts = 0, logoutFailures = 0
        public var rejectionsServedFromCache = 0
    }

    /// One session. Its `let`s are immutable; its `var`s are read and written only while
    /// holding `ledger`'s lock (hence `@unchecked Sendable`).
    private final class Record: @unchecked Sendable {
        let id: Secret
        let key: Key
        let label: Label
        let createdAt: Double
        var lastUsed: Double
        var holders = 0
        var isCurrent = true
        init(id: Secret, key: Key, label: Label, now: Double) {
            self.id = id
            self.key = key
            self.label = label
            createdAt = now
            lastUsed = now
        }
    }

    private struct Flight {
        let token: Int
        let task: Task<Secret, any Error>
    }

    private let backend: any SessionBackend
    private let clock: @Sendable () -> Double
    /// The timing policy.
    public nonisolated let policy: Policy

    /// The hand-out state: shared by the actor and the synchronous fast path.
    private struct Ledger {
        /// The session handed out per key.
        var current: [Key: Record] = [:]
        /// Every session the pool knows (current, or retired but still held).
        var records: [Secret: Record] = [:]
        var shuttingDown = false
        /// Whether a login was ever started (else there is nothing to log out at shutdown).
        var everLoggedIn = false
        /// Sessions handed out with no login (the `reuses` counter).
        var reuses = 0
    }
    private let ledger = Mutex(Ledger())
    /// Told of every session that leaves the hand-out slot (see ``onRetire(_:)``).
    private let retireHandler = Mutex<(@Sendable (Secret) -> Void)?>(nil)
    private var flights: [Key: Flight] = [:]
    /// Every login task not yet finished, by token (flights, and logins whose key was evicted).
    private var runningLogins: [Int: (key: Key, task: Task<Secret, any Error>)] = [:]
    /// Tokens of running logins whose key was evicted: their session is logged out on arrival.
    private var retiredLogins: Set<Int> = []
    /// Every session NeonCRM issued that has not been logged out successfully.
    private var outstanding: [Secret: Key] = [:]
    /// Sessions whose logout is under way.
    private var loggingOut: Set<Secret> = []
    private var rejected: [Key: (until: Double, errors: [NeonV1Error])] = [:]
    private var nextToken = 0
    private var sweeper: Task<Void, Never>?
    private var backgroundLogouts: [Int: Task<Void, Never>] = [:]
    private var tallies = Counters()
    /// Counters since start-up.
    public var counters: Counters {
        var counters = tallies
        counters.reuses = ledger.withLock { $0.reuses }
        return counters
    }

    /// - Parameters:
    ///   - backend: performs logins and logouts.
    ///   - policy: timing policy.
    ///   - clock: seconds that count suspend (``bootTimeSeconds()``); injected by tests.
    public init(backend: any SessionBackend, policy: Policy, clock: @escaping @Sendable () -> Double = bootTimeSeconds) {
        self.backend = backend
        self.policy = policy
        self.clock = clock
    }

    private nonisolated func idleSeconds(_ record: Record, now: Double) -> Double { now - record.lastUsed }
    private nonisolated func isFresh(_ record: Record, now: Double) -> Bool {
        idleSeconds(record, now: now) < policy.idleTimeout - policy.idleMargin
    }

    /// Hands out a session for `key`, adding a holder.
    /// - Parameters:
    ///   - key: the user and host.
    ///   - label: who asks (profile, environment), kept for `status`.
    ///   - replace: a session the caller found invalid (NeonCRM error 4); dropped if still current.
    /// - Throws: `NeonError` when a needed login fails (`.credentialsRejected` with `cachedFor`
    ///   set when the rejection was remembered).
    ///   - releasingHold: whether the caller holds `replace` (its hold is released); `false` for a
    ///     caller that only names it (another process's holds are left alone).
    ///   - lasting: the caller keeps no hold (a shell's `neon-auth session`): a session within
    ///     `refreshAhead` of going stale is not handed out; the caller waits for the refresh and
    ///     gets the new one, which stays valid after the caller lets go.
    public func open(_ key: Key, label: Label = Label(), replace: Secret? = nil, releasingHold: Bool = true,
                     lasting: Bool = false) async throws(NeonError) -> Opened {
        if let replace {
            ledger.withLock { l in
                guard let old = l.records[replace], old.key == key else { return }
                if releasingHold && old.holders > 0 { old.holders -= 1 }
                if old.isCurrent {
                    tallies.replaces += 1
                    retire(old, in: &l)
                } else if old.holders == 0 {
                    discard(old, in: &l)
                }
            }
        }
        enum Step {
            case handedOut(Opened)
            case failed(NeonError)
            case wait(Flight)
        }
        for _ in 0..<3 {
            let step: Step = ledger.withLock { l in
                if l.shuttingDown { return .failed(.cancelled) }
                let now = clock()
                if let record = l.current[key] {
                    if isFresh(record, now: now) {
                        let refreshDue = idleSeconds(record, now: now) >= policy.idleTimeout - policy.idleMargin - policy.refreshAhead
                        if refreshDue && lasting {
                            // Replaced (and logged out, nobody holding it) as soon as the refresh
                            // lands: wait for the new one instead.
                            return .wait(flights[key] ?? startFlight(for: key, label: label, in: &l))
                        }
                        if refreshDue, flights[key] == nil {
                            _ = startFlight(for: key, label: label, in: &l)  // refresh ahead, in the background
                        }
                        record.holders += 1
                        record.lastUsed = now
                        l.reuses += 1
                        return .handedOut(Opened(userSessionId: record.id, reused: true, leaseSeconds: refreshDue ? 0 : leaseWindow))
                    }
                    retire(record, in: &l)
                }
                if let cached = rejected[key] {
                    if cached.until > now {
                        tallies.rejectionsServedFromCache += 1
                        return .failed(.credentialsRejected(cached.errors, cachedFor: cached.until - now))
                    }
                    rejected[key] = nil
                }
                return .wait(flights[key] ?? startFlight(for: key, label: label, in: &l))
            }
            let flight: Flight
            switch step {
            case .handedOut(let opened): return opened
            case .failed(let error): throw error
            case .wait(let waiting): flight = waiting
            }
            let id: Secret
            do {
                id = try await flight.task.value
            } catch {
                throw (error as? NeonError) ?? .cancelled
            }
            let opened: Opened? = ledger.withLock { l in
                guard let record = l.current[key], record.id == id else { return nil }
                record.holders += 1
                record.lastUsed = clock()
                return Opened(userSessionId: id, reused: false, leaseSeconds: leaseWindow)
            }
            if let opened { return opened }
            // Retired between the login and this caller's turn: go round again.
        }
        throw .unexpectedResponse(reason: "sessions were invalidated faster than they could be handed out", httpStatus: 200)
    }

    /// The synchronous fast path of ``open(_:label:replace:)``: hands out `key`'s current
    /// session at once, adding a holder, when that is all `open` would do (the session is fresh
    /// and not yet within `refreshAhead` of going stale, and the pool is not shutting down).
    /// Callable from any thread; never waits on anything but a short lock.
    /// - Returns: the user session ID (`reused: true`), or `nil` when ``open(_:label:replace:)``
    ///   must decide (no session, a refresh or login due, shutdown); nothing is changed then.
    public nonisolated func openPooled(_ key: Key) -> Secret? {
        ledger.withLock { l in
            guard !l.shuttingDown, let record = l.current[key] else { return nil }
            let now = clock()
            guard idleSeconds(record, now: now) < policy.idleTimeout - policy.idleMargin - policy.refreshAhead else { return nil }
            record.holders += 1
            record.lastUsed = now
            l.reuses += 1
            return record.id
        }
    }

    /// The synchronous fast path of ``close(_:logout:)`` without `logout`: releases one hold
    /// when that logs nothing out (the session is current, or others still hold it).
    /// Callable from any thread; never waits on anything but a short lock.
    /// - Returns: `true` when released (`loggedOut: false`); `false` when ``close(_:logout:)``
    ///   must decide (unknown ID, no holder, last holder of a retired session); nothing is
    ///   changed then.
    public nonisolated func releasePooled(_ id: Secret) -> Bool {
        ledger.withLock { l in
            guard let record = l.records[id], record.holders > (record.isCurrent ? 0 : 1) else { return false }
            record.holders -= 1
            record.lastUsed = clock()
            return true
        }
    }

    /// Adds a holder to a session already handed out (a front-end handed it out again from its
    /// lease, see ``leaseWindow``), marking it used. Callable from any thread; never waits on
    /// anything but a short lock.
    /// - Returns: the lease from now (``leaseWindow`` while `id` is its key's current session, 0
    ///   for one retired but still held), or `nil`, changing nothing, when `id` is not pooled,
    ///   is stale, or the pool is shutting down.
    public nonisolated func holdPooled(_ id: Secret) -> Double? {
        ledger.withLock { l in
            guard !l.shuttingDown, let record = l.records[id] else { return nil }
            let now = clock()
            guard isFresh(record, now: now) else { return nil }
            record.holders += 1
            record.lastUsed = now
            l.reuses += 1
            return record.isCurrent && l.current[record.key] === record ? leaseWindow : 0
        }
    }

    /// Whether `id` is a session the pool knows (current, or retired but still held).
    public nonisolated func isPooled(_ id: Secret) -> Bool { ledger.withLock { $0.records[id] != nil } }

    /// Starts a login for `key`; called with the ledger locked (`l`).
    private func startFlight(for key: Key, label: Label, in l: inout Ledger) -> Flight {
        l.everLoggedIn = true
        nextToken += 1
        let token = nextToken
        let task = Task<Secret, any Error> {
            do throws(NeonError) {
                let id = try await self.loginWithRetries(key, token: token)
                try self.install(id, for: key, label: label, token: token)
                return id
            } catch {
                self.flightFailed(for: key, token: token, error: error)
                throw error
            }
        }
        let flight = Flight(token: token, task: task)
        flights[key] = flight
        runningLogins[token] = (key, task)
        return flight
    }

    /// Whether the login `token` should stop: shutdown, or its key was evicted.
    private func loginAbandoned(_ token: Int) -> NeonError? {
        if retiredLogins.contains(token) { return .credentialsChanged }
        if isShuttingDown { return .cancelled }
        return nil
    }

    private var isShuttingDown: Bool { ledger.withLock { $0.shuttingDown } }

    /// One login, retried on transient failures within the login deadline (not after shutdown
    /// began or its key was evicted). Never cancelled while a request is with NeonCRM.
    private func loginWithRetries(_ key: Key, token: Int) async throws(NeonError) -> Secret {
        let deadline = clock() + policy.loginDeadline
        var attempt = 0
        var lastError: NeonError? = nil
        while true {
            let remaining = deadline - clock()
            guard remaining > 0 else { throw lastError ?? .timedOut }
            do {
                return try await backend.login(key, timeout: remaining)
            } catch {
                lastError = error
                guard error.isTransient else { throw error }
                if let stop = loginAbandoned(token) { throw stop }
                let ceiling = min(policy.maxBackoff, policy.baseBackoff * Double(1 << min(attempt, 20)))
                let delay = Double.random(in: 0...ceiling)
                guard clock() + delay < deadline else { throw error }
                attempt += 1
                tallies.loginRetries += 1
                // In slices, so that a shutdown or an eviction ends the wait soon.
                let wake = monotonicSeconds() + delay
                while case let left = wake - monotonicSeconds(), left > 0 {
                    try? await Task.sleep(nanoseconds: UInt64(min(0.05, left) * 1e9))
                    if let stop = loginAbandoned(token) { throw stop }
                }
            }
        }
    }

    private func install(_ id: Secret, for key: Key, label: Label, token: Int) throws(NeonError) {
        tallies.logins += 1
        outstanding[id] = key
        runningLogins[token] = nil
        if retiredLogins.remove(token) != nil {
            // Its key was evicted while NeonCRM was logging it in: nobody may use it.
            logOutInBackground(id, key: key)
            throw .credentialsChanged
        }
        if flights[key]?.token == token { flights[key] = nil }
        let installed = ledger.withLock { l in
            if l.shuttingDown { return false }
            if let previous = l.current[key] { retire(previous, in: &l) }
            let record = Record(id: id, key: key, label: label, now: clock())
            l.current[key] = record
            l.records[id] = record
            return true
        }
        if installed, sweeper == nil, let interval = policy.sweepInterval { startSweeping(every: interval) }
        if !installed {
            // Nobody can reach it any more: do not leave it logged in.
            logOutInBackground(id, key: key)
            throw .cancelled
        }
    }

    private func flightFailed(for key: Key, token: Int, error: NeonError) {
        runningLogins[token] = nil
        retiredLogins.remove(token)
        if flights[key]?.token == token { flights[key] = nil }
        if error == .cancelled || error == .credentialsChanged { return }
        tallies.loginFailures += 1
        if case .credentialsRejected(let errors, _) = error, policy.rejectionTTL > 0 {
            rejected[key] = (clock() + policy.rejectionTTL, errors)
        }
    }

    /// Sets what is told, with the session's ID, whenever a session leaves the hand-out slot
    /// (replaced, refreshed, stale, evicted or logged out) and, for every session, when shutdown
    /// begins (before any logout): the agent tells the front-ends it was handed to, so that none
    /// hands it out again from its lease (see ``leaseWindow``). Called with the pool's lock
    /// held: it must not call the pool, and must not block.
    public nonisolated func onRetire(_ handler: @escaping @Sendable (Secret) -> Void) {
        retireHandler.withLock { $0 = handler }
    }

    /// Marks `record` out of the hand-out slot (once), telling ``onRetire(_:)``'s handler.
    private nonisolated func unslot(_ record: Record, in l: inout Ledger) {
        if l.current[record.key] === record { l.current[record.key] = nil }
        guard record.isCurrent else { return }
        record.isCurrent = false
        if let handler = retireHandler.withLock({ $0 }) { handler(record.id) }
    }

    /// Marks the pool shutting down (once), taking every session out of the hand-out slot
    /// (``onRetire(_:)``'s handler is told of each) before anything is logged out.
    private nonisolated func beginShuttingDown(in l: inout Ledger) {
        guard !l.shuttingDown else { return }
        l.shuttingDown = true
        for record in Array(l.records.values) { unslot(record, in: &l) }
    }

    /// Whether `id` is its key's current session (the one handed out).
    public nonisolated func isCurrent(_ id: Secret) -> Bool {
        ledger.withLock { l in l.records[id].map { $0.isCurrent && l.current[$0.key] === $0 } ?? false }
    }

    /// Takes `record` out of the hand-out slot; logs it out now if nobody holds it.
    private func retire(_ record: Record, in l: inout Ledger) {
        unslot(record, in: &l)
        if record.holders == 0 { discard(record, in: &l) }
    }

    /// Forgets `record` at once and logs it out in the background.
    private func discard(_ record: Record, in l: inout Ledger) {
        l.records[record.id] = nil
        unslot(record, in: &l)
        logOutInBackground(record.id, key: record.key)
    }

    private func logOutInBackground(_ id: Secret, key: Key) {
        nextToken += 1
        let token = nextToken
        backgroundLogouts[token] = Task {
            await self.performLogout(id, key: key)
            self.backgroundLogouts[token] = nil
        }
    }

    /// Logs `id` out at NeonCRM (once: a second call while one is under way does nothing).
    /// - Returns: whether NeonCRM confirmed the logout.
    @discardableResult
    private func performLogout(_ id: Secret, key: Key) async -> Bool {
        guard loggingOut.insert(id).inserted else { return false }
        defer { loggingOut.remove(id) }
        do {
            try await backend.logout(key, sessionId: id)
            tallies.logouts += 1
            outstanding[id] = nil
            return true
        } catch {
            tallies.logoutFailures += 1
            return false
        }
    }

    /// Releases one hold on a session, or with `logout` logs it out at once.
    ///
    /// Racing with a login or refresh for the same key: a close names an ID, so it only ever
    /// affects that session; a refresh that completes later installs its new session as usual.
    /// - Returns: whether the session was logged out at NeonCRM by this call.
    /// - Throws: `SessionPoolError`.
    public func close(_ id: Secret, logout: Bool) async throws(SessionPoolError) -> Bool {
        enum Step {
            case failed(SessionPoolError)
            case released
            case logOut(Key)
        }
        let step: Step = ledger.withLock { l in
            guard let record = l.records[id] else { return .failed(.unknownSession) }
            if logout {
                l.records[id] = nil
                unslot(record, in: &l)
                return .logOut(record.key)
            }
            guard record.holders > 0 else { return .failed(.notHeld) }
            record.holders -= 1
            record.lastUsed = clock()
            if !record.isCurrent && record.holders == 0 {
                l.records[id] = nil
                return .logOut(record.key)
            }
            return .released
        }
        switch step {
        case .failed(let error): throw error
        case .released: return false
        case .logOut(let key): return await performLogout(id, key: key)
        }
    }

    /// Logs out, at once and whoever holds them, every session of these credentials (their
    /// key changed or vanished from the credentials file). A login still running for one of
    /// them is not cancelled (NeonCRM may complete it anyway): its session is logged out when
    /// it arrives, and its waiters get ``NeonError/credentialsChanged``.
    /// - Returns: how many sessions were dropped.
    @discardableResult
    public func evict(_ credentials: Set<Credential>) -> Int {
        let dropped = ledger.withLock { l in
            let doomed = l.records.values.filter { credentials.contains($0.key.credential) }
            for record in doomed { discard(record, in: &l) }
            return doomed.count
        }
        for (key, flight) in flights where credentials.contains(key.credential) {
            retiredLogins.insert(flight.token)
            flights[key] = nil
        }
        return dropped
    }

    /// Logs out every pooled session nobody holds whose idle window has ended.
    /// - Returns: how many were retired.
    @discardableResult
    public func sweep() -> Int {
        ledger.withLock { l in
            let now = clock()
            let stale = l.current.values.filter { !isFresh($0, now: now) }
            for record in stale { retire(record, in: &l) }
            return stale.count
        }
    }

    /// Starts a timer that calls ``sweep()`` every `interval` seconds until shutdown (from
    /// `install`, with the first session, when `policy.sweepInterval` is set).
    private func startSweeping(every interval: Double) {
        sweeper?.cancel()
        sweeper = Task {
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
                if Task.isCancelled { return }
                self.sweep()
            }
        }
    }

    /// Stops handing out sessions at once, from any thread: every later `open` fails with
    /// `.cancelled` and no new login starts.
    /// - Returns: whether ``shutdown(deadline:)`` still has work (a login was ever started, so
    ///   there may be sessions, logins or logouts in flight); `false` means nothing to log out.
    public nonisolated func beginShutdown() -> Bool {
        ledger.withLock { l in
            beginShuttingDown(in: &l)
            return l.everLoggedIn
        }
    }

    /// Stops handing out sessions and logs out every session the pool knows, in parallel;
    /// logins still running are waited for (not cancelled: NeonCRM may complete them) and their
    /// sessions logged out as they arrive.
    /// - Parameter deadline: seconds allowed for all of it; whatever is unfinished then is
    ///   reported, not waited for.
    /// - Returns: what became of every session NeonCRM issued to this pool.
    public func shutdown(deadline: Double) async -> Accounting {
        let all = ledger.withLock { l in
            beginShuttingDown(in: &l)
            defer {
                l.records = [:]
                l.current = [:]
            }
            return Array(l.records.values)
        }
        sweeper?.cancel()
        for record in all { logOutInBackground(record.id, key: record.key) }
        let end = monotonicSeconds() + deadline
        // Logouts a `close` is awaiting count too (they are in `loggingOut` only).
        while !(runningLogins.isEmpty && backgroundLogouts.isEmpty && loggingOut.isEmpty) && monotonicSeconds() < end {
            try? await Task.sleep(nanoseconds: 5_000_000)
        }
        return accounting
    }

    /// Whether the pool holds nothing and is doing nothing: no session, no login, no logout
    /// under way (an agent may exit then).
    public var isIdle: Bool {
        runningLogins.isEmpty && backgroundLogouts.isEmpty && loggingOut.isEmpty && ledger.withLock { $0.records.isEmpty }
    }

    /// What became of every session NeonCRM issued so far (see ``Accounting``).
    public var accounting: Accounting {
        var result = Accounting()
        result.obtained = tallies.logins
        result.loggedOut = tallies.logouts
        result.loggingOut = loggingOut.count
        let pooled = ledger.withLock { Set($0.records.keys) }
        result.abandoned = outstanding.filter { !pooled.contains($0.key) }
            .map(\.value.credential.orgId).sorted()
        result.unanswered = runningLogins.values.map(\.key.credential.orgId).sorted()
        return result
    }

    /// A view of one session without secrets, for `status` and tests.
    public struct SessionInfo: Sendable, Equatable {
        public var orgId: String
        public var label: Label
        public var holders: Int
        public var ageSeconds: Double
        public var idleSeconds: Double
        /// A background login for this key is running.
        public var refreshing: Bool
        /// It is the session handed out for its key (not a stale one still held).
        public var current: Bool
    }

    /// Every session the pool knows, without secrets, oldest first per org.
    public func sessions() -> [SessionInfo] {
        ledger.withLock { l in
            let now = clock()
            return l.records.values.map {
                SessionInfo(orgId: $0.key.credential.orgId, label: $0.label, holders: $0.holders,
                            ageSeconds: now - $0.createdAt, idleSeconds: now - $0.lastUsed,
                            refreshing: $0.isCurrent && flights[$0.key] != nil, current: $0.isCurrent)
            }.sorted { ($0.orgId, -$0.ageSeconds) < ($1.orgId, -$1.ageSeconds) }
        }
    }
}

extension NeonError {
    /// Whether a login failing this way may succeed if tried again soon.
    var isTransient: Bool {
        switch self {
        case .unavailable, .timedOut: return true
        case .credentialsRejected, .unexpectedResponse, .cancelled, .credentialsChanged, .tlsFailure: return false
        }
    }
}

/// The production backend: API v1 over HTTP.
public struct HTTPSessionBackend: SessionBackend {
    public var http: any HTTPClient
    /// Deadline of one logout, seconds.
    public var logoutTimeout: Double

    public init(http: any HTTPClient, logoutTimeout: Double) {
        self.http = http
        self.logoutTimeout = logoutTimeout
    }

    public func login(_ key: SessionPool.Key, timeout: Double) async throws(NeonError) -> Secret {
        try await NeonV1API(baseURL: key.v1BaseURL, http: http, timeout: timeout).login(key.credential)
    }

    public func logout(_ key: SessionPool.Key, sessionId: Secret) async throws(NeonError) {
        try await NeonV1API(baseURL: key.v1BaseURL, http: http, timeout: logoutTimeout).logout(sessionId)
    }
}
