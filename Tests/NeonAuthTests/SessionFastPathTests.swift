import Testing
import JSONRPC
@testable import NeonAuth

/// The session fast paths (`SessionPool.openPooled`/`releasePooled` and the `openSession`/
/// `closeSession` byte paths) must do exactly what the general path does, or decline.
@Suite("Session fast paths agree with the general path")
struct SessionFastPathTests {
    static func policy() -> SessionPool.Policy {
        var policy = SessionPool.Policy()
        policy.idleTimeout = 1800
        policy.idleMargin = 60
        policy.refreshAhead = 120
        policy.rejectionTTL = 0
        return policy
    }

    /// A pool with its backend and clock.
    struct Rig {
        let backend = FakeBackend()
        let clock = ManualClock()
        let pool: SessionPool
        init() { pool = SessionPool(backend: backend, policy: SessionFastPathTests.policy(), clock: clock.function) }

        /// Waits (bounded) until no refresh-ahead login is running.
        func settle() async {
            for _ in 0..<2000 {
                if !(await pool.sessions().contains { $0.refreshing }) { break }
                try? await Task.sleep(nanoseconds: 500_000)
            }
        }
    }

    /// A small deterministic generator (the sequence is reproducible from the seed in a failure).
    struct LCG {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
    }

    @Test("random sequences: a pool served fast path first ends in the same state as one served by the actor alone",
          arguments: 0..<12)
    func differential(seed: Int) async throws {
        let keys = [("acme", "key-1"), ("acme", "key-2"), ("beta", "key-3")].map {
            SessionPool.Key(v1BaseURL: "https://v1", credential: Credential(orgId: $0.0, apiKey: Secret($0.1)))
        }
        let fast = Rig(), reference = Rig()
        var rng = LCG(state: UInt64(seed) &* 7919 &+ 1)
        var handedOut: [Secret] = [Secret("never-issued")]
        var fastOpens = 0, fastReleases = 0, declinedOpens = 0, declinedReleases = 0
        for step in 0..<300 {
            // Every random draw is made once per step, so both rigs get the same operation.
            let choice = rng.next(100)
            let key = keys[rng.next(keys.count)]
            let id = handedOut[rng.next(handedOut.count)]
            let advance = [1.0, 30, 700, 1630, 1700, 1800][rng.next(6)]
            var outcomes: [String] = []
            for (rig, useFast) in [(fast, true), (reference, false)] {
                var outcome: String
                switch choice {
                case 0..<45:
                    if useFast, let pooled = rig.pool.openPooled(key) {
                        fastOpens += 1
                        outcome = "open \(pooled.exposedValue) reused"
                    } else {
                        if useFast { declinedOpens += 1 }
                        do {
                            let opened = try await rig.pool.open(key)
                            outcome = "open \(opened.userSessionId.exposedValue) \(opened.reused ? "reused" : "login")"
                        } catch { outcome = "open error \(error)" }
                    }
                case 45..<85:
                    if useFast, rig.pool.releasePooled(id) {
                        fastReleases += 1
                        outcome = "close false"
                    } else {
                        if useFast { declinedReleases += 1 }
                        do { outcome = "close \(try await rig.pool.close(id, logout: false))" } catch { outcome = "close error \(error)" }
                    }
                case 85..<88:
                    do { outcome = "logout \(try await rig.pool.close(id, logout: true))" } catch { outcome = "logout error \(error)" }
                case 88..<91:
                    do {
                        let opened = try await rig.pool.open(key, replace: id)
                        outcome = "replace \(opened.userSessionId.exposedValue) \(opened.reused)"
                    } catch { outcome = "replace error \(error)" }
                case 91..<94:
                    outcome = "sweep \(await rig.pool.sweep())"
                default:
                    rig.clock.advance(advance)
                    outcome = "advanced"
                }
                outcomes.append(outcome)
                await rig.settle()
            }
            #expect(outcomes[0] == outcomes[1], "seed \(seed) step \(step)")
            if outcomes[0] != outcomes[1] { return }
            let words = outcomes[0].split(separator: " ")
            if words[0] == "open" || words[0] == "replace", words[1] != "error" { handedOut.append(Secret(String(words[1]))) }
        }
        await fast.settle()
        await reference.settle()
        try await Task.sleep(nanoseconds: 50_000_000)  // background logouts
        // Order among sessions of one org with equal ages is not defined: compare as sets.
        func described(_ sessions: [SessionPool.SessionInfo]) -> [String] { sessions.map { "\($0)" }.sorted() }
        #expect(described(await fast.pool.sessions()) == described(await reference.pool.sessions()))
        #expect(await fast.pool.counters == reference.pool.counters)
        #expect(fast.backend.logins == reference.backend.logins)
        #expect(fast.backend.loggedOut.sorted() == reference.backend.loggedOut.sorted())
        // The test means something only if both branches ran.
        #expect(fastOpens > 0 && fastReleases > 0 && declinedOpens > 0 && declinedReleases > 0,
                "fast \(fastOpens)/\(fastReleases), declined \(declinedOpens)/\(declinedReleases)")
    }

    @Test("fast hand-outs and releases from many threads while the actor opens and closes: no hold lost or doubled")
    func concurrent() async throws {
        let rig = Rig()
        let key = SessionPool.Key(v1BaseURL: "https://v1", credential: Credential(orgId: "acme", apiKey: Secret("key-1")))
        _ = try await rig.pool.open(key)
        let pool = rig.pool
        let fastOpens = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    var opened = 0
                    for _ in 0..<5000 {
                        guard let id = pool.openPooled(key) else { continue }
                        opened += 1
                        #expect(pool.releasePooled(id))
                    }
                    return opened
                }
            }
            group.addTask {
                for _ in 0..<300 {
                    let id = try await pool.open(key).userSessionId
                    _ = try await pool.close(id, logout: false)
                }
                return 0
            }
            return try await group.reduce(0, +)
        }
        let sessions = await pool.sessions()
        #expect(fastOpens == 20000)
        #expect(sessions.count == 1 && sessions[0].holders == 1)
        #expect(await pool.counters.reuses == 20000 + 300)
        #expect(rig.backend.logins == 1)
    }

    // MARK: the openSession/closeSession byte paths

    static let org = "acme-org", key = "0123456789abcdef0123456789abcdef"
    static let open = #"{"jsonrpc":"2.0","id":7,"method":"openSession","params":{"orgId":"acme-org","apiKey":"0123456789abcdef0123456789abcdef"}}"#

    static func close(_ id: String, requestId: String = "\"c\"") -> String {
        #"{"jsonrpc":"2.0","id":\#(requestId),"method":"closeSession","params":{"userSessionId":\#(JSONWriter.string(.string(id)))}}"#
    }

    /// A service over a fake backend (session IDs `S<n>-<orgId>`), and its dispatcher.
}
