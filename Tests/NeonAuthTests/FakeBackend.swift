import Synchronization
@testable import NeonAuth

/// A scripted API v1 backend: counts logins and logouts, can hold logins until released,
/// and can fail the next logins.
final class FakeBackend: SessionBackend {
    struct State {
        var logins = 0
        var loggedOut: [String] = []
        var failNext: [NeonError] = []
        var gate: [CheckedContinuation<Void, Never>] = []
        var holdLogins = false
        var nextId = 0
        var attempts = 0
    }

    let state = Mutex(State())

    var logins: Int { state.withLock { $0.logins } }
    var attempts: Int { state.withLock { $0.attempts } }
    var loggedOut: [String] { state.withLock { $0.loggedOut } }
    var waitingLogins: Int { state.withLock { $0.gate.count } }

    /// Logins wait until ``release()`` while this is set.
    func hold() { state.withLock { $0.holdLogins = true } }

    /// Lets every waiting login finish and stops holding new ones.
    func release() {
        let waiting = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.holdLogins = false
            defer { s.gate = [] }
            return s.gate
        }
        for continuation in waiting { continuation.resume() }
    }

    /// Runs `count` copies of `body` at once while logins are held, so that every copy reaches
    /// the pool before the first login completes; then releases the login and collects results.
    func whileLoginHeld<T: Sendable>(_ count: Int, _ body: @escaping @Sendable () async throws -> T) async throws -> [T] {
        hold()
        return try await withThrowingTaskGroup(of: T.self) { group in
            for _ in 0..<count { group.addTask { try await body() } }
            await waitForWaitingLogins(1)
            try await Task.sleep(nanoseconds: 20_000_000)
            release()
            var all: [T] = []
            for try await result in group { all.append(result) }
            return all
        }
    }

    /// Waits (bounded) until `count` logins have completed.
    func waitForLogins(_ count: Int) async {
        for _ in 0..<1000 {
            if logins >= count { break }
            try? await Task.sleep(nanoseconds: 1_000_000)
        }
        try? await Task.sleep(nanoseconds: 5_000_000)  // let the pool install it
    }

    func failNextLogin(with error: NeonError) { state.withLock { $0.failNext.append(error) } }

    func login(_ key: SessionPool.Key, timeout: Double) async throws(NeonError) -> Secret {
        state.withLock { $0.attempts += 1 }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let hold = state.withLock { s -> Bool in
                if s.holdLogins { s.gate.append(continuation) }
                return s.holdLogins
            }
            if !hold { continuation.resume() }
        }
        let outcome = state.withLock { s -> Result<Secret, NeonError> in
            if !s.failNext.isEmpty { return .failure(s.failNext.removeFirst()) }
            s.logins += 1
            s.nextId += 1
            return .success(Secret("S\(s.nextId)-\(key.credential.orgId)"))
        }
        return try outcome.get()
    }

    /// How long each logout takes (nanoseconds; 0 by default).
    let logoutDelay = Mutex<UInt64>(0)

    func logout(_ key: SessionPool.Key, sessionId: Secret) async throws(NeonError) {
        let delay = logoutDelay.withLock { $0 }
        if delay > 0 { try? await Task.sleep(nanoseconds: delay) }
        state.withLock { $0.loggedOut.append(sessionId.exposedValue) }
    }

    /// Waits (bounded) until `count` logins are parked at the gate.
    func waitForWaitingLogins(_ count: Int) async {
        for _ in 0..<2000 {
            if !(waitingLogins < count) { break }
            try? await Task.sleep(nanoseconds: 1_000_000)
        }
    }
}

/// A clock the test moves by hand.
final class ManualClock: Sendable {
    private let seconds = Mutex(1000.0)
    var now: Double { seconds.withLock { $0 } }
    func advance(_ by: Double) { seconds.withLock { $0 += by } }
    var function: @Sendable () -> Double { { self.now } }
}

/// A service over a `FakeBackend` with custom endpoints, for tests that need no network.
func makeTestService(v1: String = "https://v1", v2: String = "https://v2", apiVersion: String = "2.11") -> NeonAuthService {
    NeonAuthService(
        settings: ServiceSettings(defaultEndpoints: Endpoints(v1BaseURL: v1, v2BaseURL: v2, environment: "custom"),
                                  apiVersion: apiVersion, httpTimeout: 5),
        agent: AgentClient(settings: AgentSettings(configuration: Configuration()), mode: .private, environment: [:],
                           executable: "/nonexistent/neon-auth-agent", log: nil))
}
