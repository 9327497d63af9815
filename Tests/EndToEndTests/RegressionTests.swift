import Foundation
import Testing
import JSONRPC

/// Defects found by a fresh reviewer, each pinned by a test.
@Suite("End to end: regressions", .serialized)
struct RegressionTests {
    @Test("end of input with a slow reader: every response arrives whole before exit")
    func slowReaderAfterEndOfInput() throws {
        let neon = try NeonAuthProcess(arguments: [], collectOutput: false)
        neon.write((0..<3000).map { signLine(id: String($0)) + "\n" }.joined())
        neon.closeInput()
        Thread.sleep(forTimeInterval: 2.5)  // longer than any fixed drain bound would allow
        let data = neon.stdoutPipe.fileHandleForReading.readDataToEndOfFile()
        #expect(neon.waitForExit() == 0)
        let lines = data.split(separator: 0x0A, omittingEmptySubsequences: false)
        #expect(lines.count == 3001 && lines.last?.isEmpty == true)
        #expect(lines.dropLast().allSatisfy { (try? JSONReader.parse([UInt8]($0))) != nil })
    }

    @Test("exit does not wait out --shutdown-timeout once every logout is done")
    func quickExit() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--shutdown-timeout", "10"])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        _ = try neon.response()
        let start = Date()
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        #expect(Date().timeIntervalSince(start) < 2)
        #expect(try fake.count("logouts", org: "acme") == 1)
    }

    @Test("with stderr closed by the parent, logs never reach stdout")
    func closedStderr() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "exec \"$0\" --log-level debug 2>&-", try neonAuthBinary()]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        input.fileHandleForWriting.write(Data((signLine(id: "1") + "\n" + #"{"jsonrpc":"2.0","id":2,"method":"nope"}"# + "\n").utf8))
        try input.fileHandleForWriting.close()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let lines = text.split(separator: "\n")
        #expect(lines.count == 2)
        #expect(lines.allSatisfy { $0.hasPrefix(#"{"jsonrpc":"2.0""#) })
        #expect(!text.contains("neon-auth:"))
    }

    @Test("a bad flag with stderr closed or full still exits 2 and writes nothing to stdout", arguments: ["2>&-", "2>/dev/full"])
    func badFlagWithBrokenStderr(redirect: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "exec \"$0\" --bogus \(redirect) </dev/null", try neonAuthBinary()]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let text = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 2)
        #expect(text.isEmpty)
    }

    @Test("an unknown profile name is not echoed (a key may have been pasted there)")
    func profileNameNotEchoed() throws {
        let dir = try TempDir()
        let file = try dir.writeCredentials(profiles: [("ops", "acme", "k1")])
        let neon = try NeonAuthProcess(arguments: ["--credentials", file])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign","params":{"profile":"SENTINEL0123456789abcdef0123456789"}}"#)
        let line = try #require(neon.stdout.nextLine())
        #expect(line.contains("-32022"))
        #expect(line.contains(#""profiles":["ops"]"#))
        #expect(!line.contains("SENTINEL"))
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("only one of NEON_ORG_ID/NEON_API_KEY set: the file's default is used, and the message says which is missing")
    func partialEnvironment() throws {
        let dir = try TempDir()
        let neon = try NeonAuthProcess(arguments: [], environment: ["NEON_API_KEY": "k", "HOME": dir.path, "XDG_CONFIG_HOME": ""])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign"}"#)
        let r = try neon.response()
        #expect(r["error"]?["code"] == .number("-32020"))
        #expect(r["error"]?["message"]?.stringValue?.contains("NEON_API_KEY is set but NEON_ORG_ID is not") == true)
        neon.closeInput()
        _ = neon.waitForExit()
        let file = try dir.writeCredentials(profiles: [("default", "from-file", "k2")])
        let second = try NeonAuthProcess(arguments: ["--credentials", file], environment: ["NEON_API_KEY": "k"])
        second.send(#"{"jsonrpc":"2.0","id":1,"method":"sign"}"#)
        #expect(try second.response()["result"]?["authorization"] == .string(basic("from-file", "k2")))
        second.closeInput()
        _ = second.waitForExit()
    }

    @Test("--refresh-ahead must fit inside the idle window; the default shrinks to fit")
    func refreshAheadFits() throws {
        let bad = try NeonAuthProcess(arguments: ["--idle-timeout", "10", "--refresh-ahead", "20"])
        #expect(bad.waitForExit() == 2)
        #expect(bad.stderr.text.contains("--refresh-ahead"))
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--idle-timeout", "10"])
        for id in 1...5 {
            neon.send(#"{"jsonrpc":"2.0","id":\#(id),"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
            _ = try neon.response()
        }
        #expect(try fake.count("loginAttempts", org: "acme") == 1)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    // Found by the second review round (session 9).

    @Test("a slow but steady reader gets every response whole, however long it takes")
    func slowSteadyReader() throws {
        let neon = try NeonAuthProcess(arguments: [], collectOutput: false)
        let count = 40_000
        let input = neon.stdin.fileHandleForWriting
        let requests = Data((0..<count).map { signLine(id: String($0)) + "\n" }.joined().utf8)
        let writer = Thread {
            input.write(requests)
            try? input.close()
        }
        writer.start()
        // About 0.5 MB/s: the whole output (about 7 MB) takes far longer than 10 s.
        let reader = neon.stdoutPipe.fileHandleForReading
        var all = Data()
        while true {
            let chunk = reader.readData(ofLength: 16 * 1024)
            if chunk.isEmpty { break }
            all.append(chunk)
            usleep(30_000)
        }
        #expect(neon.waitForExit() == 0)
        let lines = all.split(separator: 0x0A, omittingEmptySubsequences: false)
        #expect(lines.count == count + 1 && lines.last?.isEmpty == true)
        #expect(lines.dropLast().allSatisfy { (try? JSONReader.parse([UInt8]($0))) != nil })
    }

    @Test("one SIGTERM after end of input lets the shutdown finish: exit 0 and every session logged out")
    func signalAfterEndOfInput() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        try fake.control("mode", body: #"{"logoutDelay":0.5}"#)
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments)
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        _ = try neon.response()
        neon.closeInput()
        Thread.sleep(forTimeInterval: 0.1)
        kill(neon.process.processIdentifier, SIGTERM)
        #expect(neon.waitForExit() == 0)
        #expect(try fake.count("logouts", org: "acme") == 1)
    }

    @Test("SIGTERM with a login in flight: the request still gets its -32005 answer before exit")
    func signalAnswersInFlight() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        try fake.control("mode", body: #"{"login":"hang"}"#)
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments)
        neon.send(#"{"jsonrpc":"2.0","id":7,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        Thread.sleep(forTimeInterval: 0.2)
        kill(neon.process.processIdentifier, SIGTERM)
        #expect(neon.waitForExit() == 0)
        let answer = try #require(neon.stdout.nextLine(timeout: 1), "no answer for the request in flight")
        #expect(answer.contains(#""id":7"#) && answer.contains("-32005"))
        _ = try fake.control("release", body: "{}")
    }

    @Test("proxy variables never carry plain-http credentials, and Foundation's debug variables print nothing")
    func proxyAndDebugEnvironment() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        // Nothing listens on 127.0.0.2:9: a request sent through this "proxy" would fail.
        let proxy = "http://127.0.0.2:9"
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--log-level", "error"], environment: [
            "http_proxy": proxy, "HTTP_PROXY": proxy, "all_proxy": proxy, "ALL_PROXY": proxy, "no_proxy": "example.com",
            "URLSessionDebugLibcurl": "1", "URLSessionDebug": "1",
        ])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        let opened = try neon.response()
        let sessionId = try #require(opened["result"]?["userSessionId"]?.stringValue, "\(opened)")
        #expect(try fake.count("logins", org: "acme") == 1)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        expectNoSecret(neon.stderr.text, [acmeKey, sessionId])
        #expect(!neon.stderr.text.contains("login.apiKey"))
    }
}
