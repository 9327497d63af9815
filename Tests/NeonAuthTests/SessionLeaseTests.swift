#if canImport(Glibc)
import Glibc
#endif
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

    @Test("every way out of the hand-out slot tells the retire handler once, and shutdown tells it of every session before logging out")
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
        // shutdown: every session still pooled (the current one and `d`, retired but held),
        // the current one told now, before the logouts
        let f = try await pool.open(key)
        #expect(pool.beginShutdown())
        #expect(seen().count == 6 && seen().last == f.userSessionId.exposedValue)
        #expect(backend.loggedOut.count == 4, "nothing logged out by beginShutdown")
        _ = await pool.shutdown(deadline: 5)
        #expect(seen().count == 6, "each told once")
    }

    @Test("a front-end grants no lease for a session its agent said was retired, even when the notice overtakes the answer")
    func retiredNoticeOvertakesAnswer() throws {
        try withAgentConnection { connection, agentEnd in
            let id = Secret("T123"), now = bootTimeSeconds()
            connection.granted(key, id, seconds: 1620, askedAt: now)
            #expect(connection.takeLease(key, now: now) == id)
            let notice = #"{"jsonrpc":"2.0","method":"sessionRetired","params":{"userSessionId":"T123"}}"# + "\n"
            #expect(notice.withCString { write(agentEnd, $0, strlen($0)) } == notice.utf8.count)
            var revoked = false
            for _ in 0..<400 where !revoked {
                usleep(5_000)
                revoked = connection.takeLease(key, now: now) == nil
            }
            #expect(revoked, "the notice ended the lease")
            // The answer that handed it out arrives after the notice: no lease from it.
            connection.granted(key, id, seconds: 1620, askedAt: now)
            #expect(connection.takeLease(key, now: now) == nil)
            // Another session for the key still gets one.
            connection.granted(key, Secret("T456"), seconds: 1620, askedAt: now)
            #expect(connection.takeLease(key, now: now) == Secret("T456"))
        }
    }

    @Test("a front-end grants no lease for a session it just asked to log out or replace, even from an answer the agent gave before acting on it")
    func noLeaseAfterOwnLogout() throws {
        try withAgentConnection { connection, _ in
            let now = bootTimeSeconds()
            for (name, id) in [("logout", Secret("T1")), ("replace", Secret("T2"))] {
                connection.granted(key, id, seconds: 1620, askedAt: now)
                connection.forwardingClose(id, logout: true)  // what a logout or a replace of `id` records
                #expect(connection.takeLease(key, now: now) == nil, "\(name): the lease ended")
                connection.granted(key, id, seconds: 1620, askedAt: now)  // an answer written before the logout
                #expect(connection.takeLease(key, now: now) == nil, "\(name): no lease from the later answer")
            }
            // A plain close keeps the lease: one hold less.
            connection.granted(key, Secret("T3"), seconds: 1620, askedAt: now)
            connection.forwardingClose(Secret("T3"), logout: false)
            #expect(connection.takeLease(key, now: now) == Secret("T3"))
        }
    }

    /// Runs `body` with a front-end's agent connection over a socketpair, and the agent's end.
    func withAgentConnection(_ body: (AgentConnection, Int32) throws -> Void) throws {
        var pair: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        let connection = AgentConnection(fd: pair[0], childPid: nil)
        defer {
            connection.close()
            close(pair[1])
        }
        try body(connection, pair[1])
    }

    @Test("shutdown waits for a logout a closeSession is still awaiting: it is counted logged out, not abandoned")
    func shutdownWaitsForClosesLogout() async throws {
        let opened = try await pool.open(key)
        backend.logoutDelay.withLock { $0 = 200_000_000 }
        let closing = Task { try await pool.close(opened.userSessionId, logout: true) }
        for _ in 0..<200 where await pool.accounting.loggingOut == 0 { try await Task.sleep(nanoseconds: 1_000_000) }
        #expect(await pool.accounting.loggingOut == 1)
        let accounting = await pool.shutdown(deadline: 5)
        #expect(accounting.obtained == 1 && accounting.loggedOut == 1 && accounting.abandoned.isEmpty, "\(accounting)")
        #expect(try await closing.value == true)
    }
}

