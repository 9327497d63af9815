import Foundation
import Testing
import JSONRPC

@Suite("End to end: JSON-RPC protocol over stdio")
struct ProtocolTests {
    /// Runs neon-auth on `input` (stdin closed after it) and returns stdout lines and the exit status.
    func run(_ input: String, arguments: [String] = []) throws -> (lines: [String], status: Int32?, stderr: String) {
        let neon = try NeonAuthProcess(arguments: arguments)
        neon.write(input)
        neon.closeInput()
        let status = neon.waitForExit()
        let text = neon.stdout.text
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.last == "", "output must end with a newline")
        lines.removeLast()
        return (lines, status, neon.stderr.text)
    }

    @Test("ids are echoed exactly, type and value")
    func idEcho() throws {
        let ids = [#""a\"b\\c\u00e9\/""#, "null", "18446744073709551617", "9007199254740993", "1.50", "-2e+10", "0", #""""#, #""日本""#]
        let input = ids.map { #"{"jsonrpc":"2.0","id":\#($0),"method":"sign","params":{"orgId":"o","apiKey":"k"}}"# }.joined(separator: "\n") + "\n"
        let (lines, status, _) = try run(input)
        #expect(status == 0)
        #expect(lines.count == ids.count)
        let expectedIds = [#""a\"b\\cé/""#, "null", "18446744073709551617", "9007199254740993", "1.50", "-2e+10", "0", #""""#, #""日本""#]
        for (line, id) in zip(lines, expectedIds) {
            #expect(line.hasPrefix(#"{"jsonrpc":"2.0","id":\#(id),"result":"#))
        }
    }

    @Test("errors: parse error, invalid request, method not found, invalid params; notifications get nothing")
    func errors() throws {
        let input = """
        {"jsonrpc":"2.0","id":1,"method":"sign","params":
        {"jsonrpc":"1.0","id":2,"method":"sign"}
        {"jsonrpc":"2.0","id":3,"method":"nope"}
        {"jsonrpc":"2.0","id":4,"method":"sign","params":{"orgId":"o"}}
        {"jsonrpc":"2.0","method":"nope"}
        {"jsonrpc":"2.0","method":"sign","params":{"orgId":"o"}}
        {"jsonrpc":"2.0","id":5,"method":"sign","params":"x"}
        {"jsonrpc":"2.0","id":6,"method":"closeSession","params":null,"extra":1}
        {"jsonrpc":"2.0","method":7}
        []

        """
        let (lines, status, _) = try run(input)
        #expect(status == 0)
        // closeSession is served concurrently, so its answer may come later: compare as a set.
        #expect(lines.sorted() == [
            #"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error: unexpected end of input"}}"#,
            #"{"jsonrpc":"2.0","id":2,"error":{"code":-32600,"message":"Invalid Request: jsonrpc must be \"2.0\""}}"#,
            #"{"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"Method not found"}}"#,
            #"{"jsonrpc":"2.0","id":4,"error":{"code":-32602,"message":"Invalid params: apiKey is required","data":{"field":"apiKey"}}}"#,
            #"{"jsonrpc":"2.0","id":5,"error":{"code":-32600,"message":"Invalid Request: params must be an object or an array"}}"#,
            #"{"jsonrpc":"2.0","id":6,"error":{"code":-32602,"message":"Invalid params: userSessionId is required","data":{"field":"userSessionId"}}}"#,
            #"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request: method must be a string"}}"#,
            #"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request: empty batch"}}"#,
        ].sorted())
    }

    @Test("batches: one array in order, no entries for notifications, nothing for a batch of notifications")
    func batches() throws {
        let input = """
        [{"jsonrpc":"2.0","id":"a","method":"sign","params":{"orgId":"o","apiKey":"k"}},{"jsonrpc":"2.0","method":"sign","params":{"orgId":"o","apiKey":"k"}},1,{"jsonrpc":"2.0","id":"b","method":"closeSession","params":{"userSessionId":"x"}}]
        [{"jsonrpc":"2.0","method":"sign","params":{"orgId":"o","apiKey":"k"}}]

        """
        let (lines, status, _) = try run(input)
        #expect(status == 0)
        #expect(lines.count == 1)
        let batch = try JSONReader.parse(try #require(lines.first))
        guard case .array(let items) = batch else { Issue.record("not an array"); return }
        #expect(items.count == 3)
        #expect(items[0]["id"] == "a" && items[0]["result"] != nil)
        #expect(items[1]["id"] == .null && items[1]["error"]?["code"] == .number("-32600"))
        #expect(items[2]["id"] == "b" && items[2]["error"]?["code"] == .number("-32010"))
    }

    @Test("framing: CRLF, BOM, blank lines, a last line without newline, invalid UTF-8")
    func framing() throws {
        var bytes: [UInt8] = [0xEF, 0xBB, 0xBF]
        bytes += Array(#"{"jsonrpc":"2.0","id":1,"method":"sign","params":{"orgId":"o","apiKey":"k"}}"#.utf8) + [0x0D, 0x0A]
        bytes += Array("\n   \n".utf8)
        bytes += Array(#"{"jsonrpc":"2.0","id":"#.utf8) + [0xC3, 0x28] + Array("}\n".utf8)
        bytes += Array(#"{"jsonrpc":"2.0","id":3,"method":"sign","params":{"orgId":"o","apiKey":"k"}}"#.utf8)
        let neon = try NeonAuthProcess(arguments: [])
        neon.writeBytes(bytes)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        let lines = neon.stdout.text.split(separator: "\n").map(String.init)
        #expect(lines.count == 3)
        #expect(lines[0].hasPrefix(#"{"jsonrpc":"2.0","id":1,"result""#))
        #expect(lines[1] == #"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error: invalid UTF-8"}}"#)
        #expect(lines[2].hasPrefix(#"{"jsonrpc":"2.0","id":3,"result""#))
    }

    @Test("a line over the cap is refused without stopping the service")
    func lineCap() throws {
        let long = #"{"jsonrpc":"2.0","id":1,"method":"sign","params":{"orgId":"o","apiKey":""# + String(repeating: "x", count: 5000) + #""}}"#
        let input = long + "\n" + #"{"jsonrpc":"2.0","id":2,"method":"sign","params":{"orgId":"o","apiKey":"k"}}"# + "\n"
        let (lines, status, _) = try run(input, arguments: ["--max-message-bytes", "4096"])
        #expect(status == 0)
        #expect(lines.count == 2)
        #expect(lines.first == #"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request: message longer than 4096 bytes","data":{"limit":4096}}}"#)
        #expect(lines.last?.hasPrefix(#"{"jsonrpc":"2.0","id":2,"result""#) == true)
    }

    @Test("</dev/null exits 0 at once with no output")
    func emptyInput() throws {
        let (lines, status, stderr) = try run("")
        #expect(lines.isEmpty)
        #expect(status == 0)
        #expect(stderr.isEmpty)
    }

    @Test("bad flags and values: exit 2, a message on stderr, nothing on stdout", arguments: [
        ["--bogus"], ["--idle-timeout", "-1"], ["--v1-base-url", "http://neon.example.com/api"], ["--log-level", "loud"],
        ["--api-version", "3"], ["--http-timeout"],
    ])
    func badFlags(arguments: [String]) throws {
        let neon = try NeonAuthProcess(arguments: arguments)
        #expect(neon.waitForExit() == 2)
        #expect(neon.stdout.text.isEmpty)
        #expect(neon.stderr.text.hasPrefix("neon-auth: "))
    }

    @Test("--help and --version print to stdout and exit 0")
    func helpAndVersion() throws {
        let help = try NeonAuthProcess(arguments: ["--help"], environment: ["NEON_AUTH_V1_BASE_URL": "https://secret-host.example/x"])
        #expect(help.waitForExit() == 0)
        #expect(help.stdout.text.contains("--v1-base-url"))
        #expect(!help.stdout.text.contains("secret-host"))
        let version = try NeonAuthProcess(arguments: ["--version"])
        #expect(version.waitForExit() == 0)
        #expect(version.stdout.text.hasPrefix("neon-auth "))
    }

    @Test("environment variables configure like flags; flags win")
    func environment() throws {
        let neon = try NeonAuthProcess(arguments: ["--api-version", "2.3"],
                                       environment: ["NEON_AUTH_V2_BASE_URL": "https://v2.example/v2", "NEON_AUTH_API_VERSION": "2.5"])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign","params":{"orgId":"o","apiKey":"k"}}"#)
        let r = try neon.response()
        #expect(r["result"]?["baseUrl"] == "https://v2.example/v2")
        #expect(r["result"]?["headers"]?["NEON-API-VERSION"] == "2.3")
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("SIGTERM, SIGINT and SIGHUP take the graceful path: pooled sessions are logged out, exit 0",
          arguments: [SIGTERM, SIGINT, SIGHUP])
    func gracefulSignal(signal: Int32) throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments)
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"SENTINEL-k:e+y/=%&é"}}"#)
        _ = try neon.response()
        kill(neon.process.processIdentifier, signal)
        #expect(neon.waitForExit() == 0)
        #expect(try fake.count("logouts", org: "acme") == 1)
    }
}
