import Foundation
import Testing
import JSONRPC

/// A request line for `sign` with the given raw id lexeme.
func signLine(id: String) -> String {
    #"{"jsonrpc":"2.0","id":\#(id),"method":"sign","params":{"orgId":"o","apiKey":"k"}}"#
}

/// Frames `body` as LSP does.
func lspFrame(_ body: String, extraHeaders: String = "") -> [UInt8] {
    Array("Content-Length: \(body.utf8.count)\r\n\(extraHeaders)\r\n".utf8) + Array(body.utf8)
}

@Suite("End to end: transport and process behaviour among peers")
struct TransportTests {
    @Test("LSP framing: detected from the first header, used in and out; lifecycle messages; exit ends the process")
    func lspFraming() throws {
        let neon = try NeonAuthProcess(arguments: [])
        var input = lspFrame(#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"processId":null}}"#,
                             extraHeaders: "content-type: application/vscode-jsonrpc; charset=utf8\r\n")
        input += lspFrame(#"{"jsonrpc":"2.0","method":"$/setTrace","params":{"value":"off"}}"#)
        input += lspFrame(#"{"jsonrpc":"2.0","id":2,"method":"sign","params":{"orgId":"o","apiKey":"é"}}"#)  // N counts bytes
        input += lspFrame(#"{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":2}}"#)
        input += lspFrame(#"{"jsonrpc":"2.0","id":3,"method":"shutdown"}"#)
        input += lspFrame(#"{"jsonrpc":"2.0","method":"exit"}"#)
        // Split the stream at awkward places: inside a header name and inside a body.
        neon.writeBytes(Array(input[0..<9]))
        Thread.sleep(forTimeInterval: 0.05)
        neon.writeBytes(Array(input[9..<60]))
        Thread.sleep(forTimeInterval: 0.05)
        neon.writeBytes(Array(input[60...]))
        // exit ends the process even though stdin stays open.
        #expect(neon.waitForExit(timeout: 10) == 0)
        let sign = #"{"jsonrpc":"2.0","id":2,"result":{"authorization":"Basic bzrDqQ==","headers":{"Authorization":"Basic bzrDqQ==","NEON-API-VERSION":"2.11"},"baseUrl":"https://api.neoncrm.com/v2"}}"#
        let initialize = #"{"jsonrpc":"2.0","id":1,"result":{"capabilities":{},"serverInfo":{"name":"neon-auth","version":"0.1.0"}}}"#
        let shutdown = #"{"jsonrpc":"2.0","id":3,"result":null}"#
        let expected = [initialize, sign, shutdown].map { "Content-Length: \($0.utf8.count)\r\n\r\n" + $0 }.joined()
        #expect(neon.stdout.text == expected)
    }

    @Test("a message split across many writes is parsed whole; several in one write are all answered")
    func splitWrites() throws {
        let neon = try NeonAuthProcess(arguments: [])
        let line = Array((signLine(id: "\"split\"") + "\n").utf8)
        for byte in line.prefix(40) { neon.writeBytes([byte]) }
        Thread.sleep(forTimeInterval: 0.05)
        neon.writeBytes(Array(line.dropFirst(40)))
        #expect(try neon.response()["id"] == "split")
        neon.write((1...5).map { signLine(id: String($0)) + "\n" }.joined())
        let ids = try (1...5).map { _ in try neon.response()["id"] }
        #expect(ids == (1...5).map { .number(String($0)) })
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("reserved rpc.* methods that are not defined get -32601")
    func reservedMethods() throws {
        let neon = try NeonAuthProcess(arguments: [])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"rpc.nope"}"#)
        #expect(neon.stdout.nextLine() == #"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}}"#)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("duplicate ids in flight are each answered")
    func duplicateIds() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)], extraArguments: ["--login-delay", "0.5"])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments)
        let open = #"{"jsonrpc":"2.0","id":9,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#
        neon.write(open + "\n" + open + "\n" + signLine(id: "9") + "\n")
        let responses = try (0..<3).map { _ in try neon.response() }
        #expect(responses.allSatisfy { $0["id"] == .number("9") })
        #expect(responses.first?["result"]?["authorization"] != nil, "sign is answered first, while the login runs")
        #expect(responses.filter { $0["result"]?["userSessionId"] != nil }.count == 2)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("a closed stdout (reader went away) does not kill it: it logs out and exits 0")
    func closedStdout() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments, collectOutput: false)
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        let reader = neon.stdoutPipe.fileHandleForReading
        var got = Data()
        while !got.contains(0x0A) { got.append(reader.availableData) }
        try reader.close()
        // The next response hits EPIPE; stdin stays open.
        neon.send(signLine(id: "2"))
        #expect(neon.waitForExit(timeout: 10) == 0)
        #expect(try fake.count("logouts", org: "acme") == 1)
    }

    @Test("a second signal during a slow shutdown exits at once")
    func secondSignal() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--shutdown-timeout", "30", "--http-timeout", "30"])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        _ = try neon.response()
        try fake.control("mode", body: #"{"logout":"hang"}"#)
        kill(neon.process.processIdentifier, SIGTERM)
        Thread.sleep(forTimeInterval: 0.5)
        #expect(neon.process.isRunning, "the logout hangs, so the graceful path is still waiting")
        let start = Date()
        kill(neon.process.processIdentifier, SIGINT)
        let status = neon.waitForExit(timeout: 5)
        #expect(status == 1)
        #expect(Date().timeIntervalSince(start) < 2)
        try fake.control("release", body: "{}")
    }

    @Test("an unread stderr never blocks the service")
    func unreadStderr() throws {
        let neon = try NeonAuthProcess(arguments: ["--log-level", "debug", "--v1-base-url", "http://127.0.0.1:9/x", "--http-timeout", "2"],
                                       collectOutput: false)
        let out = PipeCollector(neon.stdoutPipe.fileHandleForReading)
        // Each failing openSession logs a line; 1500 of them overflow a 64 KiB pipe buffer.
        let request = (0..<1500).map { #"{"jsonrpc":"2.0","id":\#($0),"method":"openSession","params":{"orgId":"acme-with-a-long-org-id-to-fill-the-log","apiKey":"k"}}"# + "\n" }.joined()
        neon.write(request)
        var answered = 0
        while answered < 1500, out.nextLine(timeout: 20) != nil { answered += 1 }
        #expect(answered == 1500)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("a slow reader still gets whole lines, and the reader keeps reading so end of input is seen")
    func slowReader() throws {
        let neon = try NeonAuthProcess(arguments: [], collectOutput: false)
        let count = 20_000
        let input = Data((0..<count).map { signLine(id: String($0)) + "\n" }.joined().utf8)
        // Nobody reads stdout while all input (about 1.6 MB) is written: neon-auth must keep
        // reading, because the unwritten output (about 3.4 MB) stays under its 8 MiB bound.
        let start = Date()
        neon.stdin.fileHandleForWriting.write(input)
        neon.closeInput()
        #expect(Date().timeIntervalSince(start) < 10)
        Thread.sleep(forTimeInterval: 0.3)
        let reader = neon.stdoutPipe.fileHandleForReading
        var all = Data()
        while true {
            let chunk = reader.readData(ofLength: 4096)
            if chunk.isEmpty { break }
            all.append(chunk)
            if all.count % (256 * 1024) < 4096 { usleep(2000) }
        }
        #expect(neon.waitForExit() == 0)
        let lines = all.split(separator: 0x0A)
        #expect(lines.count == count)
        var ids = Set<String>()
        for line in lines {
            let value = try JSONReader.parse([UInt8](line))
            ids.insert(JSONWriter.string(value["id"] ?? .null))
        }
        #expect(ids.count == count)
    }

    @Test("hardening: no core files (core limit 0) and, when not root, not dumpable")
    func hardening() throws {
        let neon = try NeonAuthProcess(arguments: [])
        neon.send(signLine(id: "1"))
        _ = try neon.response()
        let pid = neon.process.processIdentifier
        let limits = try String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)
        let core = try #require(limits.split(separator: "\n").first { $0.hasPrefix("Max core file size") })
        #expect(core.split(separator: " ", omittingEmptySubsequences: true).dropFirst(4).prefix(2).elementsEqual(["0", "0"]))
        // A non-dumpable process's /proc entries belong to root, whoever runs it (only
        // observable when the tests do not run as root).
        if geteuid() != 0 {
            var info = stat()
            #expect(stat("/proc/\(pid)/mem", &info) == 0)
            #expect(info.st_uid == 0)
        }
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("stdio hygiene: fd 1 points at stderr, inherited descriptors stay blocking")
    func descriptorHygiene() throws {
        let neon = try NeonAuthProcess(arguments: [])
        neon.send(signLine(id: "1"))
        _ = try neon.response()
        let pid = neon.process.processIdentifier
        let fd1 = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/1")
        let fd2 = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/2")
        #expect(fd1 == fd2, "a stray print must land on stderr")
        for fd in [0, 1, 2] {
            let info = try String(contentsOfFile: "/proc/\(pid)/fdinfo/\(fd)", encoding: .utf8)
            let flagsLine = try #require(info.split(separator: "\n").first { $0.hasPrefix("flags:") })
            let flags = try #require(Int(flagsLine.split(separator: "\t").last!.trimmingCharacters(in: .whitespaces), radix: 8))
            #expect(flags & 0o4000 == 0, "fd \(fd) must not be O_NONBLOCK")
        }
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }
}
