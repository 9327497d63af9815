import Foundation
import Testing
import JSONRPC

/// Every form in which a secret could leak: raw, percent-encoded (form bodies, URLs), and
/// base64 of the Basic pair with its org.
func secretForms(org: String, key: String) -> [String] {
    let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    return [key, key.addingPercentEncoding(withAllowedCharacters: unreserved)!,
            key.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed)!,
            Data("\(org):\(key)".utf8).base64EncodedString()]
}

/// Removes the members where secrets belong (sign's Authorization values, openSession's
/// userSessionId) from a response line, returning the rest as text.
func strippedOfAllowedFields(_ line: String) -> String {
    guard var value = try? JSONReader.parse(line) else { return line }
    func strip(_ v: inout JSONValue) {
        switch v {
        case .array(var items):
            for i in items.indices { strip(&items[i]) }
            v = .array(items)
        case .object(var o):
            if case .object(var result)? = o["result"] {
                result["authorization"] = nil
                result["userSessionId"] = nil
                if case .object(var headers)? = result["headers"] {
                    headers["Authorization"] = nil
                    result["headers"] = .object(headers)
                }
                o["result"] = .object(result)
            }
            v = .object(o)
        default: break
        }
    }
    strip(&value)
    return JSONWriter.string(value)
}

@Suite("End to end: no secret leaks on any error path", .serialized)
struct LeakTests {
    @Test("sentinel keys and session ids never reach stderr (debug level) or stdout outside their fields")
    func leakSweep() throws {
        let inlineKey = "SENTINEL-INLINE-9f8e7d:+/=%&é"
        let profileKey = "SENTINEL-PROFILE-1a2b3c"
        let dir = try TempDir()
        let file = try dir.writeCredentials(profiles: [("p", "porg", profileKey)])
        let refused = try dir.writeCredentials("refused.json", profiles: [("default", "rorg", "SENTINEL-REFUSED-555")], mode: 0o644)
        let fake = try FakeNeonCRM(accounts: [("acme", inlineKey), ("porg", profileKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--credentials", file, "--log-level", "debug",
                                                                          "--http-timeout", "1", "--rejection-cache", "0"])
        func open(_ id: Int, key: String = inlineKey, extra: String = "") -> String {
            #"{"jsonrpc":"2.0","id":\#(id),"method":"openSession","params":{"orgId":"acme","apiKey":"\#(key)"\#(extra)}}"#
        }
        var sessionIds: [String] = []
        func exchange(_ line: String) throws -> JSONValue {
            neon.send(line)
            let r = try neon.response()
            if let id = r["result"]?["userSessionId"]?.stringValue { sessionIds.append(id) }
            return r
        }
        // Bad JSON, unknown method, bad params: all carrying the key.
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign","params":{"orgId":"acme","apiKey":"\#(inlineKey)""#)
        _ = try neon.response()
        _ = try exchange(#"{"jsonrpc":"2.0","id":2,"method":"signn","params":{"orgId":"acme","apiKey":"\#(inlineKey)"}}"#)
        _ = try exchange(#"{"jsonrpc":"2.0","id":3,"method":"sign","params":{"orgId":"acme","apiKey":"\#(inlineKey) "}}"#)
        _ = try exchange(#"{"jsonrpc":"2.0","id":4,"method":"sign","params":{"orgId":"acme","\#(inlineKey)":"x"}}"#)
        _ = try exchange(#"{"jsonrpc":"2.0","id":5,"method":"sign","params":{"orgId":"acme:\#(inlineKey)","apiKey":"x"}}"#)
        // Login FAIL, HTTP 500, malformed body, timeout.
        _ = try exchange(open(6, key: inlineKey + "-wrong"))
        for (i, mode) in ["http500", "html", "nonjson", "hang"].enumerated() {
            try fake.control("mode", body: #"{"login":"\#(mode)"}"#)
            _ = try exchange(open(10 + i))
        }
        try fake.control("mode", body: #"{"login":"ok"}"#)
        try fake.control("release", body: "{}")
        // A real session, then error 4 and replace, then a logout failure.
        let first = try exchange(open(20))
        let id = try #require(first["result"]?["userSessionId"]?.stringValue)
        try fake.control("expire", body: "{}")
        _ = try exchange(open(21, extra: #","replace":"\#(id)""#))
        try fake.control("mode", body: #"{"logout":"fail"}"#)
        _ = try exchange(#"{"jsonrpc":"2.0","id":22,"method":"closeSession","params":{"userSessionId":"\#(sessionIds.last!)","logout":true}}"#)
        _ = try exchange(#"{"jsonrpc":"2.0","id":23,"method":"closeSession","params":{"userSessionId":"\#(sessionIds.last!)x"}}"#)
        try fake.control("mode", body: #"{"logout":"ok"}"#)
        // The profile's key through sign, open and status.
        _ = try exchange(#"{"jsonrpc":"2.0","id":30,"method":"sign","params":{"profile":"p"}}"#)
        _ = try exchange(#"{"jsonrpc":"2.0","id":31,"method":"openSession","params":{"profile":"p"}}"#)
        _ = try exchange(#"{"jsonrpc":"2.0","id":32,"method":"status"}"#)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)

        // Connection refused, a refused credentials file, and SIGTERM, in a second process.
        let other = try NeonAuthProcess(arguments: ["--v1-base-url", "http://127.0.0.1:9/api", "--credentials", refused, "--log-level", "debug"])
        other.send(open(1))
        _ = try other.response(timeout: 30)  // refused connections are retried for --http-timeout (10 s)
        other.send(#"{"jsonrpc":"2.0","id":2,"method":"sign"}"#)
        _ = try other.response()
        kill(other.process.processIdentifier, SIGTERM)
        #expect(other.waitForExit() == 0)

        // TLS failures (an expired certificate; plain http on an https URL), in a third process.
        let expired = try FakeNeonCRM(accounts: [("acme", inlineKey)], certificate: "expired")
        let tls = try NeonAuthProcess(arguments: ["--v1-base-url", try #require(expired.tls).v1, "--ca-file", TestCertificates.shared().ca,
                                                  "--log-level", "debug"])
        tls.send(open(1))
        #expect(try tls.response(timeout: 20)["error"]?["data"]?["reason"] == "expired")
        tls.closeInput()
        #expect(tls.waitForExit() == 0)
        let plain = try NeonAuthProcess(arguments: ["--v1-base-url", fake.v1.replacingOccurrences(of: "http://", with: "https://"),
                                                    "--log-level", "debug"])
        plain.send(open(1))
        #expect(try plain.response(timeout: 20)["error"]?["data"]?["reason"] == "not-tls")
        plain.closeInput()
        #expect(plain.waitForExit() == 0)

        let forms = secretForms(org: "acme", key: inlineKey) + secretForms(org: "acme", key: inlineKey + "-wrong")
            + secretForms(org: "porg", key: profileKey) + secretForms(org: "rorg", key: "SENTINEL-REFUSED-555") + sessionIds
        #expect(!sessionIds.isEmpty)
        let stdoutOutsideFields = (neon.stdout.text + other.stdout.text + tls.stdout.text + plain.stdout.text).split(separator: "\n").map { strippedOfAllowedFields(String($0)) }.joined(separator: "\n")
        let stderr = neon.stderr.text + other.stderr.text + tls.stderr.text + plain.stderr.text
        #expect(stderr.contains("neon-auth: debug:"), "debug logging was on")
        #expect(tls.stderr.text.contains("neon-auth-agent: warn: TLS connection to NeonCRM"), "the agent's TLS warning was relayed")
        for form in forms {
            #expect(!stderr.contains(form), "stderr leaked a secret form")
            #expect(!stdoutOutsideFields.contains(form), "stdout leaked a secret form outside its field")
        }
        #expect(!stderr.contains("SENTINEL"))
        #expect(!stdoutOutsideFields.contains("SENTINEL"))
    }

    @Test("--help prints no environment values")
    func help() throws {
        let neon = try NeonAuthProcess(arguments: ["--help"], environment: ["NEON_API_KEY": "SENTINEL-HELP", "NEON_ORG_ID": "o"])
        #expect(neon.waitForExit() == 0)
        #expect(!neon.stdout.text.contains("SENTINEL"))
        #expect(!neon.stderr.text.contains("SENTINEL"))
    }
}
