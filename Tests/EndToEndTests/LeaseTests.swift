import Foundation
import Testing
import JSONRPC

/// A front-end hands its pooled session out again itself while the agent's lease runs (the
/// round trip of a warm `openSession` then needs no agent hop), and never once the session has
/// left the agent's hand-out slot.
@Suite("End to end: a front-end's lease on a pooled session", .serialized)
struct LeaseTests {
    let fake: FakeNeonCRM
    let runtime: RuntimeDirectory
    let environment: [String: String]

    init() throws {
        fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        runtime = try RuntimeDirectory()
        environment = ["NEON_ORG_ID": "acme", "NEON_API_KEY": acmeKey, "XDG_RUNTIME_DIR": runtime.path, "NEON_AUTH_AGENT": "shared"]
    }

    func frontEnd(_ extra: [String] = []) throws -> NeonAuthProcess {
        try NeonAuthProcess(arguments: fake.neonAuthArguments + extra, environment: environment)
    }

    func stopAgent(_ extra: [String] = []) throws {
        let (status, out, err) = try runNeonAuth(["agent", "stop"] + fake.neonAuthArguments + extra, environment: environment)
        #expect(status == 0, "\(out) \(err)")
        // `agent stop` answers once every session is logged out, before the process has exited.
        let deadline = Date().addingTimeInterval(10)
        while !runtime.agentPids().isEmpty && Date() < deadline { usleep(20_000) }
        #expect(runtime.agentPids().isEmpty)
    }

    /// Opens the default session (`reused` as expected) and returns its id.
    func open(_ neon: NeonAuthProcess, id: Int, reused: Bool? = nil, timeout: Double = 20,
              sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        neon.send(#"{"jsonrpc":"2.0","id":\#(id),"method":"openSession"}"#)
        let answer = try neon.response(timeout: timeout, sourceLocation: sourceLocation)
        if let reused { #expect(answer["result"]?["reused"] == .bool(reused), "\(answer)", sourceLocation: sourceLocation) }
        return try #require(answer["result"]?["userSessionId"]?.stringValue, "\(answer)", sourceLocation: sourceLocation)
    }

    func close(_ neon: NeonAuthProcess, id: Int, session: String, logout: Bool = false, timeout: Double = 20) throws -> JSONValue {
        neon.send(#"{"jsonrpc":"2.0","id":\#(id),"method":"closeSession","params":{"userSessionId":"\#(session)","logout":\#(logout)}}"#)
        return try neon.response(timeout: timeout)
    }

    @Test("with the agent stopped (SIGSTOP), a warm openSession and its closeSession are answered at once; the agent's holds and counters are exact once it runs again")
    func answeredWithoutTheAgent() throws {
        let neon = try frontEnd()
        let first = try open(neon, id: 1, reused: false)
        #expect(try close(neon, id: 2, session: first)["result"] == ["closed": true, "loggedOut": false])
        let pids = runtime.agentPids()
        #expect(pids.count == 1)
        for pid in pids { kill(pid, SIGSTOP) }
        var resumed = false
        defer { if !resumed { for pid in pids { kill(pid, SIGCONT) } } }
        // Generous for a loaded machine; without the lease these wait for the agent for ever.
        #expect(try open(neon, id: 3, reused: true, timeout: 5) == first)
        #expect(try close(neon, id: 4, session: first, timeout: 5)["result"] == ["closed": true, "loggedOut": false])
        #expect(try open(neon, id: 5, reused: true, timeout: 5) == first)
        for pid in pids { kill(pid, SIGCONT) }
        resumed = true
        neon.send(#"{"jsonrpc":"2.0","id":6,"method":"status"}"#)
        let status = try neon.response(timeout: 20)
        guard case .array(let sessions)? = status["result"]?["sessions"] else { throw HarnessError("no sessions in \(status)") }
        #expect(sessions.count == 1 && sessions.first?["holders"] == .number("1"), "one hold left (id 5): \(status)")
        #expect(status["result"]?["counters"]?["reuses"] == .number("2"), "\(status)")
        #expect(try close(neon, id: 7, session: first)["result"]?["closed"] == .bool(true))
        #expect(try close(neon, id: 8, session: first)["error"]?["code"] == .number("-32011"), "no hold left")
        #expect(try fake.count("logins", org: "acme") == 1)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        try stopAgent()
        #expect(try fake.count("logouts", org: "acme") == 1, "the one session was logged out at stop")
    }

    @Test("a session another front-end logs out is never handed out again from a lease")
    func loggedOutElsewhere() throws {
        let a = try frontEnd(), b = try frontEnd()
        let first = try open(a, id: 1, reused: false)
        _ = try close(a, id: 2, session: first)
        #expect(try open(b, id: 1, reused: true) == first)
        #expect(try close(b, id: 2, session: first, logout: true)["result"] == ["closed": true, "loggedOut": true])
        // The agent tells `a` before it answers `b`; `a`'s reading of it is not synchronized
        // with this test: allow for a loaded machine.
        usleep(500_000)
        let second = try open(a, id: 3, reused: false)
        #expect(second != first, "the logged-out id was handed out again")
        #expect(try fake.count("logins", org: "acme") == 2)
        for neon in [a, b] {
            neon.closeInput()
            #expect(neon.waitForExit() == 0)
        }
        try stopAgent()
        #expect(try fake.count("logouts", org: "acme") == 2)
    }

    @Test("after `neon-auth session --replace` from a shell, a front-end's next openSession gets the replacement")
    func replacedElsewhere() throws {
        let neon = try frontEnd()
        let first = try open(neon, id: 1, reused: false)
        _ = try close(neon, id: 2, session: first)
        let (status, printed, err) = try runNeonAuth(["session", "--replace", first] + fake.neonAuthArguments, environment: environment)
        #expect(status == 0, "\(err)")
        let replacement = printed.trimmingCharacters(in: .newlines)
        #expect(!replacement.isEmpty && replacement != first)
        usleep(500_000)
        #expect(try open(neon, id: 3, reused: true) == replacement)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        try stopAgent()
        #expect(try fake.count("logins", org: "acme") == 2 && fake.count("logouts", org: "acme") == 2)
    }

    @Test("a lease ends where a refresh could be due: the agent then refreshes the session, and the front-end hands out the new one")
    func leaseRunsOut() throws {
        // Stale after 11 idle seconds, refresh due from 5: the lease lasts 5 s after each use.
        let timers = ["--idle-timeout", "12", "--idle-margin", "1", "--refresh-ahead", "6"]
        let neon = try frontEnd(timers)
        let first = try open(neon, id: 1, reused: false)
        _ = try close(neon, id: 2, session: first)
        Thread.sleep(forTimeInterval: 6)
        // Past the lease: the agent answers, hands out the current session and refreshes it.
        #expect(try open(neon, id: 3, reused: true) == first)
        _ = try close(neon, id: 4, session: first)
        let deadline = Date().addingTimeInterval(20)
        while try fake.count("logins", org: "acme") < 2 && Date() < deadline { usleep(50_000) }
        #expect(try fake.count("logins", org: "acme") == 2, "the refresh ahead happened")
        usleep(500_000)
        let second = try open(neon, id: 5)
        #expect(second != first, "the refreshed session is handed out")
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        try stopAgent(timers)
        #expect(try fake.count("logouts", org: "acme") == 2)
    }

    @Test("after `neon-auth agent stop`, a front-end's next openSession never gets a session the stop logged out")
    func agentStopped() throws {
        let neon = try frontEnd()
        let first = try open(neon, id: 1, reused: false)
        _ = try close(neon, id: 2, session: first)
        // At once after the stop's answer, while the stopping agent may still hold the connection:
        // an error (the agent is going) or a new session, never the one just logged out.
        let (status, out, err) = try runNeonAuth(["agent", "stop"] + fake.neonAuthArguments, environment: environment)
        #expect(status == 0, "\(out) \(err)")
        #expect(try fake.count("logouts", org: "acme") == 1)
        neon.send(#"{"jsonrpc":"2.0","id":3,"method":"openSession"}"#)
        let right = try neon.response(timeout: 20)
        #expect(right["result"]?["userSessionId"]?.stringValue != first, "\(right)")
        try stopAgent()
        let second = try open(neon, id: 4)
        #expect(second != first)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        try stopAgent()
        let logins = try fake.count("logins", org: "acme")
        let logouts = try fake.count("logouts", org: "acme")
        #expect(logins >= 2 && logins <= 3 && logouts == logins)
    }
}
