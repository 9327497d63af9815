import Foundation
import Testing
@testable import NeonAuth

/// The base URL check decides where credentials may go: its narrow grammar must accept the
/// URLs people use, refuse everything ambiguous, and read every accepted URL exactly as
/// Foundation (which the agent sends with) reads it.
@Suite("Base URL policy")
struct BaseURLPolicyTests {
    @Test("accepted: https anywhere, http on loopback; the trailing slash is dropped", arguments: [
        ("https://api.neoncrm.com/v2", "https://api.neoncrm.com/v2"),
        ("https://api.neoncrm.com/v2/", "https://api.neoncrm.com/v2"),
        ("HTTPS://API.neoncrm.com:443/neonws/services/api", "https://API.neoncrm.com:443/neonws/services/api"),
        ("Http://localhost:8/x", "http://localhost:8/x"),
        ("https://trial.z2systems.com/neonws/services/api", "https://trial.z2systems.com/neonws/services/api"),
        ("http://127.0.0.1:8080/api", "http://127.0.0.1:8080/api"),
        ("http://localhost:9/x%20y", "http://localhost:9/x%20y"),
        ("https://host", "https://host"),
        ("https://h/a;b=c/@:x/(y)!$*+,'&~_.-", "https://h/a;b=c/@:x/(y)!$*+,'&~_.-"),
    ])
    func accepted(input: String, expected: String) throws {
        #expect(try BaseURLPolicy.validate(input, name: "--v1-base-url") == expected)
    }

    @Test("refused, with the reason", arguments: [
        ("api.neoncrm.com/v2", "not an absolute URL"),
        ("://host/x", "not an absolute URL"),
        ("ftp://host/x", "unsupported scheme"),
        ("http://127.000.000.001:8/x", "plain http is refused"),
        ("http://127.0.0.01:8/x", "plain http is refused"),
        ("http://neon.example.com/api", "plain http is refused"),
        ("http://127.0.0.1.evil.com/api", "plain http is refused"),
        ("http://localhost.:8/api", "plain http is refused"),
        ("https://user:pass@host/x", "user info"),
        ("https://evil.com\\@127.0.0.1/x", "user info"),
        ("https://host/x?apiKey=1", "query"),
        ("https://host/x#frag", "fragment"),
        ("https:///x", "no host"),
        ("https://:443/x", "no host"),
        ("https://ho st/x", "host neon-auth does not accept"),
        ("https://h%6Fst/x", "host neon-auth does not accept"),
        ("https://hôst/x", "host neon-auth does not accept"),
        ("http://127.0.0.1\\.evil.com/x", "host neon-auth does not accept"),
        ("https://host:0/x", "invalid port"),
        ("https://host:65536/x", "invalid port"),
        ("https://host:/x", "invalid port"),
        ("https://host:8a/x", "invalid port"),
        ("http://[::1]:8080/", "IPv6 address, which the HTTP client cannot use"),
        ("https://[2001:db8::1]/api", "IPv6 address, which the HTTP client cannot use"),
        ("https://[::1/x", "unterminated IPv6"),
        ("https://[]/x", "invalid IPv6"),
        ("https://[::1]x/", "not an absolute URL"),
        ("https://host/a b", "must be percent-encoded"),
        ("https://host/a\\b", "must be percent-encoded"),
        ("https://host/é", "must be percent-encoded"),
        ("https://host/%zz", "invalid percent-encoding"),
        ("https://host/%4", "invalid percent-encoding"),
    ])
    func refused(input: String, reason: String) {
        #expect {
            try BaseURLPolicy.validate(input, name: "--v1-base-url")
        } throws: { error in
            let text = "\(error)"
            return text.hasPrefix("--v1-base-url: ") && text.contains(reason) && !text.contains(input)
        }
    }

    @Test("a key pasted into the URL is never echoed, whatever is wrong with it")
    func noEcho() {
        for url in ["https://acme:Sup3r/Secr3tKey@api.neoncrm.com/v2", "https://api.neoncrm.com/v2?key=Secr3tKey",
                    "http://acme:Secr3tKey@neon.example.com/", "Secr3tKey://x", "https://host/Secr3tKey é"] {
            #expect {
                try BaseURLPolicy.validate(url, name: "--v1-base-url")
            } throws: { error in !"\(error)".contains("Secr3tKey") }
        }
    }

    @Test("every URL the grammar accepts, Foundation reads the same way: scheme, host, port, path, nothing else")
    func agreesWithFoundation() throws {
        var rng = SystemRandomNumberGenerator()
        let pieces = ["https://", "http://", "HTTP://", "h", "127.0.0.1", "localhost", "[::1]", "[2001:db8::1]", "neoncrm.com",
                      ":", ":80", ":65535", "/", "/v2", "%41", "%", "@", "?", "#", "\\", " ", "é", ".", "-", "_", "~",
                      ";", "=", "&", "+", "!", "'", "(", ")", "*", ",", "$", "[", "]", "//", "a", "Z", "0", "\u{0}", "\t"]
        var accepted = 0
        for _ in 0..<20000 {
            var text = Bool.random(using: &rng) ? "https://" : "http://"
            for _ in 0..<Int.random(in: 1...7, using: &rng) { text += pieces.randomElement(using: &rng)! }
            guard let parts = try? BaseURLPolicy.parse(text, name: "x") else { continue }
            accepted += 1
            let components = try #require(URLComponents(string: text), "Foundation cannot parse \(text)")
            #expect(components.scheme?.lowercased() == parts.scheme, "\(text)")
            let host = components.host.map { $0.hasPrefix("[") ? String($0.dropFirst().dropLast()) : $0 }
            #expect(host == parts.host, "\(text)")
            #expect(components.port == parts.port, "\(text)")
            #expect(components.percentEncodedPath == parts.path, "\(text)")
            #expect(components.user == nil && components.password == nil && components.query == nil && components.fragment == nil, "\(text)")
            #expect(URL(string: text)?.host(percentEncoded: false).map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "[]")) } == parts.host,
                    "\(text)")
        }
        #expect(accepted > 500, "the generator should reach the accepted set often")
    }

    @Test("the environment is read from environ, values kept whole, the same all at once or one variable at a time")
    func environment() {
        setenv("NEON_AUTH_TEST_VARIABLE", "a=b=c é", 1)
        defer { unsetenv("NEON_AUTH_TEST_VARIABLE") }
        let environment = Configuration.processEnvironment()
        #expect(environment["NEON_AUTH_TEST_VARIABLE"] == "a=b=c é")
        #expect(environment == ProcessInfo.processInfo.environment)
        // An entry that is not UTF-8 is skipped; an "=" followed by a combining mark still ends the name.
        let notUTF8: [CChar] = [CChar(bitPattern: 0xFF), 0x41, 0]
        setenv("NEON_AUTH_TEST_NOT_UTF8", notUTF8, 1)
        setenv("NEON_AUTH_TEST_COMBINING", "\u{301}x", 1)
        defer { unsetenv("NEON_AUTH_TEST_NOT_UTF8"); unsetenv("NEON_AUTH_TEST_COMBINING") }
        // A name spelled with U+212A KELVIN SIGN equals one with K, as Strings.
        setenv("NEON_AUTH_TEST_\u{212A}ELVIN", "kelvin", 1)
        defer { unsetenv("NEON_AUTH_TEST_\u{212A}ELVIN") }
        let edges = Configuration.processEnvironment()
        #expect(edges["NEON_AUTH_TEST_NOT_UTF8"] == nil)
        #expect(edges["NEON_AUTH_TEST_COMBINING"] == "\u{301}x")
        #expect(edges["NEON_AUTH_TEST_KELVIN"] == "kelvin")
        // Reading one variable at a time (start-up) gives what the dictionary holds, name by name.
        let process = EnvironmentVariables.process
        for (name, value) in edges { #expect(process[name] == value, "\(name)") }
        for name in ["NEON_AUTH_TEST_NOT_UTF8", "NEON_AUTH_TEST_KELVIN", "NEON_AUTH_TEST_\u{212A}ELVIN", "NEON_AUTH_TEST_UNSET",
                     "", "NEON_AUTH_TEST_VARIABLE=a", "NEON_AUTH_TEST_COMBINING"] {
            #expect(process[name] == edges[name], "\(name)")
        }
        #expect(process.all == edges)
        let fixed: EnvironmentVariables = ["A": "1"]
        #expect(fixed["A"] == "1" && fixed["B"] == nil && fixed.all == ["A": "1"])
    }
}

@Suite("Configuration")
struct ConfigurationTests {
    @Test("an empty NEON_AUTH_IDLE_MARGIN counts as not given: the default margin shrinks to fit a short window")
    func emptyMarginVariable() throws {
        let action = try Configuration.parse(arguments: ["--idle-timeout", "30"], environment: ["NEON_AUTH_IDLE_MARGIN": ""])
        guard case .serve(let configuration) = action else { Issue.record("expected serve, got \(action)"); return }
        #expect(configuration.idleMargin == 3)
        #expect(throws: ConfigurationError.self) {
            try Configuration.parse(arguments: ["--idle-timeout", "30"], environment: ["NEON_AUTH_IDLE_MARGIN": "30"])
        }
    }
}

@Suite("Process environment for the agent's HTTP stack", .serialized)
struct AgentEnvironmentTests {
    func run(_ variables: [String: String?]) -> (lower: String?, upper: String?) {
        let names = ["no_proxy", "NO_PROXY", "URLSessionDebugLibcurl", "URLSessionDebug", "SSLKEYLOGFILE",
                     "URLSessionCertificateAuthorityInfoFile"]
        let saved = names.map { ($0, getenv($0).map { String(cString: $0) }) }
        defer { for (name, value) in saved { if let value { setenv(name, value, 1) } else { unsetenv(name) } } }
        for name in names { unsetenv(name) }
        for (name, value) in variables { if let value { setenv(name, value, 1) } }
        ProxyEnvironment.prepare()
        #expect(getenv("URLSessionDebugLibcurl") == nil && getenv("URLSessionDebug") == nil)
        #expect(getenv("SSLKEYLOGFILE") == nil && getenv("URLSessionCertificateAuthorityInfoFile") == nil)
        return (getenv("no_proxy").map { String(cString: $0) }, getenv("NO_PROXY").map { String(cString: $0) })
    }

    @Test("loopback is added to the proxy exclusions libcurl would use; `*` and upper-case-only NO_PROXY are kept")
    func noProxy() {
        let loopback = "localhost,127.0.0.0/8,::1"
        #expect(run([:]) == (loopback, loopback))
        #expect(run(["no_proxy": "example.com"]) == (loopback + ",example.com", loopback + ",example.com"))
        #expect(run(["NO_PROXY": "api.neoncrm.com"]) == (loopback + ",api.neoncrm.com", loopback + ",api.neoncrm.com"))
        #expect(run(["no_proxy": "*"]) == ("*", nil))
        #expect(run(["NO_PROXY": "*"]) == (nil, "*"))
        #expect(run(["URLSessionDebugLibcurl": "1", "URLSessionDebug": "1"]).lower == loopback)
        #expect(run(["SSLKEYLOGFILE": "/tmp/keys.log", "URLSessionCertificateAuthorityInfoFile": "INSECURE_SSL_NO_VERIFY"]).lower == loopback)
    }
}
