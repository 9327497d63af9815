import Foundation
import Testing
import JSONRPC

/// A key with every character that trips up encoders; also a sentinel for leak checks.
let acmeKey = "SENTINEL-k:e+y/=%&é"
let acmeBasic = "Basic " + Data("acme:\(acmeKey)".utf8).base64EncodedString()

/// Asserts that `text` holds no form of `secret` (raw, base64 of the Basic pair, percent-encoded).
func expectNoSecret(_ text: String, _ secrets: [String], sourceLocation: SourceLocation = #_sourceLocation) {
    for secret in secrets {
        let forms = [secret, Data("acme:\(secret)".utf8).base64EncodedString(),
                     secret.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? secret]
        for form in forms {
            #expect(!text.contains(form), "a secret leaked", sourceLocation: sourceLocation)
        }
    }
}

@Suite("End to end: the main job against the fake NeonCRM", .serialized)
struct SessionFlowTests {
    @Test("sign, openSession, reuse, closeSession, end of input: exact stdout, counts and exit code")
    func mainFlow() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--log-level", "debug"])

        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        let signLine = try #require(neon.stdout.nextLine())
        #expect(signLine == #"{"jsonrpc":"2.0","id":1,"result":{"authorization":"\#(acmeBasic)","headers":{"Authorization":"\#(acmeBasic)","NEON-API-VERSION":"2.11"},"baseUrl":"\#(fake.v2)"}}"#)

        // The signed headers work against the API v2 endpoint.
        let (status, _) = try http(method: "GET", url: fake.v2 + "/accounts/1",
                                   headers: ["Authorization": acmeBasic, "NEON-API-VERSION": "2.11"])
        #expect(status == 200)

        neon.send(#"{"jsonrpc":"2.0","id":"open-1","method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        let opened = try neon.response()
        let sessionId = try #require(opened["result"]?["userSessionId"]?.stringValue)
        #expect(JSONWriter.string(opened) == #"{"jsonrpc":"2.0","id":"open-1","result":{"userSessionId":"\#(sessionId)","reused":false}}"#)

        // The session works for an API v1 call.
        let (dataStatus, body) = try http(method: "GET", url: fake.v1 + "/account/listAccounts?responseType=json&userSessionId=" + sessionId)
        #expect(dataStatus == 200)
        #expect(try JSONReader.parse(body)["listAccountsResponse"]?["operationResult"] == "SUCCESS")

        neon.send(#"{"jsonrpc":"2.0","id":"open-2","method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        #expect(neon.stdout.nextLine() == #"{"jsonrpc":"2.0","id":"open-2","result":{"userSessionId":"\#(sessionId)","reused":true}}"#)
        #expect(try fake.count("logins", org: "acme") == 1)

        neon.send(#"{"jsonrpc":"2.0","id":3,"method":"closeSession","params":{"userSessionId":"\#(sessionId)"}}"#)
        #expect(neon.stdout.nextLine() == #"{"jsonrpc":"2.0","id":3,"result":{"closed":true,"loggedOut":false}}"#)
        #expect(try fake.count("logouts", org: "acme") == 0)

        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        #expect(neon.stdout.unread == "")
        #expect(try fake.count("logins", org: "acme") == 1)
        #expect(try fake.count("logouts", org: "acme") == 1)
        expectNoSecret(neon.stderr.text, [acmeKey, sessionId])
    }

    @Test("a request is answered while stdin stays open")
    func answeredWhileInputOpen() throws {
        let neon = try NeonAuthProcess(arguments: [])
        neon.send(#"{"jsonrpc":"2.0","id":7,"method":"sign","params":{"orgId":"o","apiKey":"k"}}"#)
        let line = try #require(neon.stdout.nextLine(timeout: 5))
        #expect(line.hasPrefix(#"{"jsonrpc":"2.0","id":7,"result":{"authorization":"Basic bzpr""#))
        #expect(neon.process.isRunning)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("a sign is answered while a slow login is pending")
    func signDuringSlowLogin() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)], extraArguments: ["--login-delay", "3"])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments)
        let start = Date()
        neon.send(#"{"jsonrpc":"2.0","id":"slow","method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        neon.send(#"{"jsonrpc":"2.0","id":"fast","method":"sign","params":{"orgId":"acme","apiKey":"x"}}"#)
        let first = try neon.response()
        #expect(first["id"] == "fast")
        #expect(Date().timeIntervalSince(start) < 2.5, "sign waited for the login")
        let second = try neon.response(timeout: 15)
        #expect(second["id"] == "slow")
        #expect(second["result"]?["reused"] == false)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("pipelined openSession/closeSession pairs on a pooled session: every answer exact, 1 login, no hold left")
    func pipelinedPairs() throws {
        let key = "0123456789abcdef0123456789abcdef"  // plain ASCII: the fast path's shape
        let fake = try FakeNeonCRM(accounts: [("acme", key)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments)
        let open = #""method":"openSession","params":{"orgId":"acme","apiKey":"\#(key)"}}"#
        neon.send(#"{"jsonrpc":"2.0","id":0,"# + open)
        let sessionId = try #require(try neon.response()["result"]?["userSessionId"]?.stringValue)
        let pairs = 2000
        var batch = ""
        for i in 1...pairs {
            batch += #"{"jsonrpc":"2.0","id":\#(2 * i - 1),"# + open + "\n"
            batch += #"{"jsonrpc":"2.0","id":\#(2 * i),"method":"closeSession","params":{"userSessionId":"\#(sessionId)"}}"# + "\n"
        }
        neon.write(batch)
        // Answers may come in any order (match by id); each must be exact.
        var answers: [String] = []
        for _ in 1...(2 * pairs) { answers.append(neon.stdout.nextLine() ?? "") }
        var expected: [String] = []
        for i in 1...pairs {
            expected.append(#"{"jsonrpc":"2.0","id":\#(2 * i - 1),"result":{"userSessionId":"\#(sessionId)","reused":true}}"#)
            expected.append(#"{"jsonrpc":"2.0","id":\#(2 * i),"result":{"closed":true,"loggedOut":false}}"#)
        }
        #expect(answers.sorted() == expected.sorted())
        neon.send(#"{"jsonrpc":"2.0","id":"s","method":"status"}"#)
        let status = try neon.response()
        guard case .array(let sessions)? = status["result"]?["sessions"] else { Issue.record("no sessions in \(status)"); return }
        #expect(sessions.count == 1 && sessions.first?["holders"] == .number("1"))
        #expect(status["result"]?["counters"]?["reuses"] == .number(String(pairs)))
        #expect(status["result"]?["counters"]?["logins"] == .number("1"))
        #expect(try fake.count("loginAttempts", org: "acme") == 1)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        #expect(try fake.count("logouts", org: "acme") == 1)
        expectNoSecret(neon.stderr.text, [key, sessionId])
    }

    @Test("50 concurrent openSession requests for one key make exactly 1 login")
    func singleFlight() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)], extraArguments: ["--login-delay", "0.3"])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments)
        var batch = ""
        for i in 0..<50 {
            batch += #"{"jsonrpc":"2.0","id":\#(i),"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"# + "\n"
        }
        neon.write(batch)
        var ids = Set<String>(), seen = Set<String>()
        for _ in 0..<50 {
            let r = try neon.response()
            ids.insert(try #require(r["result"]?["userSessionId"]?.stringValue))
            seen.insert(JSONWriter.string(try #require(r["id"])))
        }
        #expect(ids.count == 1)
        #expect(seen.count == 50)
        #expect(try fake.count("loginAttempts", org: "acme") == 1)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        #expect(try fake.count("logouts", org: "acme") == 1)
    }

    @Test("credentials rejected: -32001 with NeonCRM's error in data, and nothing pooled")
    func rejected() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--log-level", "debug"])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-wrong"}}"#)
        let r = try neon.response()
        #expect(r["error"]?["code"] == .number("-32001"))
        #expect(r["error"]?["data"]?["retryable"] == false)
        guard case .array(let errors)? = r["error"]?["data"]?["errors"] else {
            Issue.record("data.errors missing: \(JSONWriter.string(r))")
            return
        }
        #expect(errors.first?["errorCode"] == "5")
        // The object form of errors.error is accepted too.
        try fake.control("mode", body: #"{"login":"fail_object","count":1}"#)
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        #expect(try neon.response()["error"]?["code"] == .number("-32001"))
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        #expect(try fake.count("logouts", org: "acme") == 0)
        expectNoSecret(neon.stdout.text + neon.stderr.text, ["SENTINEL-wrong"])
        expectNoSecret(neon.stderr.text, [acmeKey])
    }

    @Test("NeonCRM answers it should not give: -32004 at once, not retried, pool unchanged", arguments: [
        "html", "empty", "nonjson", "success_no_id",
    ])
    func unexpectedAnswers(mode: String) throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        try fake.control("mode", body: #"{"login":"\#(mode)","count":1}"#)
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments)
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        let r = try neon.response()
        #expect(r["error"]?["code"] == .number("-32004"))
        #expect(r["error"]?["message"]?.stringValue?.hasPrefix("Unexpected response from NeonCRM") == true)
        #expect(r["error"]?["data"]?["retryable"] == false)
        #expect(try fake.count("loginAttempts", org: "acme") == 1)
        // The pool is unchanged: the next open logs in normally.
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        #expect(try neon.response()["result"]?["reused"] == false)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("transient faults are retried: one 5xx, 429, reset or v1 error 1/2 costs a retry, not an error", arguments: [
        "http500", "http429", "reset", "error1", "error2",
    ])
    func transientRetried(mode: String) throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        try fake.control("mode", body: #"{"login":"\#(mode)","count":2}"#)
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments)
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        #expect(try neon.response()["result"]?["reused"] == false)
        #expect(try fake.count("loginAttempts", org: "acme") == 3)
        #expect(try fake.count("logins", org: "acme") == 1)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("NeonCRM down for longer than the deadline: -32002, retryable, answered within the deadline")
    func persistentOutage() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        try fake.control("mode", body: #"{"login":"http500"}"#)
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--http-timeout", "1.5"])
        let start = Date()
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        let r = try neon.response()
        let elapsed = Date().timeIntervalSince(start)
        #expect(r["error"]?["code"] == .number("-32002"))
        #expect(r["error"]?["data"]?["retryable"] == true)
        #expect(r["error"]?["data"]?["httpStatus"] == .number("500"))
        #expect(elapsed < 3.0)
        #expect(try fake.count("loginAttempts", org: "acme") >= 2)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("a rejected key fails fast from the cache: one login attempt for many opens")
    func rejectionCached() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments)
        for id in 1...5 {
            neon.send(#"{"jsonrpc":"2.0","id":\#(id),"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-wrong"}}"#)
            let r = try neon.response()
            #expect(r["error"]?["code"] == .number("-32001"))
            #expect(r["error"]?["data"]?["cached"] == (id == 1 ? nil : .bool(true)))
        }
        #expect(try fake.count("loginAttempts", org: "acme") == 1)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("a wrong API key for an org with a pooled session never gets that session")
    func wrongKeyNeverShares() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments)
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        #expect(try neon.response()["result"]?["reused"] == false)
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&"}}"#)
        let r = try neon.response()
        #expect(r["result"] == nil)
        #expect(r["error"]?["code"] == .number("-32001"))
        #expect(try fake.count("loginAttempts", org: "acme") == 2)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("a hung login for one org blocks neither sign nor another org's login")
    func hungOrgIsolated() throws {
        let fake = try FakeNeonCRM(accounts: [("slow", "SENTINEL-s"), ("fast", "SENTINEL-f")])
        try fake.control("mode", body: #"{"login":"hang","count":1}"#)
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--http-timeout", "4"])
        neon.send(#"{"jsonrpc":"2.0","id":"slow","method":"openSession","params":{"orgId":"slow","apiKey":"SENTINEL-s"}}"#)
        for _ in 0..<100 {
            if try fake.count("loginAttempts", org: "slow") >= 1 { break }
            usleep(20_000)
        }
        let start = Date()
        neon.send(#"{"jsonrpc":"2.0","id":"fast","method":"openSession","params":{"orgId":"fast","apiKey":"SENTINEL-f"}}"#)
        neon.send(#"{"jsonrpc":"2.0","id":"sign","method":"sign","params":{"orgId":"slow","apiKey":"SENTINEL-s"}}"#)
        let first = try neon.response(), second = try neon.response()
        #expect(Set([first["id"]?.stringValue, second["id"]?.stringValue]) == Set(["fast", "sign"]))
        #expect(Date().timeIntervalSince(start) < 2)
        try fake.control("release", body: "{}")
        #expect(try neon.response(timeout: 15)["id"] == "slow")
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("a login that hangs times out with -32003 within the configured deadline")
    func timeout() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        try fake.control("mode", body: #"{"login":"hang","count":1}"#)
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--http-timeout", "1"])
        let start = Date()
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        let r = try neon.response(timeout: 10)
        #expect(r["error"]?["code"] == .number("-32003"))
        #expect(Date().timeIntervalSince(start) < 5)
        try fake.control("release", body: "{}")
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("connection refused gives -32002")
    func unreachable() throws {
        // Refused connections are retried until --http-timeout: keep it short, and allow a loaded machine.
        let neon = try NeonAuthProcess(arguments: ["--v1-base-url", "http://127.0.0.1:9/neonws/services/api", "--http-timeout", "2"])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"k"}}"#)
        let r = try neon.response(timeout: 30)
        #expect(r["error"]?["code"] == .number("-32002"))
        #expect(r["error"]?["data"]?["retryable"] == true)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("replace after NeonCRM error 4 gets a new session; a late replace gets the current one")
    func replaceAfterError4() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments)
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        let old = try #require(try neon.response()["result"]?["userSessionId"]?.stringValue)
        try fake.control("expire", body: "{}")
        let (_, body) = try http(method: "GET", url: fake.v1 + "/account/listAccounts?responseType=json&userSessionId=" + old)
        #expect(JSONWriter.string(try JSONReader.parse(body)).contains(#""errorCode":"4""#))
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é","replace":"\#(old)"}}"#)
        let renewed = try neon.response()
        let new = try #require(renewed["result"]?["userSessionId"]?.stringValue)
        #expect(new != old)
        #expect(renewed["result"]?["reused"] == false)
        neon.send(#"{"jsonrpc":"2.0","id":3,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é","replace":"\#(old)"}}"#)
        let late = try neon.response()
        #expect(late["result"]?["userSessionId"] == .string(new))
        #expect(late["result"]?["reused"] == true)
        #expect(try fake.count("logins", org: "acme") == 2)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("a session idle past the window less the margin is replaced and the stale one logged out")
    func idleWindow() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--idle-timeout", "1.5", "--idle-margin", "0.5"])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        let first = try #require(try neon.response()["result"]?["userSessionId"]?.stringValue)
        Thread.sleep(forTimeInterval: 1.2)
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        let second = try neon.response()
        #expect(second["result"]?["reused"] == false)
        #expect(second["result"]?["userSessionId"] != .string(first))
        #expect(try fake.count("logins", org: "acme") == 2)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("closeSession: unknown ids are refused without calling NeonCRM; logout:true logs out at once")
    func closeSession() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments)
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"closeSession","params":{"userSessionId":"T0000000000000"}}"#)
        #expect(neon.stdout.nextLine() == #"{"jsonrpc":"2.0","id":1,"error":{"code":-32010,"message":"Unknown session: not issued by this process or no longer pooled"}}"#)
        #expect(try fake.count("logoutAttempts", org: "?") == 0)
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        let id = try #require(try neon.response()["result"]?["userSessionId"]?.stringValue)
        neon.send(#"{"jsonrpc":"2.0","id":3,"method":"closeSession","params":{"userSessionId":"\#(id)","logout":true}}"#)
        #expect(neon.stdout.nextLine() == #"{"jsonrpc":"2.0","id":3,"result":{"closed":true,"loggedOut":true}}"#)
        #expect(try fake.count("logouts", org: "acme") == 1)
        neon.send(#"{"jsonrpc":"2.0","id":4,"method":"closeSession","params":{"userSessionId":"\#(id)"}}"#)
        #expect(try neon.response()["error"]?["code"] == .number("-32010"))
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        #expect(try fake.count("logouts", org: "acme") == 1)
    }
}
