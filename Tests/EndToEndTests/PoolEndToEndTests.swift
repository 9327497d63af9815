import Foundation
import Testing
import JSONRPC

@Suite("End to end: the pool's timers, shutdown and status", .serialized)
struct PoolEndToEndTests {
    @Test("an unheld session is logged out by the timer when its idle window ends, with no request")
    func sweepTimer() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--idle-timeout", "2", "--idle-margin", "0.5", "--refresh-ahead", "0"])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        let id = try #require(try neon.response()["result"]?["userSessionId"]?.stringValue)
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"closeSession","params":{"userSessionId":"\#(id)"}}"#)
        _ = try neon.response()
        var logouts = 0
        for _ in 0..<60 {  // up to 6 s: 1.5 s to go stale, plus the timer's 1 s period
            logouts = try fake.count("logouts", org: "acme")
            if logouts > 0 { break }
            usleep(100_000)
        }
        #expect(logouts == 1)
        neon.send(#"{"jsonrpc":"2.0","id":3,"method":"closeSession","params":{"userSessionId":"\#(id)"}}"#)
        #expect(try neon.response()["error"]?["code"] == .number("-32010"))
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        #expect(try fake.count("logouts", org: "acme") == 1)
    }

    @Test("shutdown with NeonCRM down: parallel logouts bounded by the deadline, counts in the log, exit 0")
    func shutdownWhileDown() throws {
        let fake = try FakeNeonCRM(accounts: [("a", "SENTINEL-ka"), ("b", "SENTINEL-kb"), ("c", "SENTINEL-kc")])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--shutdown-timeout", "1"])
        for (i, org) in ["a", "b", "c"].enumerated() {
            neon.send(#"{"jsonrpc":"2.0","id":\#(i),"method":"openSession","params":{"orgId":"\#(org)","apiKey":"SENTINEL-k\#(org)"}}"#)
            _ = try neon.response()
        }
        try fake.control("mode", body: #"{"logout":"hang"}"#)
        let start = Date()
        neon.closeInput()
        #expect(neon.waitForExit(timeout: 10) == 0)
        let elapsed = Date().timeIntervalSince(start)
        #expect(elapsed < 3, "three hanging logouts run in parallel within the 1 s deadline")
        #expect(neon.stderr.text.contains("exit: 3 session(s) obtained from NeonCRM, 0 logged out, 3 abandoned (orgs: a, b, c); 3 logout(s) unanswered"),
                "\(neon.stderr.text)")
        try fake.control("release", body: "{}")
    }

    @Test("status shows the pool and counters without anything that can act as the user")
    func status() throws {
        let dir = try TempDir()
        let file = try dir.writeCredentials(profiles: [("ops", "acme", acmeKey)])
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--credentials", file])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"profile":"ops"}}"#)
        let id = try #require(try neon.response()["result"]?["userSessionId"]?.stringValue)
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"openSession","params":{"profile":"ops"}}"#)
        _ = try neon.response()
        neon.send(#"{"jsonrpc":"2.0","id":3,"method":"sign","params":{"profile":"ops"}}"#)
        _ = try neon.response()
        neon.send(#"{"jsonrpc":"2.0","id":4,"method":"nope"}"#)
        _ = try neon.response()
        neon.send(#"{"jsonrpc":"2.0","id":5,"method":"status"}"#)
        let line = try #require(neon.stdout.nextLine())
        let status = try JSONReader.parse(line)["result"]
        guard case .array(let sessions)? = status?["sessions"] else {
            Issue.record("no sessions in \(line)")
            return
        }
        #expect(sessions.count == 1)
        #expect(sessions.first?["orgId"] == "acme")
        #expect(sessions.first?["profile"] == "ops")
        #expect(sessions.first?["environment"] == "custom")
        #expect(sessions.first?["holders"] == .number("2"))
        #expect(sessions.first?["refreshing"] == false)
        let counters = status?["counters"]
        #expect(counters?["logins"] == .number("1"))
        #expect(counters?["reuses"] == .number("1"))
        #expect(counters?["signs"] == .number("1"))
        #expect(counters?["errors"]?["-32601"] == .number("1"))
        expectNoSecret(line, [acmeKey, id])
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }
}
