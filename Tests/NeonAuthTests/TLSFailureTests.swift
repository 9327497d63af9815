import Foundation
import Testing
import JSONRPC
@testable import NeonAuth
import NeonAuthHTTP

@Suite("TLS failures and trust settings")
struct TLSFailureTests {
    @Test("the reason tokens are stable")
    func reasons() {
        #expect(TLSFailureReason.allCases.map(\.rawValue) == [
            "untrusted-issuer", "self-signed", "host-name-mismatch", "expired", "not-yet-valid", "certificate-invalid",
            "handshake-failed", "not-tls", "ca-file-unusable",
        ])
    }

    @Test("libcurl's messages sorted into reasons; a connection dropped mid-handshake and other failures are no TLS failure",
          arguments: [
        ("SSL certificate problem: unable to get local issuer certificate", TLSFailureReason?.some(.untrustedIssuer)),
        ("SSL certificate problem: self-signed certificate in certificate chain", .untrustedIssuer),
        ("SSL certificate problem: self-signed certificate", .selfSigned),
        ("SSL certificate problem: self signed certificate", .selfSigned),
        ("SSL certificate problem: certificate has expired", .expired),
        ("SSL certificate problem: certificate is not yet valid", .notYetValid),
        ("SSL certificate problem: unsupported certificate purpose", .certificateInvalid),
        ("SSL: no alternative certificate subject name matches target host name '127.0.0.1'", .hostNameMismatch),
        ("SSL: certificate subject name 'x' does not match target host name 'y'", .hostNameMismatch),
        ("error setting certificate file: /tmp/ca.pem", .caFileUnusable),
        ("OpenSSL/3.0.19: error:0A00010B:SSL routines::wrong version number", .notTLS),
        ("OpenSSL/3.0.19: error:0A00045C:SSL routines::tlsv13 alert certificate required", .handshakeFailed),
        ("OpenSSL SSL_connect: SSL_ERROR_SYSCALL in connection to 127.0.0.1:443", nil),
        ("OpenSSL SSL_connect: Connection reset by peer in connection to 127.0.0.1:443", nil),
        ("Could not resolve host: api.neoncrm.com", nil),
        ("The operation could not be completed", nil),
    ])
    func classify(message: String, reason: TLSFailureReason?) {
        #expect(FailureClassifier.tlsReason(message) == reason)
        let failure = FailureClassifier.classify(code: .unknown, description: message)
        #expect(failure == (reason.map { .tls(TLSFailure(reason: $0, host: "", detail: message)) } ?? .unreachable))
    }

    @Test("URLSession's own codes win over the message: timed out, cancelled, refused and DNS are never TLS")
    func classifyCodes() {
        let tlsWords = "SSL certificate problem: certificate has expired"
        #expect(FailureClassifier.classify(code: .timedOut, description: tlsWords) == .timedOut)
        #expect(FailureClassifier.classify(code: .cancelled, description: tlsWords) == .cancelled)
        #expect(FailureClassifier.classify(code: .cannotConnectToHost, description: tlsWords) == .unreachable)
        #expect(FailureClassifier.classify(code: .cannotFindHost, description: tlsWords) == .unreachable)
        #expect(FailureClassifier.classify(code: nil, description: tlsWords) == .tls(TLSFailure(reason: .expired, host: "", detail: tlsWords)))
    }

    @Test("the stack's message is fit for one log line: no control characters, at most 512 bytes, trimmed")
    func clean() {
        #expect(FailureClassifier.clean("  a\nb\tc\u{7}  ") == "a b c")
        let long = FailureClassifier.clean(String(repeating: "é", count: 400))
        #expect(long.utf8.count == 512 && long.allSatisfy { $0 == "é" })
    }

    @Test("fail closed after an exchange: a configured CA file must have reached every transfer")
    func unapplied() {
        #expect(TransferTrust.unappliedReason(configured: false, applied: 0, failed: 0) == nil)
        #expect(TransferTrust.unappliedReason(configured: true, applied: 3, failed: 0) == nil)
        #expect(TransferTrust.unappliedReason(configured: true, applied: 0, failed: 0) != nil, "its transfers bypassed the agent's definition")
        #expect(TransferTrust.unappliedReason(configured: true, applied: 3, failed: 1) != nil, "libcurl refused a setting once")
    }

    @Test("-32007: not retryable, data names the reason and the host, the message says what to check")
    func rpcError() {
        let failure = NeonError.tlsFailure(TLSFailure(reason: .untrustedIssuer, host: "api.neoncrm.com", detail: "SSL certificate problem"))
        #expect(!failure.isTransient)
        let error = failure.rpcError(timeout: 10)
        #expect(error.code.rawValue == -32007)
        #expect(error.data == ["retryable": false, "reason": "untrusted-issuer", "host": "api.neoncrm.com"])
        #expect(error.message.contains("api.neoncrm.com") && error.message.contains("--ca-file"), "\(error.message)")
        for reason in TLSFailureReason.allCases {
            let message = NeonError.tlsFailure(TLSFailure(reason: reason, host: "h:1")).rpcError(timeout: 1).message
            #expect(message.hasPrefix("TLS connection to NeonCRM at h:1 failed (\(reason.rawValue)): "), "\(message)")
        }
    }

    @Test("the host of a URL: host and port only, never user info or path", arguments: [
        ("https://api.neoncrm.com/neonws/services/api/common/login", "api.neoncrm.com"),
        ("https://127.0.0.1:8443/neonws", "127.0.0.1:8443"),
        ("https://user:secret@example.com:1/x?q#f", "example.com:1"),
        ("https://example.com?x", "example.com"),
        ("example.com/x", "example.com"),
    ])
    func host(url: String, expected: String) {
        #expect(TLSFailure.host(of: url) == expected)
    }

    @Test("trust settings: --ca-file or NEON_AUTH_CA_FILE alone, else SSL_CERT_FILE with SSL_CERT_DIR, else SSL_CERT_DIR")
    func trustPrecedence() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("neon-auth-trust-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        for name in ["flag.pem", "env.pem", "ssl.pem"] {
            try Data(pem.utf8).write(to: URL(fileURLWithPath: dir + "/" + name))
        }
        let ssl: [String: String] = ["SSL_CERT_FILE": dir + "/ssl.pem", "SSL_CERT_DIR": dir]
        func trust(_ arguments: [String], _ environment: [String: String]) throws -> TrustSettings? {
            guard case .serve(let configuration) = try Configuration.parse(arguments: arguments, environment: EnvironmentVariables(environment)) else {
                Issue.record("not serve")
                return nil
            }
            return configuration.trust
        }
        #expect(try trust([], [:]) == nil)
        #expect(try trust(["--ca-file", dir + "/flag.pem"], ssl.merging(["NEON_AUTH_CA_FILE": dir + "/env.pem"]) { $1 })
                == TrustSettings(caFile: dir + "/flag.pem", caFileSource: "--ca-file"))
        #expect(try trust([], ssl.merging(["NEON_AUTH_CA_FILE": dir + "/env.pem"]) { $1 })
                == TrustSettings(caFile: dir + "/env.pem", caFileSource: "NEON_AUTH_CA_FILE"))
        #expect(try trust([], ssl) == TrustSettings(caFile: dir + "/ssl.pem", caFileSource: "SSL_CERT_FILE", caDirectory: dir))
        #expect(try trust([], ["SSL_CERT_DIR": dir + ":" + dir]) == TrustSettings(caDirectory: dir + ":" + dir))
        #expect(try trust([], ["SSL_CERT_FILE": "", "SSL_CERT_DIR": "", "NEON_AUTH_CA_FILE": ""]) == nil, "empty means unset")
        // The header is found wherever it is in the first MiB, across the slices the file is read in.
        let late = dir + "/late.pem"
        try Data((String(repeating: "#", count: (16 << 10) - 10) + pem).utf8).write(to: URL(fileURLWithPath: late))
        #expect(try trust(["--ca-file", late], [:]) == TrustSettings(caFile: late, caFileSource: "--ca-file"))
        let tooLate = dir + "/too-late.pem"
        try Data((String(repeating: "#", count: (1 << 20) + 1) + pem).utf8).write(to: URL(fileURLWithPath: tooLate))
        #expect(throws: ConfigurationError.self) { try Configuration.parse(arguments: ["--ca-file", tooLate], environment: [:]) }
        // A relative path is made absolute against the working directory.
        #expect(TrustSettings.absolute("flag.pem") == FileManager.default.currentDirectoryPath + "/flag.pem")
        #expect(TrustSettings.absolute("/a/b.pem") == "/a/b.pem")
        // Refused: missing, not a file, no PEM certificate, a directory that does not open.
        try Data("junk".utf8).write(to: URL(fileURLWithPath: dir + "/junk.pem"))
        let refused: [([String], [String: String], String)] = [
            (["--ca-file", dir + "/missing.pem"], [:], "--ca-file: cannot use CA file \(dir)/missing.pem: No such file or directory"),
            (["--ca-file", dir], [:], "--ca-file: CA file \(dir) is not a regular file"),
            ([], ["NEON_AUTH_CA_FILE": dir + "/junk.pem"], "NEON_AUTH_CA_FILE: CA file \(dir)/junk.pem holds no PEM certificate"),
            ([], ["SSL_CERT_DIR": dir + "/none"], "SSL_CERT_DIR: cannot open CA directory \(dir)/none: No such file or directory"),
        ]
        for (arguments, environment, message) in refused {
            #expect { try Configuration.parse(arguments: arguments, environment: EnvironmentVariables(environment)) } throws: { error in
                "\(error)".hasPrefix(message)
            }
        }
    }

    @Test("CURL_CA_BUNDLE is named at start-up only when no CA file is in use")
    func curlBundleWarning() {
        let trust = TrustSettings(caFile: "/ca.pem", caFileSource: "--ca-file")
        #expect(TrustSettings.ignoredVariablesWarning(environment: [:], trust: nil) == nil)
        #expect(TrustSettings.ignoredVariablesWarning(environment: ["CURL_CA_BUNDLE": "/x.pem"], trust: trust) == nil)
        let warning = TrustSettings.ignoredVariablesWarning(environment: ["CURL_CA_BUNDLE": "/x.pem"], trust: nil)
        #expect(warning?.contains("--ca-file") == true && warning?.contains("system's CA store") == true)
    }

    @Test("the agent gets the trust settings as flags, which name it: another CA file, another agent")
    func agentSettings() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("neon-auth-agent-trust-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        for name in ["a.pem", "b.pem"] { try Data(pem.utf8).write(to: URL(fileURLWithPath: dir + "/" + name)) }
        func settings(_ arguments: [String], _ environment: [String: String]) throws -> AgentSettings {
            guard case .serve(let configuration) = try Configuration.parse(arguments: arguments, environment: EnvironmentVariables(environment)) else {
                throw ConfigurationError("not serve")
            }
            return configuration.agentSettings
        }
        let none = try settings([], [:])
        let a = try settings(["--ca-file", dir + "/a.pem"], [:])
        let aByVariable = try settings([], ["NEON_AUTH_CA_FILE": dir + "/a.pem"])
        let b = try settings(["--ca-file", dir + "/b.pem"], [:])
        let sslPair = try settings([], ["SSL_CERT_FILE": dir + "/a.pem", "SSL_CERT_DIR": dir])
        #expect(!none.arguments.contains("--ca-file") && !none.arguments.contains("--ca-directory"))
        #expect(a.arguments.suffix(2) == ["--ca-file", dir + "/a.pem"])
        #expect(sslPair.arguments.suffix(4) == ["--ca-file", dir + "/a.pem", "--ca-directory", dir])
        #expect(a.digest == aByVariable.digest, "the same file, however given: the same agent")
        #expect(Set([none.digest, a.digest, b.digest, sslPair.digest]).count == 4)
        // What the agent makes of them (it parses its flags without an environment).
        func agentTrust(_ arguments: [String]) throws -> TrustSettings? {
            var rest = arguments
            var directory: String?
            if let index = rest.firstIndex(of: "--ca-directory") {
                directory = rest[index + 1]
                rest.removeSubrange(index...(index + 1))
            }
            guard case .serve(let configuration) = try Configuration.parse(arguments: rest, environment: [:]) else { return nil }
            return try TrustSettings.agent(parsed: configuration.trust, caDirectory: directory)
        }
        #expect(try agentTrust(sslPair.arguments) == TrustSettings(caFile: dir + "/a.pem", caFileSource: "--ca-file", caDirectory: dir))
        #expect(try agentTrust(try settings([], ["SSL_CERT_DIR": dir]).arguments) == TrustSettings(caDirectory: dir))
        #expect(try agentTrust(none.arguments) == nil)
        #expect(throws: ConfigurationError.self) { try TrustSettings.agent(parsed: nil, caDirectory: dir + "/none") }
    }
}
