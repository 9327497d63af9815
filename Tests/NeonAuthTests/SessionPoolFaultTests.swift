import Testing
import JSONRPC
@testable import NeonAuth

@Suite("Session pool under faults")
struct SessionPoolFaultTests {
    let backend = FakeBackend()
    let clock = ManualClock()
    let acme = SessionPool.Key(v1BaseURL: "https://v1", credential: Credential(orgId: "acme", apiKey: Secret("key-1")))

    func makePool(idle: Double = 1800, margin: Double = 60, refreshAhead: Double = 0, rejectionTTL: Double = 0,
                  loginDeadline: Double = 5) -> SessionPool {
        var policy = SessionPool.Policy()
        policy.idleTimeout = idle
        policy.idleMargin = margin
        policy.refreshAhead = refreshAhead
        policy.rejectionTTL = rejectionTTL
        policy.loginDeadline = loginDeadline
        policy.baseBackoff = 0.001
        policy.maxBackoff = 0.005
        // Backoff sleeps are real (milliseconds); the deadline uses the real clock too.
        return SessionPool(backend: backend, policy: policy)
    }

    /// A pool on the manual clock whose sessions enter the refresh window after 70 s idle
    /// (idle window 100 s, margin 10 s, refresh ahead 20 s).
    func makeRefreshingPool() -> SessionPool {
        var policy = SessionPool.Policy()
        policy.idleTimeout = 100
        policy.idleMargin = 10
        policy.refreshAhead = 20
        return SessionPool(backend: backend, policy: policy, clock: clock.function)
    }

    @Test("transient login failures are retried within the deadline", arguments: [
        NeonError.unavailable(httpStatus: 503, errors: []), .unavailable(httpStatus: nil, errors: []),
        .unavailable(httpStatus: nil, errors: [NeonV1Error(code: "2", message: "down")]), .timedOut,
    ])
    func retried(failure: NeonError) async throws {
        let pool = makePool()
        backend.failNextLogin(with: failure)
        backend.failNextLogin(with: failure)
        let opened = try await pool.open(acme)
        #expect(opened.reused == false)
        #expect(backend.attempts == 3)
        #expect(await pool.counters.loginRetries == 2)
    }

    @Test("credential rejections, unexpected responses and TLS failures are not retried, and leave the pool unchanged", arguments: [
        NeonError.credentialsRejected([NeonV1Error(code: "5", message: "no")]),
        .unexpectedResponse(reason: "body is not JSON", httpStatus: 200),
        .tlsFailure(TLSFailure(reason: .expired, host: "api.neoncrm.com")),
        .tlsFailure(TLSFailure(reason: .handshakeFailed, host: "api.neoncrm.com")),
    ])
    func notRetried(failure: NeonError) async throws {
        let pool = makePool()
        backend.failNextLogin(with: failure)
        await #expect(throws: failure) { try await pool.open(acme) }
        #expect(backend.attempts == 1)
        #expect(await pool.sessions().isEmpty)
    }

    @Test("a rejected credential fails fast from the cache, and says so")
    func rejectionCache() async throws {
        let pool = makePool(rejectionTTL: 30)
        let rejection = [NeonV1Error(code: "5", message: "Invalid login.")]
        backend.failNextLogin(with: .credentialsRejected(rejection))
        await #expect(throws: NeonError.credentialsRejected(rejection)) { try await pool.open(acme) }
        for _ in 0..<5 {
            do {
                _ = try await pool.open(acme)
                Issue.record("expected a cached rejection")
            } catch {
                guard case .credentialsRejected(let errors, let cached?) = error else {
                    Issue.record("expected a cached rejection, got \(error)")
                    continue
                }
                #expect(errors == rejection)
                #expect(cached > 0 && cached <= 30)
                let rpc = error.rpcError(timeout: 10)
                #expect(rpc.message.contains("cached"))
                #expect(rpc.data?["cached"] == true)
            }
        }
        #expect(backend.attempts == 1)
        #expect(await pool.counters.rejectionsServedFromCache == 5)
    }

    @Test("the rejection cache expires")
    func rejectionCacheExpires() async throws {
        var policy = SessionPool.Policy()
        policy.rejectionTTL = 10
        let pool = SessionPool(backend: backend, policy: policy, clock: clock.function)
        backend.failNextLogin(with: .credentialsRejected([NeonV1Error(code: "5", message: "no")]))
        await #expect(throws: NeonError.self) { try await pool.open(acme) }
        clock.advance(10.5)
        let opened = try await pool.open(acme)
        #expect(opened.reused == false)
        #expect(backend.attempts == 2)
    }

    @Test("a login failing for longer than the deadline ends with the last error, near the deadline")
    func deadline() async throws {
        let pool = makePool(loginDeadline: 0.3)
        for _ in 0..<10_000 { backend.failNextLogin(with: .unavailable(httpStatus: 503, errors: [])) }
        let start = monotonicSeconds()
        await #expect(throws: NeonError.unavailable(httpStatus: 503, errors: [])) { try await pool.open(acme) }
        #expect(monotonicSeconds() - start < 2.0)
        #expect(backend.attempts > 2)
    }

    @Test("refresh ahead: inside the advisory window one background login starts; callers keep the current session until it is ready")
    func refreshAhead() async throws {
        let pool = makeRefreshingPool()
        let first = try await pool.open(acme)
        _ = try await pool.close(first.userSessionId, logout: false)
        clock.advance(75)  // idle 75 >= 100 - 10 - 20: inside the advisory window, still fresh
        backend.hold()
        let during = try await pool.open(acme)
        #expect(during.reused && during.userSessionId == first.userSessionId)
        await backend.waitForWaitingLogins(1)
        #expect(await pool.sessions().first?.refreshing == true)
        let again = try await pool.open(acme)
        #expect(again.userSessionId == first.userSessionId, "no caller waits for the refresh")
        backend.release()
        await backend.waitForLogins(2)
        let after = try await pool.open(acme)
        #expect(after.userSessionId != first.userSessionId)
        #expect(backend.logins == 2)
        // The old session is still held twice; it is logged out when the last holder releases it.
        #expect(backend.loggedOut.isEmpty)
        _ = try await pool.close(first.userSessionId, logout: false)
        #expect(try await pool.close(first.userSessionId, logout: false) == true)
        #expect(backend.loggedOut == [first.userSessionId.exposedValue])
    }

    @Test("a hundred concurrent replaces of the same stale session cause one login")
    func hundredReplaces() async throws {
        let pool = makePool()
        let original = try await pool.open(acme)
        let acme = self.acme
        let ids = Set(try await backend.whileLoginHeld(100) { try await pool.open(acme, replace: original.userSessionId).userSessionId })
        #expect(ids.count == 1 && !ids.contains(original.userSessionId))
        #expect(backend.logins == 2)
    }

    @Test("evicting a credential logs out its sessions at once, held or not, and leaves others alone")
    func evict() async throws {
        let pool = makePool()
        let other = SessionPool.Key(v1BaseURL: "https://v1", credential: Credential(orgId: "beta", apiKey: Secret("k")))
        let a = try await pool.open(acme)
        _ = try await pool.open(other)
        #expect(await pool.evict([acme.credential]) == 1)
        for _ in 0..<1000 {
            if !(backend.loggedOut.isEmpty) { break }
            try await Task.sleep(nanoseconds: 1_000_000)
        }
        #expect(backend.loggedOut == [a.userSessionId.exposedValue])
        #expect(await pool.sessions().map(\.orgId) == ["beta"])
    }

    @Test("close racing a refresh: closing with logout the current session while a refresh runs leaves only the new session")
    func closeDuringRefresh() async throws {
        let pool = makeRefreshingPool()
        let first = try await pool.open(acme)
        clock.advance(75)
        backend.hold()
        _ = try await pool.open(acme)  // starts the refresh
        await backend.waitForWaitingLogins(1)
        #expect(try await pool.close(first.userSessionId, logout: true) == true)
        backend.release()
        await backend.waitForLogins(2)
        let sessions = await pool.sessions()
        #expect(sessions.count == 1 && sessions.first?.current == true)
        #expect(backend.loggedOut == [first.userSessionId.exposedValue])
    }
}
