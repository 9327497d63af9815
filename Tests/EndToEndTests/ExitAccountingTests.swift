import Foundation
import Testing
import JSONRPC

extension FakeNeonCRM {
    /// A counter from `/_control/stats` summed over every org.
    func total(_ name: String) throws -> Int {
        guard case .object(let byOrg)? = try control("stats")[name] else { return 0 }
        return byOrg.members.reduce(0) { sum, entry in
            guard case .number(let n) = entry.value else { return sum }
            return sum + (Int(n) ?? 0)
        }
    }

    /// Waits (bounded) until `logouts` summed over orgs reaches `expected`; returns the last count.
    func waitForLogouts(_ expected: Int, timeout: Double = 5) throws -> Int {
        let deadline = Date().addingTimeInterval(timeout)
        var seen = try total("logouts")
        while seen < expected && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.05)
            seen = try total("logouts")
        }
        return seen
    }
}

func openLine(id: String, org: String, key: String) -> String {
    #"{"jsonrpc":"2.0","id":\#(id),"method":"openSession","params":{"orgId":"\#(org)","apiKey":"\#(key)"}}"#
}

/// The exit summary line (`exit: N session(s) obtained ...`), if logged.
func summaryLine(_ stderr: String) -> String? {
    stderr.split(separator: "\n").first { $0.contains("exit: ") && $0.contains("obtained from NeonCRM") }.map(String.init)
}

/// Every way out logs out, or names, every session NeonCRM issued; no answer is lost; no
/// failure is hidden. Each test counts at the fake NeonCRM.
@Suite("End to end: every way out accounts for every session", .serialized)
struct ExitAccountingTests {
    @Test("stdout closed while logins are in flight: every login is logged out when it completes, exit 0")
    func outputClosedWithLoginsInFlight() throws {
        let orgs = (0..<10).map { "org\($0)" }
        let fake = try FakeNeonCRM(accounts: orgs.map { ($0, "key-\($0)") })
        try fake.control("mode", body: #"{"loginDelay":0.5}"#)
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--log-level", "info"], collectOutput: false)
        let stderr = PipeCollector(neon.stderrPipe.fileHandleForReading)
        // A sign first (answered at once), then ten logins that take 0.5 s each.
        neon.send(signLine(id: "0"))
        for (i, org) in orgs.enumerated() { neon.send(openLine(id: "\(i + 1)", org: org, key: "key-\(org)")) }
        // `| head -c 100`: read 100 bytes, then close the pipe; stdin stays open.
        let reader = neon.stdoutPipe.fileHandleForReading
        var got = Data()
        while got.count < 100 { got.append(reader.readData(ofLength: 100 - got.count)) }
        try reader.close()
        #expect(neon.waitForExit(timeout: 20) == 0)
        _ = stderr.waitClosed(timeout: 5)
        #expect(try fake.total("logins") == 10)
        #expect(try fake.total("logouts") == 10, "every session NeonCRM issued is logged out")
        #expect(try fake.control("stats")["activeSessions"] == .number("0"))
        #expect(summaryLine(stderr.text) == "neon-auth: info: exit: 10 session(s) obtained from NeonCRM, 10 logged out, 0 abandoned",
                "\(stderr.text)")
        neon.closeInput()
    }

    @Test("the credentials file changes while a login for the old key is in flight: the caller gets the new key's session")
    func keyChangedDuringLogin() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", "old-key")])
        try fake.control("accounts", body: #"{"orgId":"acme","apiKey":"new-key","replace":false}"#)
        try fake.control("mode", body: #"{"loginDelay":1}"#)
        let dir = try TempDir()
        let file = try dir.writeCredentials(profiles: [("default", "acme", "old-key")])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--credentials", file, "--log-level", "info"])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession"}"#)
        Thread.sleep(forTimeInterval: 0.3)
        try dir.writeCredentials(profiles: [("default", "acme", "new-key")])
        // Any lookup of the profile notices the change.
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"sign"}"#)
        var answers: [String: JSONValue] = [:]
        for _ in 0..<2 {
            let answer = try neon.response(timeout: 20)
            answers[JSONWriter.string(answer["id"] ?? .null)] = answer
        }
        #expect(answers["2"]?["result"]?["headers"]?["Authorization"]?.stringValue == basic("acme", "new-key"))
        let opened = try #require(answers["1"], "no answer to openSession")
        #expect(opened["error"] == nil, "\(opened)")
        #expect(opened["result"]?["reused"] == .bool(false))
        // The old key's session was logged out as soon as NeonCRM issued it.
        #expect(try fake.waitForLogouts(1) == 1)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        #expect(try fake.total("logins") == 2)
        #expect(try fake.total("logouts") == 2)
        #expect(summaryLine(neon.stderr.text)?.hasSuffix("exit: 2 session(s) obtained from NeonCRM, 2 logged out, 0 abandoned") == true,
                "\(neon.stderr.text)")
    }

    @Test("the credentials file rewritten every few milliseconds while profile requests stream in: no -32005, no session left")
    func keyChurn() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", "key-a")])
        try fake.control("accounts", body: #"{"orgId":"acme","apiKey":"key-b","replace":false}"#)
        try fake.control("mode", body: #"{"loginDelay":0.02}"#)
        let dir = try TempDir()
        let file = try dir.writeCredentials(profiles: [("default", "acme", "key-a")])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--credentials", file, "--log-level", "info"])
        let count = 300
        for i in 0..<count {
            neon.send(#"{"jsonrpc":"2.0","id":\#(i),"method":"openSession"}"#)
            if i % 3 == 0 { try dir.writeCredentials(profiles: [("default", "acme", i % 2 == 0 ? "key-b" : "key-a")]) }
            Thread.sleep(forTimeInterval: 0.003)
        }
        var codes: [String: Int] = [:]
        for _ in 0..<count {
            let answer = try neon.response(timeout: 30)
            let code = answer["error"]?["code"].map(JSONWriter.string) ?? "ok"
            codes[code, default: 0] += 1
        }
        #expect(codes["-32005"] == nil, "\(codes)")
        #expect(Set(codes.keys).isSubset(of: ["ok", "-32023"]), "\(codes)")
        neon.closeInput()
        #expect(neon.waitForExit(timeout: 30) == 0)
        let logins = try fake.total("logins")
        #expect(logins > 1)
        #expect(try fake.total("logouts") == logins, "every session is logged out")
        #expect(summaryLine(neon.stderr.text)?.hasSuffix("\(logins) logged out, 0 abandoned") == true, "\(neon.stderr.text)")
    }

    @Test("exit as a request is answered null, then the process ends as at end of input")
    func exitRequestAnswered() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--log-level", "info"])
        neon.send(openLine(id: "1", org: "acme", key: acmeKey))
        _ = try neon.response()
        // Input stays open: `exit` alone ends the process.
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"exit"}"#)
        #expect(try neon.response() == JSONReader.parse(#"{"jsonrpc":"2.0","id":2,"result":null}"#))
        #expect(neon.waitForExit() == 0)
        #expect(try fake.total("logouts") == 1)
        #expect(neon.stdout.unread.isEmpty)
    }

    @Test("an exit notification inside a batch: every other member is answered first")
    func exitInBatch() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        try fake.control("mode", body: #"{"loginDelay":0.3}"#)
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--log-level", "info"])
        neon.send("[" + signLine(id: "1") + "," + openLine(id: "2", org: "acme", key: acmeKey) + #",{"jsonrpc":"2.0","method":"exit"}]"#)
        let batch = try neon.response()
        guard case .array(let answers) = batch else { Issue.record("not a batch answer: \(batch)"); return }
        #expect(answers.count == 2)
        #expect(answers.first?["result"]?["authorization"] != nil)
        #expect(answers.last?["result"]?["reused"] == .bool(false))
        #expect(neon.waitForExit() == 0)
        #expect(try fake.total("logins") == 1 && fake.total("logouts") == 1)
    }

    @Test("SIGTERM delivered twice at once (a forwarding launcher in the same process group) is one request to stop")
    func doubleSignal() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        try fake.control("mode", body: #"{"logoutDelay":0.3}"#)
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--log-level", "info"])
        neon.send(openLine(id: "1", org: "acme", key: acmeKey))
        _ = try neon.response()
        kill(neon.process.processIdentifier, SIGTERM)
        kill(neon.process.processIdentifier, SIGTERM)
        #expect(neon.waitForExit() == 0)
        #expect(try fake.total("logouts") == 1)
        #expect(summaryLine(neon.stderr.text) != nil, "\(neon.stderr.text)")
    }

    @Test("a second SIGTERM well after the first still exits at once with status 1")
    func secondSignalLater() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--shutdown-timeout", "20"])
        neon.send(openLine(id: "1", org: "acme", key: acmeKey))
        _ = try neon.response()
        try fake.control("mode", body: #"{"logout":"hang"}"#)
        kill(neon.process.processIdentifier, SIGTERM)
        Thread.sleep(forTimeInterval: 1)
        kill(neon.process.processIdentifier, SIGTERM)
        #expect(neon.waitForExit(timeout: 5) == 1)
        try fake.control("release", body: "{}")
    }

    @Test("a write error on stdout other than a closed pipe is logged and ends with status 74; sessions are logged out")
    func writeErrorIsNotSilent() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "exec \"$0\" \"$@\" >/dev/full", try neonAuthBinary()] + fake.neonAuthArguments
        let input = Pipe(), errors = Pipe()
        process.standardInput = input
        process.standardError = errors
        try process.run()
        input.fileHandleForWriting.write(Data((openLine(id: "1", org: "acme", key: acmeKey) + "\n").utf8))
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        try? input.fileHandleForWriting.close()
        #expect(process.terminationStatus == 74)
        #expect(stderr.contains("neon-auth: error: cannot write to stdout: No space left on device"), "\(stderr)")
        #expect(try fake.total("logins") == 1 && fake.total("logouts") == 1)
    }

    @Test("a large batch of openSession for one key not yet logged in: one login, every member answered")
    func largeBatch() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--max-message-bytes", "16777216"])
        let count = 20_000
        neon.send("[" + (0..<count).map { openLine(id: "\($0)", org: "acme", key: acmeKey) }.joined(separator: ",") + "]")
        neon.closeInput()
        let answer = try neon.response(timeout: 60)
        guard case .array(let answers) = answer else { Issue.record("not a batch answer"); return }
        #expect(answers.count == count)
        #expect(answers.allSatisfy { $0["result"]?["userSessionId"] != nil })
        #expect(neon.waitForExit(timeout: 30) == 0)
        #expect(try fake.total("logins") == 1 && fake.total("logouts") == 1)
    }

    @Test("SIGTERM with part of a batch still waiting: the batch is written with -32005 for the waiting members")
    func partialBatchAtDeadline() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        try fake.control("mode", body: #"{"login":"hang"}"#)
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--shutdown-timeout", "1"])
        neon.send("[" + signLine(id: "1") + "," + openLine(id: "2", org: "acme", key: acmeKey) + ","
                  + #"{"jsonrpc":"2.0","method":"openSession","params":{"orgId":"acme","apiKey":"x"}}"# + "]")
        Thread.sleep(forTimeInterval: 0.3)
        kill(neon.process.processIdentifier, SIGTERM)
        let batch = try neon.response(timeout: 10)
        guard case .array(let answers) = batch else { Issue.record("not a batch answer: \(batch)"); return }
        #expect(answers.count == 2)
        #expect(answers.first?["result"]?["authorization"] != nil)
        #expect(answers.last?["id"] == .number("2") && answers.last?["error"]?["code"] == .number("-32005"))
        #expect(neon.waitForExit() == 0)
        try fake.control("release", body: "{}")
    }
}
