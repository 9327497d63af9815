import Foundation
import Testing
import JSONRPC
@testable import NeonAuth

/// Random strings over a mix of ASCII, reserved characters and multi-byte scalars.
private func randomStrings(count: Int, seed: UInt64) -> [String] {
    var state = seed
    func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    let pool: [Character] = Array("aZ09-._~ !\"#$%&'()*+,/:;<=>?@[\\]^`{|}\tKkéÉßİı€🔑\u{212A}\u{0301}")
    return (0..<count).map { _ in String((0..<Int(next() % 24)).map { _ in pool[Int(next() % UInt64(pool.count))] }) }
}

@Suite("Without Foundation: percent-encoding and redaction agree with Foundation")
struct FoundationFreeTests {
    @Test("FormEncoding.escape equals Foundation's percent-encoding with RFC 3986's unreserved set")
    func escapeMatchesFoundation() {
        let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        for text in randomStrings(count: 2000, seed: 1) + ["", "a+b/c=d&e%f:g é", "\u{0}\u{7F}"] {
            #expect(FormEncoding.escape(text) == text.addingPercentEncoding(withAllowedCharacters: unreserved), "\(Array(text.utf8))")
            #expect(FormEncoding.escape(text, keeping: FormEncoding.isQueryAllowed)
                    == text.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed), "\(Array(text.utf8))")
        }
    }

    @Test("base64 equals Foundation's")
    func base64MatchesFoundation() {
        for text in randomStrings(count: 500, seed: 2) {
            #expect(BasicAuth.base64(Array(text.utf8)) == Data(text.utf8).base64EncodedString())
        }
    }

    @Test("redaction replaces every case-insensitive occurrence, as Foundation's replacingOccurrences did, for ASCII")
    func redactionMatchesFoundation() {
        let forms = ["abcd", "AbC+", "k%3Ae", "a=b=", "zzzz"]
        let texts = randomStrings(count: 1000, seed: 3).map { $0.filter(\.isASCII) }
            + ["xxABCDyyabcdzz", "aBcDaBcD", "abcabcd", "K%3aE and k%3Ae", "a=B=a=b="]
        for text in texts {
            for form in forms {
                let expected = text.replacingOccurrences(of: form, with: "<redacted>", options: .caseInsensitive)
                #expect(NeonError.redacting(form, in: text) == expected, "\(text) / \(form)")
            }
        }
    }

    @Test("redaction matches non-ASCII keys case-insensitively and never misses the raw key")
    func redactionNonASCII() {
        #expect(NeonError.redacting("clé-ÜNÏ", in: "x CLÉ-üNï y clé-ÜNÏ") == "x <redacted> y <redacted>")
        for text in randomStrings(count: 300, seed: 4) where text.unicodeScalars.count >= 4 {
            let key = String(text.unicodeScalars.prefix(4))
            #expect(!NeonError.redacting(key, in: "(" + text + ")").contains(key))
        }
    }

    @Test("loopback hosts without CharacterSet", arguments: [("[::1]", true), ("LOCALHOST", true), ("127.1.2.3", true),
                                                             ("[0:0:0:0:0:0:0:1]", true), ("128.0.0.1", false), ("[::2]", false)])
    func loopback(host: String, expected: Bool) {
        #expect(BaseURLPolicy.isLoopback(host) == expected)
    }
}

/// A loopback TCP listener that accepts connections (in the kernel backlog) and never answers.
private final class SilentListener: Sendable {
    let fd: Int32
    let port: UInt16

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            close(fd)
            throw POSIXError(.EADDRINUSE)
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.fd = fd
        port = UInt16(bigEndian: address.sin_port)
    }

    deinit { close(fd) }
}

@Suite("PluginHTTPClient: loading the HTTP plugin and the C ABI", .serialized)
struct PluginHTTPClientTests {
    @Test("a missing plugin fails the call with -32006 naming every path searched; nothing is sent")
    func missingPlugin() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("neon-auth-no-plugin-\(getpid())").path
        let path = dir + "/libNeonAuthHTTP.so"
        let client = PluginHTTPClient(connectTimeout: 1, explicitPath: path, searchDefaultLocations: false)
        #expect(client.missingPluginWarning()?.contains(path) == true)
        let failure = HTTPPluginFailure(searched: [path], reason: "was not found")
        for _ in 0..<2 {  // the failure is remembered, not retried
            await #expect(throws: HTTPFailure.pluginUnavailable(failure)) {
                try await client.postForm(url: "http://127.0.0.1:9/x", form: [("login.apiKey", "SENTINEL")], timeout: 1)
            }
        }
        let api = NeonV1API(baseURL: "http://127.0.0.1:9/neonws/services/api", http: client, timeout: 1)
        let credential = Credential(orgId: "acme", apiKey: Secret("SENTINEL-plugin-key"))
        await #expect(throws: NeonError.httpPluginUnavailable(failure)) { try await api.login(credential) }
        let error = NeonError.httpPluginUnavailable(failure).rpcError(timeout: 1, redacting: credential)
        #expect(error.code.rawValue == -32006)
        #expect(error.message.contains("libNeonAuthHTTP.so was not found") && error.message.contains(path))
        #expect(error.data == ["retryable": false, "searched": [.string(path)], "reason": "was not found"])
        #expect(!NeonError.httpPluginUnavailable(failure).isTransient)
    }

    @Test("a file that is not a loadable library: the loader's message, and no search past it")
    func unloadablePlugin() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("libNeonAuthHTTP-garbage-\(getpid()).so").path
        try Data("not an ELF file".utf8).write(to: URL(fileURLWithPath: path))
        defer { unlink(path) }
        let client = PluginHTTPClient(connectTimeout: 1, explicitPath: path)
        #expect(client.missingPluginWarning() == nil)
        do {
            _ = try await client.postForm(url: "http://127.0.0.1:9/x", form: [], timeout: 1)
            Issue.record("expected the plugin to fail to load")
        } catch {
            guard case .pluginUnavailable(let failure) = error else { Issue.record("got \(error)"); return }
            #expect(failure.searched == [path])
            #expect(failure.reason.hasPrefix("could not be loaded from \(path): "))
        }
    }

    /// The client over the plugin built beside this test bundle.
    private func builtPluginClient(connectTimeout: Double = 5) throws -> PluginHTTPClient {
        let client = PluginHTTPClient(connectTimeout: connectTimeout)
        try #require(client.missingPluginWarning() == nil, "build the plugin first (swift build --build-tests)")
        return client
    }

    @Test("through the built plugin: a refused connection is unreachable")
    func refused() async throws {
        let client = try builtPluginClient()
        await #expect(throws: HTTPFailure.unreachable) {
            try await client.postForm(url: "http://127.0.0.1:9/neonws/services/api/common/login", form: [("a", "b")], timeout: 5)
        }
    }

    @Test("through the built plugin: a silent server hits the hard deadline (timedOut), not later")
    func deadline() async throws {
        let listener = try SilentListener()
        let client = try builtPluginClient()
        let start = ContinuousClock.now
        await #expect(throws: HTTPFailure.timedOut) {
            try await client.postForm(url: "http://127.0.0.1:\(listener.port)/x", form: [("a", "b")], timeout: 0.5)
        }
        let elapsed = ContinuousClock.now - start
        #expect(elapsed >= .milliseconds(450) && elapsed < .seconds(3), "\(elapsed)")
    }

    @Test("through the built plugin: cancelling the task cancels the exchange at once")
    func cancellation() async throws {
        let listener = try SilentListener()
        let client = try builtPluginClient()
        let task = Task { try await client.postForm(url: "http://127.0.0.1:\(listener.port)/x", form: [], timeout: 10) }
        try await Task.sleep(for: .milliseconds(200))
        let start = ContinuousClock.now
        task.cancel()
        await #expect(throws: HTTPFailure.cancelled) { try await task.value }
        #expect(ContinuousClock.now - start < .seconds(2))
        // Cancelled before it starts: no exchange at all.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await client.postForm(url: "http://127.0.0.1:\(listener.port)/x", form: [], timeout: 10)
        }
        await #expect(throws: HTTPFailure.cancelled) { try await early.value }
    }

    @Test("through the built plugin: many concurrent exchanges each complete exactly once")
    func concurrent() async throws {
        let client = try builtPluginClient()
        try await withThrowingTaskGroup(of: HTTPFailure?.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    do throws(HTTPFailure) {
                        _ = try await client.postForm(url: "http://127.0.0.1:9/x", form: [("k", "v")], timeout: 5)
                        return nil
                    } catch {
                        return error
                    }
                }
            }
            var count = 0
            for try await failure in group {
                #expect(failure == .unreachable)
                count += 1
            }
            #expect(count == 50)
        }
    }
}
