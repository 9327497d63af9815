/// Logs in and out of NeonCRM API v1 for the session pool. The seam that tests replace.
public protocol SessionBackend: Sendable {
    /// Logs `key`'s credential in at `key.v1BaseURL` and returns the new user session ID.
    func login(_ key: SessionPool.Key) async throws(NeonError) -> Secret
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
/// - A stale or replaced session leaves the pool's hand-out slot at once; it is logged out as soon
///   as nobody holds it (at once if nobody does).
/// - `replace` drops the named session only if it is still the current one (compare-and-swap) and
///   releases the caller's hold on it; all concurrent replacers share the one new login.
/// - `close` releases a hold; with `logout` it logs the session out at once, whoever holds it.
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

    /// The result of ``open(_:replace:)``.
    public struct Opened: Sendable, Equatable {
        public var userSessionId: Secret
        /// `true` when the pooled session was handed out with no login.
        public var reused: Bool
    }

    /// Counters since start-up.
    public struct Counters: Sendable, Equatable {
        public var logins = 0, loginFailures = 0, reuses = 0, replaces = 0, logouts = 0, logoutFailures = 0
    }

    private final class Record {
        let id: Secret
        let key: Key
        let createdAt: Double
        var lastUsed: Double
        var holders = 0
        var isCurrent = true
        init(id: Secret, key: Key, now: Double) {
            self.id = id
            self.key = key
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
    /// Seconds after which NeonCRM drops an unused session.
    public nonisolated let idleTimeout: Double
    /// Seconds before `idleTimeout` at which neon-auth stops handing a session out.
    public nonisolated let idleMargin: Double

    private var current: [Key: Record] = [:]
    private var records: [Secret: Record] = [:]
    private var flights: [Key: Flight] = [:]
    private var nextToken = 0
    private var shuttingDown = false
    private var sweeper: Task<Void, Never>?
    private var backgroundLogouts: [Int: Task<Void, Never>] = [:]
    /// Counters since start-up.
    public private(set) var counters = Counters()

    /// - Parameters:
    ///   - backend: performs logins and logouts.
    ///   - idleTimeout: NeonCRM's idle window in seconds (1800 in production).
    ///   - idleMargin: safety margin in seconds, `0 <= idleMargin < idleTimeout`.
    ///   - clock: monotonic seconds; injected by tests.
    public init(backend: any SessionBackend, idleTimeout: Double, idleMargin: Double,
                clock: @escaping @Sendable () -> Double = monotonicSeconds) {
        self.backend = backend
        self.idleTimeout = idleTimeout
        self.idleMargin = idleMargin
        self.clock = clock
    }

    private func isFresh(_ record: Record, now: Double) -> Bool {
        now - record.lastUsed < idleTimeout - idleMargin
    }

    /// Hands out a session for `key`, adding a holder.
    /// - Parameters:
    ///   - key: the user and host.
    ///   - replace: a session the caller found invalid (NeonCRM error 4); dropped if still current.
    /// - Throws: `NeonError` when a needed login fails.
    public func open(_ key: Key, replace: Secret? = nil) async throws(NeonError) -> Opened {
        if let replace, let old = records[replace], old.key == key {
            if old.holders > 0 { old.holders -= 1 }
            if old.isCurrent {
                counters.replaces += 1
                retire(old)
            } else if old.holders == 0 {
                discard(old)
            }
        }
        for _ in 0..<3 {
            if shuttingDown { throw .cancelled }
            let now = clock()
            if let record = current[key] {
                if isFresh(record, now: now) {
                    record.holders += 1
                    record.lastUsed = now
                    counters.reuses += 1
                    return Opened(userSessionId: record.id, reused: true)
                }
                retire(record)
            }
            let flight = flights[key] ?? startFlight(for: key)
            let id: Secret
            do {
                id = try await flight.task.value
            } catch {
                throw (error as? NeonError) ?? .cancelled
            }
            if let record = current[key], record.id == id {
                record.holders += 1
                record.lastUsed = clock()
                return Opened(userSessionId: id, reused: false)
            }
            // Retired between the login and this caller's turn: go round again.
        }
        throw .unexpectedResponse(reason: "sessions were invalidated faster than they could be handed out", httpStatus: 200)
    }

    private func startFlight(for key: Key) -> Flight {
        nextToken += 1
        let token = nextToken
        let backend = self.backend
        let task = Task<Secret, any Error> {
            do throws(NeonError) {
                let id = try await backend.login(key)
                try self.install(id, for: key, token: token)
                return id
            } catch {
                self.flightEnded(for: key, token: token, failed: error != .cancelled || !self.shuttingDown)
                throw error
            }
        }
        let flight = Flight(token: token, task: task)
        flights[key] = flight
        return flight
    }

    private func install(_ id: Secret, for key: Key, token: Int) throws(NeonError) {
        counters.logins += 1
        flightEnded(for: key, token: token, failed: false)
        if shuttingDown {
            // Nobody can reach it any more: do not leave it logged in.
            logOutInBackground(id, key: key)
            throw .cancelled
        }
        if let previous = current[key] { retire(previous) }
        let record = Record(id: id, key: key, now: clock())
        current[key] = record
        records[id] = record
    }

    private func flightEnded(for key: Key, token: Int, failed: Bool) {
        if flights[key]?.token == token { flights[key] = nil }
        if failed { counters.loginFailures += 1 }
    }

    /// Takes `record` out of the hand-out slot; logs it out now if nobody holds it.
    private func retire(_ record: Record) {
        if current[record.key] === record { current[record.key] = nil }
        record.isCurrent = false
        if record.holders == 0 { discard(record) }
    }

    private func discard(_ record: Record) {
        records[record.id] = nil
        if current[record.key] === record { current[record.key] = nil }
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
            counters.logouts += 1
            return true
        } catch {
            counters.logoutFailures += 1
            return false
        }
    }

    /// Releases one hold on a session, or with `logout` logs it out at once.
    /// - Returns: whether the session was logged out at NeonCRM by this call.
    /// - Throws: `SessionPoolError`.
    public func close(_ id: Secret, logout: Bool) async throws(SessionPoolError) -> Bool {
        guard let record = records[id] else { throw .unknownSession }
        if logout {
            records[id] = nil
            if current[record.key] === record { current[record.key] = nil }
            record.isCurrent = false
            return await performLogout(id, key: record.key)
        }
        guard record.holders > 0 else { throw .notHeld }
        record.holders -= 1
        record.lastUsed = clock()
        if !record.isCurrent && record.holders == 0 {
            records[id] = nil
            return await performLogout(id, key: record.key)
        }
        return false
    }

    /// Logs out every pooled session nobody holds whose idle window has ended.
    /// - Returns: how many were retired.
    @discardableResult
    public func sweep() -> Int {
        let now = clock()
        let stale = current.values.filter { !isFresh($0, now: now) }
        for record in stale { retire(record) }
        return stale.count
    }

    /// Starts a timer that calls ``sweep()`` every `interval` seconds until shutdown.
    public func startSweeping(every interval: Double) {
        sweeper?.cancel()
        sweeper = Task {
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
                if Task.isCancelled { return }
                self.sweep()
            }
        }
    }

    /// Stops handing out sessions and logs out every session the pool knows, in parallel.
    /// - Parameter deadline: seconds allowed for all logouts together.
    /// - Returns: how many were logged out and how many were abandoned (failed or unfinished).
    public func shutdown(deadline: Double) async -> (loggedOut: Int, abandoned: Int) {
        shuttingDown = true
        sweeper?.cancel()
        for flight in flights.values { flight.task.cancel() }
        let all = Array(records.values)
        records = [:]
        current = [:]
        let pending = Array(backgroundLogouts.values)
        if all.isEmpty && pending.isEmpty { return (0, 0) }
        let backend = self.backend
        enum Outcome: Sendable { case loggedOut(Bool), deadline }
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
            for task in pending { group.addTask { await task.value; return .loggedOut(false) } }
            group.addTask {
                try? await Task.sleep(nanoseconds: UInt64(deadline * 1e9))
                return .deadline
            }
            for await outcome in group {
                guard case .loggedOut(let ok) = outcome else { break }
                finished += 1
                if ok { loggedOut += 1 }
                if finished == all.count + pending.count { break }
            }
            group.cancelAll()
        }
        counters.logouts += loggedOut
        return (loggedOut, all.count - loggedOut)
    }

    /// A view of the pool without secrets, for status and tests.
    public struct SessionInfo: Sendable, Equatable {
        public var orgId: String
        public var v1BaseURL: String
        public var holders: Int
        public var ageSeconds: Double
        public var idleSeconds: Double
        public var current: Bool
    }

    /// Every session the pool knows, without secrets.
    public func sessions() -> [SessionInfo] {
        let now = clock()
        return records.values.map {
            SessionInfo(orgId: $0.key.credential.orgId, v1BaseURL: $0.key.v1BaseURL, holders: $0.holders,
                        ageSeconds: now - $0.createdAt, idleSeconds: now - $0.lastUsed, current: $0.isCurrent)
        }.sorted { ($0.orgId, $0.ageSeconds) < ($1.orgId, $1.ageSeconds) }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Seconds on the monotonic clock (not affected by wall-clock changes).
@Sendable public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// The production backend: API v1 over HTTP.
public struct HTTPSessionBackend: SessionBackend {
    public var http: any HTTPClient
    public var timeout: Double

    public init(http: any HTTPClient, timeout: Double) {
        self.http = http
        self.timeout = timeout
    }

    public func login(_ key: SessionPool.Key) async throws(NeonError) -> Secret {
        try await NeonV1API(baseURL: key.v1BaseURL, http: http, timeout: timeout).login(key.credential)
    }

    public func logout(_ key: SessionPool.Key, sessionId: Secret) async throws(NeonError) {
        try await NeonV1API(baseURL: key.v1BaseURL, http: http, timeout: timeout).logout(sessionId)
    }
}
