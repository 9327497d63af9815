import Testing
import Synchronization
import JSONRPC
@testable import NeonAuth

/// The pool's side of a front-end's lease: the lease it grants with each hand-out, the holds
/// `holdPooled` adds, and the retire notice that ends a lease early.
@Suite("Session pool: leases and retire notices")
struct SessionLeaseTests {
    let backend = FakeBackend()
    let clock = ManualClock()
    let pool: SessionPool
    let key = SessionPool.Key(v1BaseURL: "https://v1", credential: Credential(orgId: "acme", apiKey: Secret("key-1")))

    init() {
        pool = SessionPool(backend: backend, policy: SessionFastPathTests.policy(), clock: clock.function)
    }

    /// The retire notices, in order.
    final class Notices: Sendable {
        let ids = Mutex<[String]>([])
    }

    /// Records every retire notice; returns what was recorded so far.
    func listen() -> @Sendable () -> [String] {
        let notices = Notices()
        pool.onRetire { id in notices.ids.withLock { $0.append(id.exposedValue) } }
        return { notices.ids.withLock { $0 } }
    }

    @Test("the lease is the window before a refresh is due (1800 - 60 - 120 s), from the last use; 0 while a refresh is under way")
    func leaseSeconds() async throws {
        #expect(pool.leaseWindow == 1620)
        let first = try await pool.open(key)
        #expect(first.reused == false && first.leaseSeconds == 1620)
        clock.advance(100)
        let again = try await pool.open(key)
        #expect(again.reused && again.leaseSeconds == 1620, "counted from this use")
        clock.advance(1650)  // inside the refresh-ahead window
        backend.hold()
        let during = try await pool.open(key)
        #expect(during.userSessionId == first.userSessionId && during.leaseSeconds == 0, "a refresh started: no lease")
        backend.release()
        _ = await pool.shutdown(deadline: 5)
    }

    @Test("holdPooled adds a hold and marks the session used; declines an unknown, a stale or a shut-down pool's session")
    func holdPooled() async throws {
        let opened = try await pool.open(key)
        clock.advance(1000)
        #expect(pool.holdPooled(opened.userSessionId) == 1620)
        var info = try #require(await pool.sessions().first)
        #expect(info.holders == 2 && info.idleSeconds == 0)
        #expect(pool.holdPooled(Secret("never-issued")) == nil)
        clock.advance(1745)  // idle past 1800 - 60: stale
        #expect(pool.holdPooled(opened.userSessionId) == nil)
        info = try #require(await pool.sessions().first)
        #expect(info.holders == 2, "nothing changed")
        _ = pool.beginShutdown()
        #expect(pool.holdPooled(opened.userSessionId) == nil)
        _ = await pool.shutdown(deadline: 5)
    }

    @Test("a session retired but still held can be held once more, with no lease")
    func holdRetired() async throws {
        let opened = try await pool.open(key)
        let replaced = try await pool.open(key, replace: opened.userSessionId, releasingHold: false)
        #expect(replaced.userSessionId != opened.userSessionId)
        #expect(pool.holdPooled(opened.userSessionId) == 0)
        #expect(pool.holdPooled(replaced.userSessionId) == 1620)
        _ = await pool.shutdown(deadline: 5)
    }

    @Test("every way out of the hand-out slot tells the retire handler once; shutdown does not")
    func retireNotices() async throws {
        let seen = listen()
        let a = try await pool.open(key)
        // replace
        let b = try await pool.open(key, replace: a.userSessionId)
        #expect(seen() == [a.userSessionId.exposedValue])
        // logout
        _ = try await pool.close(b.userSessionId, logout: true)
        #expect(seen() == [a, b].map(\.userSessionId.exposedValue))
        // eviction
        let c = try await pool.open(key)
        #expect(await pool.evict([key.credential]) == 1)
        #expect(seen() == [a, b, c].map(\.userSessionId.exposedValue))
        // refresh ahead: the new session retires the old one
        let d = try await pool.open(key)
        clock.advance(1650)
        _ = try await pool.open(key)
        await backend.waitForLogins(5)
        for _ in 0..<2000 where seen().count < 4 { try await Task.sleep(nanoseconds: 500_000) }
        #expect(seen() == [a, b, c, d].map(\.userSessionId.exposedValue))
        // stale, by the sweep
        let e = try #require(await pool.sessions().first { $0.current })
        #expect(e.holders == 0)
        clock.advance(1750)
        #expect(await pool.sweep() == 1)
        #expect(seen().count == 5)
        // shutdown: no notice (every connection ends with the agent)
        _ = try await pool.open(key)
        for _ in 0..<2000 where backend.logins < 6 { try await Task.sleep(nanoseconds: 500_000) }
        _ = await pool.shutdown(deadline: 5)
        #expect(seen().count == 5)
    }
}
