import Foundation
import Testing
import JSONRPC

/// The machine's CA variables (some machines set them all to the system bundle): each TLS test
/// removes those it does not set itself, so it sees only what it asks for.
private let caVariables = ["SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE", "URLSessionCertificateAuthorityInfoFile", "SSLKEYLOGFILE"]

private let tlsKey = "SENTINEL-tls-k:e+y/=%&é"

/// neon-auth with API v1 at `v1` (an https URL of a fake), the CA variables of the machine removed.
private func neonAuth(v1: String, arguments: [String] = [], environment: [String: String] = [:]) throws -> NeonAuthProcess {
    try NeonAuthProcess(arguments: ["--v1-base-url", v1, "--v2-base-url", "https://127.0.0.1:9/v2"] + arguments,
                        environment: environment, unset: caVariables.filter { environment[$0] == nil })
}

private func openSession(_ id: Int) -> String {
    #"{"jsonrpc":"2.0","id":\#(id),"method":"openSession","params":{"orgId":"acme","apiKey":"\#(tlsKey)"}}"#
}

/// `url` with its host replaced by `localhost`.
private func onLocalhost(_ url: String) -> String { url.replacingOccurrences(of: "://127.0.0.1:", with: "://localhost:") }

/// The lines of `text` at `warn` level, the front-end's and its private agent's (relayed).
private func warnings(_ text: String) -> [Substring] {
    text.split(separator: "\n").filter { $0.contains("neon-auth: warn:") || $0.contains("neon-auth-agent: warn:") }
}

/// A copy of the built neon-auth-agent whose dynamic symbol table no longer names
/// `curl_multi_add_handle` (one byte of its `.dynstr` entry changed), as if the linker had not
/// exported it: libcurl's callers then bind to libcurl's own definition. Throws unless the
/// built agent exports it exactly once (which is what the real one must do).
private func agentWithoutInterposition(in directory: String) throws -> String {
    let original = URL(fileURLWithPath: try neonAuthBinary()).deletingLastPathComponent().appendingPathComponent("neon-auth-agent").path
    var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: original)))
    func integer<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> Int {
        var value: T = 0
        for i in (0..<MemoryLayout<T>.size).reversed() { value = value << 8 | T(bytes[offset + i]) }
        return Int(value)
    }
    guard bytes.count > 64, bytes[0..<4] == [0x7F, 0x45, 0x4C, 0x46], bytes[4] == 2, bytes[5] == 1 else {
        throw HarnessError("neon-auth-agent is not a little-endian ELF64 file")
    }
    let sectionTable = integer(0x28, UInt64.self), entrySize = integer(0x3A, UInt16.self)
    let sectionCount = integer(0x3C, UInt16.self), namesIndex = integer(0x3E, UInt16.self)
    func section(_ index: Int) -> (name: Int, offset: Int, size: Int) {
        let header = sectionTable + index * entrySize
        return (integer(header, UInt32.self), integer(header + 24, UInt64.self), integer(header + 32, UInt64.self))
    }
    let names = section(namesIndex)
    func name(_ offset: Int) -> String {
        let start = names.offset + offset
        return String(decoding: bytes[start..<(bytes[start...].firstIndex(of: 0) ?? start)], as: UTF8.self)
    }
    guard let dynstr = (0..<sectionCount).map(section).first(where: { name($0.name) == ".dynstr" }) else {
        throw HarnessError("neon-auth-agent has no .dynstr")
    }
    let symbol = Array("curl_multi_add_handle".utf8) + [0]
    let table = Array(bytes[dynstr.offset..<(dynstr.offset + dynstr.size)])
    let hits = (0...(table.count - symbol.count)).filter { ($0 == 0 || table[$0 - 1] == 0) && table[$0..<($0 + symbol.count)].elementsEqual(symbol) }
    guard hits.count == 1 else { throw HarnessError("neon-auth-agent exports curl_multi_add_handle \(hits.count) times, not once") }
    bytes[dynstr.offset + hits[0] + symbol.count - 2] = UInt8(ascii: "X")
    let copy = directory + "/neon-auth-agent"
    try Data(bytes).write(to: URL(fileURLWithPath: copy))
    chmod(copy, 0o755)
    return copy
}

@Suite("End to end: NeonCRM over TLS (a test CA, good and bad certificates)", .serialized)
struct TLSTests {
    /// How a test trusts the test CA.
    enum Trust: String, CaseIterable, CustomTestStringConvertible {
        case caFileFlag = "--ca-file"
        case caFileVariable = "NEON_AUTH_CA_FILE"
        case sslCertFile = "SSL_CERT_FILE"
        case sslCertDir = "SSL_CERT_DIR"
        var testDescription: String { rawValue }

        func settings(_ certs: TestCertificates) -> (arguments: [String], environment: [String: String]) {
            switch self {
            case .caFileFlag: return (["--ca-file", certs.ca], [:])
            case .caFileVariable: return ([], ["NEON_AUTH_CA_FILE": certs.ca])
            case .sslCertFile: return ([], ["SSL_CERT_FILE": certs.ca])
            case .sslCertDir: return ([], ["SSL_CERT_DIR": certs.caDirectory])
            }
        }
    }

    @Test("a good certificate from a CA given by flag or variable: login and logout over TLS, no warning", arguments: Trust.allCases)
    func goodLogin(trust: Trust) throws {
        let certs = try TestCertificates.shared()
        let fake = try FakeNeonCRM(accounts: [("acme", tlsKey)], certificate: "good")
        let tls = try #require(fake.tls)
        let (arguments, environment) = trust.settings(certs)
        // A DNS name for the variables, the address for the flag: the certificate names both.
        let v1 = trust == .caFileFlag ? tls.v1 : onLocalhost(tls.v1)
        let neon = try neonAuth(v1: v1, arguments: arguments, environment: environment)
        neon.send(openSession(1))
        let opened = try neon.response(timeout: 20)
        let id = try #require(opened["result"]?["userSessionId"]?.stringValue, "\(opened); stderr: \(neon.stderr.text)")
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"closeSession","params":{"userSessionId":"\#(id)","logout":true}}"#)
        #expect(try neon.response(timeout: 20)["result"] == ["closed": true, "loggedOut": true])
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        #expect(try fake.count("logins", org: "acme") == 1)
        #expect(try fake.count("logouts", org: "acme") == 1)
        #expect(try fake.stat("tlsHandshakes") >= 1)
        #expect(try fake.stat("tlsHandshakeFailures") == 0)
        #expect(warnings(neon.stderr.text).isEmpty, "\(neon.stderr.text)")
        expectNoSecret(neon.stderr.text, [tlsKey])
    }

    /// A certificate or handshake that fails, and how neon-auth must name it.
    struct Failure: CustomTestStringConvertible, Sendable {
        var name: String
        /// The fake's certificate, or nil for plain http answering on an https URL.
        var certificate: String?
        var reason: String
        var localhost = false
        var otherCA = false
        var systemStore = false
        var fakeArguments: [String] = []
        var testDescription: String { name }
    }

    static let failures: [Failure] = [
        Failure(name: "a good certificate, but its CA only in --ca-file's absence (system store)", certificate: "good",
                reason: "untrusted-issuer", systemStore: true),
        Failure(name: "signed by a CA nobody trusts", certificate: "untrusted", reason: "untrusted-issuer"),
        Failure(name: "a CA file that holds another CA replaces the store", certificate: "good", reason: "untrusted-issuer",
                otherCA: true),
        Failure(name: "self-signed", certificate: "self-signed", reason: "self-signed"),
        Failure(name: "for another host name, at 127.0.0.1", certificate: "wrong-host", reason: "host-name-mismatch"),
        Failure(name: "for another host name, at localhost", certificate: "wrong-host", reason: "host-name-mismatch", localhost: true),
        Failure(name: "expired", certificate: "expired", reason: "expired"),
        Failure(name: "not yet valid", certificate: "not-yet-valid", reason: "not-yet-valid"),
        Failure(name: "a handshake the server refuses (it demands a client certificate)", certificate: "good",
                reason: "handshake-failed", fakeArguments: ["--tls-require-client-cert"]),
        Failure(name: "plain http answering on an https URL", certificate: nil, reason: "not-tls"),
    ]

    @Test("a certificate or handshake failure: -32007 with its reason, not retryable, after one connection; one warning",
          arguments: failures)
    func failure(_ failure: Failure) throws {
        let certs = try TestCertificates.shared()
        let fake: FakeNeonCRM
        if let certificate = failure.certificate {
            fake = try FakeNeonCRM(accounts: [("acme", tlsKey)], certificate: certificate, extraArguments: failure.fakeArguments)
        } else {
            fake = try FakeNeonCRM(accounts: [("acme", tlsKey)])
        }
        var v1 = fake.tls?.v1 ?? fake.v1.replacingOccurrences(of: "http://", with: "https://")
        if failure.localhost { v1 = onLocalhost(v1) }
        let host = String(v1.dropFirst("https://".count).prefix { $0 != "/" })
        let arguments = failure.systemStore ? [] : ["--ca-file", failure.otherCA ? certs.otherCA : certs.ca]
        let neon = try neonAuth(v1: v1, arguments: arguments)
        let connections = failure.certificate == nil ? "tlsOnPlainPort" : "tlsConnections"

        for attempt in 1...2 {
            let start = Date()
            neon.send(openSession(attempt))
            let answer = try neon.response(timeout: 20)
            let elapsed = Date().timeIntervalSince(start)
            let error = try #require(answer["error"], "\(answer)")
            #expect(error["code"] == .number("-32007"), "\(answer); stderr: \(neon.stderr.text)")
            #expect(error["data"] == ["retryable": false, "reason": .string(failure.reason), "host": .string(host)], "\(answer)")
            let message = try #require(error["message"]?.stringValue)
            #expect(message.contains(host) && message.contains(failure.reason), "\(message)")
            #expect(elapsed < 3, "answered after the first attempt, not after retries: \(elapsed) s")
            #expect(try fake.stat(connections) == attempt, "one connection per openSession, no retry")
        }
        #expect(try fake.stat("tlsHandshakes") == (failure.certificate == "wrong-host" ? 2 : 0),
                "only a host name mismatch is found after the handshake completed")
        #expect(try fake.count("loginAttempts", org: "acme") == 0, "NeonCRM never saw the login")
        neon.send(#"{"jsonrpc":"2.0","id":9,"method":"status"}"#)
        let status = try neon.response()
        #expect(status["result"]?["counters"]?["loginRetries"] == 0)
        #expect(status["result"]?["counters"]?["errors"]?["-32007"] == 2)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)

        // One warning for the host and reason, at the default level, however many failures.
        let lines = warnings(neon.stderr.text)
        #expect(lines.count == 1, "\(neon.stderr.text)")
        #expect(lines.first.map { $0.contains(host) && $0.contains(failure.reason) } == true, "\(lines)")
        for form in secretForms(org: "acme", key: tlsKey) { #expect(!neon.stderr.text.contains(form)) }
    }

    @Test("a CA setting that cannot be used is a start-up error (exit 2) naming the setting and the path")
    func badCAFile() throws {
        let dir = try TempDir()
        let noPEM = dir.path + "/empty.pem"
        try Data("not a certificate\n".utf8).write(to: URL(fileURLWithPath: noPEM))
        let missing = dir.path + "/missing.pem"
        let cases: [([String], [String: String], String)] = [
            (["--ca-file", missing], [:], "--ca-file: cannot use CA file \(missing): No such file or directory"),
            (["--ca-file=" + dir.path], [:], "--ca-file: CA file \(dir.path) is not a regular file"),
            ([], ["NEON_AUTH_CA_FILE": missing], "NEON_AUTH_CA_FILE: cannot use CA file \(missing)"),
            ([], ["SSL_CERT_FILE": noPEM], "SSL_CERT_FILE: CA file \(noPEM) holds no PEM certificate"),
            ([], ["SSL_CERT_DIR": missing], "SSL_CERT_DIR: cannot open CA directory \(missing)"),
            (["--insecure"], [:], "unknown option '--insecure'"),
            (["-k"], [:], "unknown option '-k'"),
        ]
        for (arguments, environment, complaint) in cases {
            let neon = try neonAuth(v1: "https://127.0.0.1:9/neonws/services/api", arguments: arguments, environment: environment)
            neon.closeInput()
            #expect(neon.waitForExit() == 2, "\(arguments) \(environment)")
            #expect(neon.stderr.text.contains(complaint), "\(neon.stderr.text)")
            #expect(neon.stdout.text.isEmpty)
        }
    }

    @Test("verification cannot be turned off: Foundation's INSECURE_SSL_NO_VERIFY and curl's variables change nothing")
    func verificationStaysOn() throws {
        let certs = try TestCertificates.shared()
        let fake = try FakeNeonCRM(accounts: [("acme", tlsKey)], certificate: "self-signed")
        let tls = try #require(fake.tls)
        let neon = try neonAuth(v1: tls.v1, environment: ["URLSessionCertificateAuthorityInfoFile": "INSECURE_SSL_NO_VERIFY",
                                                          "CURL_CA_BUNDLE": try certs.cert("self-signed")])
        neon.send(openSession(1))
        let answer = try neon.response(timeout: 20)
        #expect(answer["error"]?["data"]?["reason"] == "self-signed", "\(answer)")
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        #expect(try fake.count("loginAttempts", org: "acme") == 0)
        // CURL_CA_BUNDLE is the curl tool's: said once at start-up, not used.
        #expect(neon.stderr.text.contains("warn: CURL_CA_BUNDLE is set but not read by neon-auth"), "\(neon.stderr.text)")
    }

    @Test("SSLKEYLOGFILE is removed at start-up: libcurl writes no TLS secrets of the login anywhere")
    func noKeyLog() throws {
        let certs = try TestCertificates.shared()
        let dir = try TempDir()
        let keyLog = dir.path + "/keys.log"
        let fake = try FakeNeonCRM(accounts: [("acme", tlsKey)], certificate: "good")
        let neon = try neonAuth(v1: try #require(fake.tls).v1, arguments: ["--ca-file", certs.ca, "--log-level", "debug"],
                                environment: ["SSLKEYLOGFILE": keyLog])
        neon.send(openSession(1))
        #expect(try neon.response(timeout: 20)["result"]?["userSessionId"] != nil)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        #expect(!FileManager.default.fileExists(atPath: keyLog))
        #expect(neon.stderr.text.contains("trusting --ca-file \(certs.ca)"), "\(neon.stderr.text)")
        for form in secretForms(org: "acme", key: tlsKey) { #expect(!neon.stderr.text.contains(form)) }
    }

    @Test("fail closed: an agent whose curl_multi_add_handle libcurl's callers do not reach sends nothing and trusts nothing")
    func failClosed() throws {
        let certs = try TestCertificates.shared()
        let dir = try TempDir()
        let agent = try agentWithoutInterposition(in: dir.path)
        let fake = try FakeNeonCRM(accounts: [("acme", tlsKey)], certificate: "good")
        let neon = try neonAuth(v1: try #require(fake.tls).v1, arguments: ["--ca-file", certs.ca],
                                environment: ["NEON_AUTH_AGENT_BIN": agent])
        neon.send(openSession(1))
        let answer = try neon.response(timeout: 20)
        #expect(answer["error"]?["code"] == .number("-32007"), "\(answer)")
        #expect(answer["error"]?["data"]?["reason"] == "ca-file-unusable", "\(answer)")
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        #expect(try fake.stat("tlsConnections") == 0, "no connection was even made")
        #expect(try fake.count("loginAttempts", org: "acme") == 0)
        #expect(neon.stderr.text.contains("neon-auth-agent: error: cannot apply the CA file (--ca-file \(certs.ca))"), "\(neon.stderr.text)")
    }

    @Test("a CA file removed after the front-end checked it: the agent refuses to start with it (-32006), nothing is sent")
    func caFileGoneBeforeTheAgent() throws {
        let certs = try TestCertificates.shared()
        let dir = try TempDir()
        let ca = dir.path + "/ca.pem"
        try FileManager.default.copyItem(atPath: certs.ca, toPath: ca)
        let fake = try FakeNeonCRM(accounts: [("acme", tlsKey)], certificate: "good")
        let neon = try neonAuth(v1: try #require(fake.tls).v1, arguments: ["--ca-file", ca])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign","params":{"orgId":"acme","apiKey":"k"}}"#)
        #expect(try neon.response()["result"] != nil, "started (the agent is started on first need only)")
        try FileManager.default.removeItem(atPath: ca)
        neon.send(openSession(2))
        let answer = try neon.response(timeout: 20)
        #expect(answer["error"]?["code"] == .number("-32006"), "\(answer)")
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        #expect(neon.stderr.text.contains("neon-auth-agent: --ca-file: cannot use CA file \(ca): No such file or directory"), "\(neon.stderr.text)")
        #expect(try fake.stat("tlsConnections") == 0)
    }

    @Test("the CA file names the shared agent: the same file by flag or variable shares one agent, another file gets its own")
    func sharedAgentPerCAFile() throws {
        let certs = try TestCertificates.shared()
        let runtime = try RuntimeDirectory()
        let fake = try FakeNeonCRM(accounts: [("acme", tlsKey)], certificate: "good")
        let tls = try #require(fake.tls)
        let environment = ["NEON_ORG_ID": "acme", "NEON_API_KEY": tlsKey, "XDG_RUNTIME_DIR": runtime.path]
        let urls = ["--v1-base-url", tls.v1, "--v2-base-url", tls.v2]
        let (status, first, error) = try runNeonAuth(["session"] + urls + ["--ca-file", certs.ca], environment: environment)
        #expect(status == 0, "\(error)")
        let (again, second, _) = try runNeonAuth(["session"] + urls, environment: environment.merging(["NEON_AUTH_CA_FILE": certs.ca]) { $1 })
        #expect(again == 0 && second == first, "the same agent and session")
        #expect(runtime.agentPids().count == 1)
        let (refused, out, complaint) = try runNeonAuth(["session"] + urls + ["--ca-file", certs.otherCA], environment: environment)
        #expect(refused == 1 && out.isEmpty)
        #expect(complaint.contains("untrusted-issuer"), "\(complaint)")
        #expect(runtime.agentPids().count == 2, "another CA file, another agent")
        #expect(try fake.count("logins", org: "acme") == 1)
        for ca in [certs.ca, certs.otherCA] {
            let (stopped, _, _) = try runNeonAuth(["agent", "stop"] + urls + ["--ca-file", ca], environment: environment)
            #expect(stopped == 0)
        }
        #expect(try fake.count("logouts", org: "acme") == 1)
        expectNoSecret(error + complaint, [tlsKey])
    }
}
