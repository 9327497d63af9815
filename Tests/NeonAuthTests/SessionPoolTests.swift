#if canImport(Glibc)
import Glibc
#endif
import JSONRPC
import Testing
@testable import NeonAuth

@Suite("Session pool")
struct SessionPoolTests {
    let backend = FakeBackend()
    let clock = ManualClock()
    let acme = SessionPool.Key(v1BaseURL: "https://v1", credential: Credential(orgId: "acme", apiKey: Secret("key-1")))

    func makePool(idle: Double = 1800, margin: Double = 60, refreshAhead: Double = 0, rejectionTTL: Double = 0) -> SessionPool {
        var policy = SessionPool.Policy()
        policy.idleTimeout = idle
        policy.idleMargin = margin
        policy.refreshAhead = refreshAhead
        policy.rejectionTTL = rejectionTTL
        policy.baseBackoff = 0.001
        policy.maxBackoff = 0.005
        return SessionPool(backend: backend, policy: policy, clock: clock.function)
    }

    /// Waits (bounded) for background logouts to reach `count`.
    func waitForLogouts(_ count: Int) async {
        for _ in 0..<2000 {
            if !(backend.loggedOut.count < count) { break }
            try? await Task.sleep(nanoseconds: 1_000_000)
        }
    }

    @Test("a fresh pooled session is handed out again with no login")
    func reuse() async throws {
        let pool = makePool()
        let first = try await pool.open(acme)
        let second = try await pool.open(acme)
        #expect(first.reused == false)
        #expect(second.reused == true)
        #expect(second.userSessionId == first.userSessionId)
        #expect(backend.logins == 1)
    }

    @Test("two API keys of one org are two users and never share a session")
    func keysDoNotShare() async throws {
        let pool = makePool()
        let other = SessionPool.Key(v1BaseURL: "https://v1", credential: Credential(orgId: "acme", apiKey: Secret("key-2")))
        let a = try await pool.open(acme)
        let b = try await pool.open(other)
        #expect(a.userSessionId != b.userSessionId)
        #expect(b.reused == false)
        #expect(backend.logins == 2)
    }

    @Test("keys that differ only in Unicode normalization are two users (byte equality, not String ==)")
    func normalization() async throws {
        let pool = makePool()
        let composed = SessionPool.Key(v1BaseURL: "https://v1", credential: Credential(orgId: "acme", apiKey: Secret("caf\u{E9}")))
        let decomposed = SessionPool.Key(v1BaseURL: "https://v1", credential: Credential(orgId: "acme", apiKey: Secret("cafe\u{301}")))
        #expect("caf\u{E9}" == "cafe\u{301}", "Swift's String == would merge them")
        #expect(composed != decomposed)
        let first = try await pool.open(composed)
        let second = try await pool.open(decomposed)
        #expect(first.userSessionId != second.userSessionId)
        #expect(second.reused == false)
        #expect(backend.logins == 2)
    }

    @Test("50 concurrent opens for one key make exactly 1 login")
    func singleFlight() async throws {
        let pool = makePool()
        let acme = self.acme
        let results = try await backend.whileLoginHeld(50) { try await pool.open(acme) }
        #expect(results.count == 50)
        #expect(Set(results.map(\.userSessionId)).count == 1)
        #expect(backend.logins == 1)
        #expect(await pool.sessions().first?.holders == 50)
    }

    @Test("a session unused for the idle window less the margin is replaced and logged out")
    func idleReplacement() async throws {
        let pool = makePool(idle: 1800, margin: 60)
        let first = try await pool.open(acme)
        _ = try await pool.close(first.userSessionId, logout: false)
        clock.advance(1739)
        let stillFresh = try await pool.open(acme)
        #expect(stillFresh.reused && stillFresh.userSessionId == first.userSessionId)
        _ = try await pool.close(stillFresh.userSessionId, logout: false)
        clock.advance(1740)
        let renewed = try await pool.open(acme)
        #expect(renewed.reused == false)
        #expect(renewed.userSessionId != first.userSessionId)
        #expect(backend.logins == 2)
        await waitForLogouts(1)
        #expect(backend.loggedOut == [first.userSessionId.exposedValue])
    }

    @Test("a suspend longer than the idle window (the boot-time clock jumps): neither path hands out the dropped session")
    func suspendPastTheWindow() async throws {
        var policy = SessionPool.Policy()
        policy.refreshAhead = 120
        policy.rejectionTTL = 10
        let pool = SessionPool(backend: backend, policy: policy, clock: clock.function)
        let first = try await pool.open(acme)
        #expect(pool.releasePooled(first.userSessionId))
        #expect(pool.openPooled(acme) == first.userSessionId)
        #expect(pool.releasePooled(first.userSessionId))
        clock.advance(45 * 60)  // the laptop slept for 45 minutes
        #expect(pool.openPooled(acme) == nil, "the fast path must not hand out a session NeonCRM dropped")
        let after = try await pool.open(acme)
        #expect(after.reused == false && after.userSessionId != first.userSessionId)
        #expect(backend.logins == 2)
        await waitForLogouts(1)
        #expect(backend.loggedOut == [first.userSessionId.exposedValue])
    }

    @Test("a lasting open in the refresh-ahead window waits for the refresh and gets the new session")
    func lastingOpenWaitsForRefresh() async throws {
        let pool = makePool(idle: 100, margin: 10, refreshAhead: 30)
        let first = try await pool.open(acme)
        _ = try await pool.close(first.userSessionId, logout: false)
        clock.advance(70)  // within 30 s of going stale (at 90)
        let lasting = try await pool.open(acme, lasting: true)
        #expect(lasting.userSessionId != first.userSessionId && lasting.reused == false)
        #expect(backend.logins == 2)
        await waitForLogouts(1)
        #expect(backend.loggedOut == [first.userSessionId.exposedValue], "the old one, held by nobody, is logged out")
    }

    @Test("the pool's default clock counts suspend: bootTimeSeconds reads CLOCK_BOOTTIME")
    func bootTimeClock() {
        var boot = timespec(), mono = timespec()
        clock_gettime(CLOCK_MONOTONIC, &mono)
        let ours = bootTimeSeconds()
        clock_gettime(CLOCK_BOOTTIME, &boot)
        let direct = Double(boot.tv_sec) + Double(boot.tv_nsec) / 1e9
        #expect(ours <= direct && direct - ours < 0.5)
        #expect(ours >= Double(mono.tv_sec) + Double(mono.tv_nsec) / 1e9 - 0.001, "boot time never runs behind monotonic time")
    }

    @Test("a stale session that is still held is logged out when its last holder releases it")
    func staleButHeld() async throws {
        let pool = makePool(idle: 100, margin: 10)
        let held = try await pool.open(acme)
        clock.advance(95)
        let fresh = try await pool.open(acme)
        #expect(fresh.userSessionId != held.userSessionId)
        #expect(backend.loggedOut.isEmpty)
        let loggedOut = try await pool.close(held.userSessionId, logout: false)
        #expect(loggedOut == true)
        #expect(backend.loggedOut == [held.userSessionId.exposedValue])
    }

    @Test("replace drops the named session only if it is still current; concurrent replacers share one login")
    func replace() async throws {
        let pool = makePool()
        let original = try await pool.open(acme)
        let acme = self.acme
        let results = try await backend.whileLoginHeld(20) { try await pool.open(acme, replace: original.userSessionId) }
        #expect(backend.logins == 2)
        #expect(Set(results.map(\.userSessionId)).count == 1)
        #expect(results[0].userSessionId != original.userSessionId)
        // A late replace of the old id just gets the current session.
        let late = try await pool.open(acme, replace: original.userSessionId)
        #expect(late.reused && late.userSessionId == results[0].userSessionId)
        #expect(backend.logins == 2)
        await waitForLogouts(1)
        #expect(backend.loggedOut == [original.userSessionId.exposedValue])
        #expect(await pool.counters.replaces == 1)
    }

    @Test("close releases a holder; with logout it logs out at once; unknown ids and unheld sessions are refused")
    func closeAndLogout() async throws {
        let pool = makePool()
        let s = try await pool.open(acme)
        #expect(try await pool.close(s.userSessionId, logout: false) == false)
        await #expect(throws: SessionPoolError.notHeld) { try await pool.close(s.userSessionId, logout: false) }
        await #expect(throws: SessionPoolError.unknownSession) { try await pool.close(Secret("never-issued"), logout: false) }
        #expect(backend.loggedOut.isEmpty)
        #expect(try await pool.close(s.userSessionId, logout: true) == true)
        #expect(backend.loggedOut == [s.userSessionId.exposedValue])
        await #expect(throws: SessionPoolError.unknownSession) { try await pool.close(s.userSessionId, logout: true) }
        let next = try await pool.open(acme)
        #expect(next.reused == false)
        #expect(backend.logins == 2)
    }

    @Test("a failed login reaches every waiting caller and leaves the pool empty")
    func failedLogin() async throws {
        let pool = makePool()
        backend.failNextLogin(with: .credentialsRejected([NeonV1Error(code: "5", message: "no")]))
        await #expect(throws: NeonError.credentialsRejected([NeonV1Error(code: "5", message: "no")])) { try await pool.open(acme) }
        #expect(await pool.sessions().isEmpty)
        let ok = try await pool.open(acme)
        #expect(ok.reused == false)
        #expect(await pool.counters.loginFailures == 1)
    }

    @Test("the sweep logs out unheld sessions whose idle window ended, without any request")
    func sweep() async throws {
        let pool = makePool(idle: 100, margin: 10)
        let s = try await pool.open(acme)
        _ = try await pool.close(s.userSessionId, logout: false)
        clock.advance(50)
        #expect(await pool.sweep() == 0)
        clock.advance(45)
        #expect(await pool.sweep() == 1)
        await waitForLogouts(1)
        #expect(backend.loggedOut == [s.userSessionId.exposedValue])
        #expect(await pool.sessions().isEmpty)
    }

    @Test("shutdown logs out every session, held or not, and refuses new opens")
    func shutdown() async throws {
        let pool = makePool()
        let other = SessionPool.Key(v1BaseURL: "https://v1", credential: Credential(orgId: "beta", apiKey: Secret("k")))
        _ = try await pool.open(acme)
        let b = try await pool.open(other)
        _ = try await pool.close(b.userSessionId, logout: false)
        let result = await pool.shutdown(deadline: 2)
        #expect(result.loggedOut == 2 && result.abandoned.isEmpty && result.obtained == 2)
        #expect(Set(backend.loggedOut).count == 2)
        await #expect(throws: NeonError.cancelled) { try await pool.open(acme) }
    }

    @Test("beginShutdown: nothing to do for a pool that never logged in, and no login can start after it")
    func beginShutdown() async throws {
        let idle = makePool()
        #expect(idle.beginShutdown() == false)
        await #expect(throws: NeonError.cancelled) { try await idle.open(acme) }
        #expect(backend.attempts == 0)
        let used = makePool()
        _ = try await used.open(acme)
        #expect(used.beginShutdown() == true)
        #expect(used.openPooled(acme) == nil)
        await #expect(throws: NeonError.cancelled) { try await used.open(acme) }
        #expect(await used.shutdown(deadline: 2).loggedOut == 1)
    }
}
