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
    private var flights: [Key: Flight] = [:]
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
    ///   - clock: monotonic seconds; injected by tests.
    public init(backend: any SessionBackend, policy: Policy, clock: @escaping @Sendable () -> Double = monotonicSeconds) {
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
    public func open(_ key: Key, label: Label = Label(), replace: Secret? = nil) async throws(NeonError) -> Opened {
        if let replace {
            ledger.withLock { l in
                guard let old = l.records[replace], old.key == key else { return }
                if old.holders > 0 { old.holders -= 1 }
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
                        if idleSeconds(record, now: now) >= policy.idleTimeout - policy.idleMargin - policy.refreshAhead,
                           flights[key] == nil {
                            _ = startFlight(for: key, label: label, in: &l)  // refresh ahead, in the background
                        }
                        record.holders += 1
                        record.lastUsed = now
                        l.reuses += 1
                        return .handedOut(Opened(userSessionId: record.id, reused: true))
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
                return Opened(userSessionId: id, reused: false)
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

    /// Starts a login for `key`; called with the ledger locked (`l`).
    private func startFlight(for key: Key, label: Label, in l: inout Ledger) -> Flight {
        l.everLoggedIn = true
        nextToken += 1
        let token = nextToken
        let task = Task<Secret, any Error> {
            do throws(NeonError) {
                let id = try await self.loginWithRetries(key)
                try self.install(id, for: key, label: label, token: token)
                return id
            } catch {
                self.flightFailed(for: key, token: token, error: error)
                throw error
            }
        }
        let flight = Flight(token: token, task: task)
        flights[key] = flight
        return flight
    }

    private var isShuttingDown: Bool { ledger.withLock { $0.shuttingDown } }

    /// One login, retried on transient failures within the login deadline.
    private func loginWithRetries(_ key: Key) async throws(NeonError) -> Secret {
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
                guard error.isTransient, !isShuttingDown, !Task.isCancelled else { throw error }
                let ceiling = min(policy.maxBackoff, policy.baseBackoff * Double(1 << min(attempt, 20)))
                let delay = Double.random(in: 0...ceiling)
                guard clock() + delay < deadline else { throw error }
                attempt += 1
                tallies.loginRetries += 1
                try? await Task.sleep(nanoseconds: UInt64(delay * 1e9))
                if Task.isCancelled { throw .cancelled }
            }
        }
    }

    private func install(_ id: Secret, for key: Key, label: Label, token: Int) throws(NeonError) {
        tallies.logins += 1
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
        if flights[key]?.token == token { flights[key] = nil }
        if error == .cancelled { return }
        tallies.loginFailures += 1
        if case .credentialsRejected(let errors, _) = error, policy.rejectionTTL > 0 {
            rejected[key] = (clock() + policy.rejectionTTL, errors)
        }
    }

    /// Takes `record` out of the hand-out slot; logs it out now if nobody holds it.
    private func retire(_ record: Record, in l: inout Ledger) {
        if l.current[record.key] === record { l.current[record.key] = nil }
        record.isCurrent = false
        if record.holders == 0 { discard(record, in: &l) }
    }

    /// Forgets `record` at once and logs it out in the background.
    private func discard(_ record: Record, in l: inout Ledger) {
        l.records[record.id] = nil
        if l.current[record.key] === record { l.current[record.key] = nil }
        record.isCurrent = false
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

    @discardableResult
    private func performLogout(_ id: Secret, key: Key) async -> Bool {
        do {
            try await backend.logout(key, sessionId: id)
            tallies.logouts += 1
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
                if l.current[record.key] === record { l.current[record.key] = nil }
                record.isCurrent = false
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
    /// key changed or vanished from the credentials file).
    /// - Returns: how many sessions were dropped.
    @discardableResult
    public func evict(_ credentials: Set<Credential>) -> Int {
        let dropped = ledger.withLock { l in
            let doomed = l.records.values.filter { credentials.contains($0.key.credential) }
            for record in doomed { discard(record, in: &l) }
            return doomed.count
        }
        for key in flights.keys where credentials.contains(key.credential) { flights[key]?.task.cancel() }
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
            l.shuttingDown = true
            return l.everLoggedIn
        }
    }

    /// Stops handing out sessions and logs out every session the pool knows, in parallel.
    /// - Parameter deadline: seconds allowed for all logouts together.
    /// - Returns: how many were logged out and how many were abandoned (failed or unfinished).
    public func shutdown(deadline: Double) async -> (loggedOut: Int, abandoned: Int) {
        let all = ledger.withLock { l in
            l.shuttingDown = true
            defer {
                l.records = [:]
                l.current = [:]
            }
            return Array(l.records.values)
        }
        sweeper?.cancel()
        for flight in flights.values { flight.task.cancel() }
        let pending = Array(backgroundLogouts.values)
        if all.isEmpty && pending.isEmpty { return (0, 0) }
        let backend = self.backend
        enum Outcome: Sendable { case loggedOut(Bool), pendingDone, deadline }
        var loggedOut = 0, finished = 0
        await withTaskGroup(of: Outcome.self) { group in
            for record in all {
                let id = record.id, key = record.key
                group.addTask {
                    do throws(NeonError) {
                        try await backend.logout(key, sessionId: id)
                        return .loggedOut(true)
                    } catch {
                        return .loggedOut(false)
                    }
                }
            }
            for task in pending { group.addTask { await task.value; return .pendingDone } }
            group.addTask {
                try? await Task.sleep(nanoseconds: UInt64(deadline * 1e9))
                return .deadline
            }
            let expected = all.count + pending.count
            collect: for await outcome in group {
                switch outcome {
                case .deadline:
                    break collect
                case .pendingDone:
                    finished += 1
                case .loggedOut(let ok):
                    finished += 1
                    if ok { loggedOut += 1 }
                }
                if finished == expected { break collect }
            }
            group.cancelAll()
        }
        tallies.logouts += loggedOut
        tallies.logoutFailures += all.count - loggedOut
        return (loggedOut, all.count - loggedOut)
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
        case .credentialsRejected, .unexpectedResponse, .cancelled, .httpPluginUnavailable: return false
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
