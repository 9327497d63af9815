import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Synchronization
import Testing
import JSONRPC

/// The repository root (this file is `Tests/EndToEndTests/Harness.swift`).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Every neon-auth a test starts, however it starts it, uses a private agent unless the test
/// asks for the shared one in a runtime directory of its own (``RuntimeDirectory``).
private let privateAgentsByDefault: Void = {
    if getenv("NEON_AUTH_AGENT") == nil { setenv("NEON_AUTH_AGENT", "private", 1) }
}()

/// The built `neon-auth` binary: `NEON_AUTH_BIN`, else the one beside this test bundle.
func neonAuthBinary() throws -> String {
    _ = privateAgentsByDefault
    if let path = ProcessInfo.processInfo.environment["NEON_AUTH_BIN"], !path.isEmpty { return path }
    let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    var dir = exe.deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("neon-auth").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    let fallback = repositoryRoot.appendingPathComponent(".build/debug/neon-auth").path
    guard FileManager.default.isExecutableFile(atPath: fallback) else {
        throw HarnessError("neon-auth binary not found: build it first (swift build) or set NEON_AUTH_BIN")
    }
    return fallback
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Collects bytes from a pipe on a background thread; lets tests wait for lines with a deadline.
final class PipeCollector: Sendable {
    private struct State { var buffer: [UInt8] = []; var consumed = 0; var closed = false }
    private let state = Mutex(State())
    private let condition = NSCondition()

    init(_ handle: FileHandle) {
        let thread = Foundation.Thread { [self] in
            while true {
                let data = handle.availableData
                condition.lock()
                state.withLock { s in
                    if data.isEmpty { s.closed = true } else { s.buffer.append(contentsOf: data) }
                }
                condition.broadcast()
                condition.unlock()
                if data.isEmpty { return }
            }
        }
        thread.start()
    }

    /// Everything received so far.
    var all: [UInt8] { state.withLock { $0.buffer } }
    var text: String { String(decoding: all, as: UTF8.self) }
    var isClosed: Bool { state.withLock { $0.closed } }

    /// The next whole line (without `\n`), or `nil` if none arrives within `timeout` seconds.
    func nextLine(timeout: Double = 10) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            let line = state.withLock { s -> String? in
                guard let nl = s.buffer[s.consumed...].firstIndex(of: 0x0A) else { return nil }
                let line = String(decoding: s.buffer[s.consumed..<nl], as: UTF8.self)
                s.consumed = nl + 1
                return line
            }
            if let line { return line }
            if state.withLock({ $0.closed }) { return nil }
            if !condition.wait(until: deadline) { return nil }
        }
    }

    /// Waits until the pipe is closed (the writer exited), up to `timeout` seconds.
    func waitClosed(timeout: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while !state.withLock({ $0.closed }) {
            if !condition.wait(until: deadline) { return state.withLock { $0.closed } }
        }
        return true
    }

    /// Bytes not yet returned by `nextLine`.
    var unread: String { state.withLock { String(decoding: $0.buffer[$0.consumed...], as: UTF8.self) } }
}

/// A running neon-auth process with pipes on stdin, stdout and stderr.
final class NeonAuthProcess {
    let process = Process()
    let stdin = Pipe()
    /// The raw stdout pipe (tests that read slowly use it instead of `stdout`).
    let stdoutPipe = Pipe()
    let stderrPipe = Pipe()
    private var stdoutCollector: PipeCollector?
    private var stderrCollector: PipeCollector?
    var stdout: PipeCollector { stdoutCollector! }
    var stderr: PipeCollector { stderrCollector! }

    /// - Parameters:
    ///   - collectOutput: read stdout and stderr in the background (off: the test reads or
    ///     ignores them itself, e.g. to play a slow or absent reader).
    ///   - executable: the binary to run (default: ``neonAuthBinary()``).
    ///   - unset: environment variables removed from what the process inherits (e.g. `HOME`).
    ///   - directory: the working directory (default: the test's).
    init(arguments: [String], environment: [String: String] = [:], unset: [String] = [], directory: String? = nil,
         collectOutput: Bool = true, executable: String? = nil) throws {
        process.executableURL = URL(fileURLWithPath: try executable ?? neonAuthBinary())
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("NEON_") }
        // A private agent unless a test asks for the shared one (in a runtime directory of its
        // own): no test ever meets a user's agent or leaves one behind.
        env["NEON_AUTH_AGENT"] = "private"
        env.merge(environment) { $1 }
        for name in unset { env[name] = nil }
        process.environment = env
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        process.standardInput = stdin
        process.standardOutput = stdoutPipe
        process.standardError = stderrPipe
        try process.run()
        if collectOutput {
            stdoutCollector = PipeCollector(stdoutPipe.fileHandleForReading)
            stderrCollector = PipeCollector(stderrPipe.fileHandleForReading)
        }
    }

    /// Request lines written so far (for the transcript).
    private var sentText = ""

    /// Writes raw bytes to stdin.
    func write(_ text: String) {
        sentText += text
        stdin.fileHandleForWriting.write(Data(text.utf8))
    }
    func writeBytes(_ bytes: [UInt8]) {
        sentText += String(decoding: bytes, as: UTF8.self)
        stdin.fileHandleForWriting.write(Data(bytes))
    }

    /// Writes one request line.
    func send(_ json: String) { write(json + "\n") }

    /// Closes stdin (end of input).
    func closeInput() { try? stdin.fileHandleForWriting.close() }

    /// The next response line parsed, failing the test if none arrives in time.
    func response(timeout: Double = 10, sourceLocation: SourceLocation = #_sourceLocation) throws -> JSONValue {
        guard let line = stdout.nextLine(timeout: timeout) else {
            throw HarnessError("no response within \(timeout) s; stderr: \(stderr.text)")
        }
        return try JSONReader.parse(line)
    }

    /// Waits for exit (bounded) and returns the status; kills the process if it does not exit.
    func waitForExit(timeout: Double = 15) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            process.terminate()
            kill(process.processIdentifier, SIGKILL)
            return nil
        }
        _ = stdoutCollector?.waitClosed(timeout: 2)
        _ = stderrCollector?.waitClosed(timeout: 2)
        appendTranscript()
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    /// When `NEON_AUTH_TRANSCRIPT` names a file, appends every response line with the request
    /// line it answers (`{"request": text|null, "response": text}` per line), so that
    /// Tests/python can validate every response against schemas/openrpc.json. A response whose
    /// request cannot be told apart (duplicate ids with different methods) is left out; an error
    /// with id null is recorded without a request.
    private func appendTranscript() {
        guard let path = ProcessInfo.processInfo.environment["NEON_AUTH_TRANSCRIPT"], !path.isEmpty,
              let out = stdoutCollector?.text, !out.hasPrefix("Content-Length") else { return }
        /// The ids a message carries (a batch: those of its elements that have one).
        func ids(_ value: JSONValue) -> Set<String> {
            if case .array(let items) = value { return Set(items.compactMap { $0["id"].map(JSONWriter.string) }) }
            return value["id"].map { [JSONWriter.string($0)] } ?? []
        }
        func methods(_ value: JSONValue) -> String {
            if case .array(let items) = value { return JSONWriter.string(.array(items.map { $0["method"] ?? .null })) }
            return value["method"]?.stringValue ?? ""
        }
        let requests = sentText.split(separator: "\n").compactMap { line -> (text: String, value: JSONValue)? in
            guard let value = try? JSONReader.parse(String(line)) else { return nil }
            return (String(line), value)
        }
        var entries = ""
        for line in out.split(separator: "\n") {
            guard let response = try? JSONReader.parse(String(line)) else { continue }
            var responseIds = ids(response)
            let isBatch: Bool
            if case .array = response { isBatch = true; responseIds.remove("null") } else { isBatch = false }
            let candidates = requests.filter { request in
                let requestIsBatch: Bool
                if case .array = request.value { requestIsBatch = true } else { requestIsBatch = false }
                return requestIsBatch == isBatch && (isBatch ? responseIds.isSubset(of: ids(request.value)) : ids(request.value) == responseIds)
            }
            let request: String?
            if Set(candidates.map { methods($0.value) }).count == 1 {
                request = candidates.last?.text
            } else if response["error"] != nil && response["id"] == .null {
                request = nil
            } else {
                continue  // ambiguous or unknown: leave it out rather than pair it wrongly
            }
            let entry: JSONValue = ["request": request.map(JSONValue.string) ?? .null, "response": .string(String(line))]
            entries += JSONWriter.string(entry) + "\n"
        }
        guard let handle = FileHandle(forWritingAtPath: path) ?? {
            _ = FileManager.default.createFile(atPath: path, contents: nil)
            return FileHandle(forWritingAtPath: path)
        }() else { return }
        handle.seekToEndOfFile()
        handle.write(Data(entries.utf8))
        try? handle.close()
    }
}

/// The fake NeonCRM (`scripts/fake_neoncrm.py`) on a loopback port.
final class FakeNeonCRM {
    let process = Process()
    let base: String
    let v1: String
    let v2: String
    /// The https side (with `--tls-cert`/`--tls-key` among the arguments): its base, v1 and v2
    /// URLs and port. The control API stays at `base` (plain http).
    let tls: (base: String, v1: String, v2: String, port: Int)?

    init(accounts: [(String, String)], extraArguments: [String] = []) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        var arguments = ["python3", repositoryRoot.appendingPathComponent("scripts/fake_neoncrm.py").path, "--port", "0"]
        for (org, key) in accounts { arguments += ["--account", "\(org):\(key)"] }
        process.arguments = arguments + extraArguments
        let out = Pipe()
        process.standardOutput = out
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let collector = PipeCollector(out.fileHandleForReading)
        guard let line = collector.nextLine(timeout: 20) else { throw HarnessError("fake NeonCRM did not start") }
        let info = try JSONReader.parse(line)
        guard let base = info["base"]?.stringValue, let v1 = info["v1"]?.stringValue, let v2 = info["v2"]?.stringValue else {
            throw HarnessError("fake NeonCRM ready line unreadable: \(line)")
        }
        self.base = base
        self.v1 = v1
        self.v2 = v2
        if let tls = info["tls"], let base = tls["base"]?.stringValue, let v1 = tls["v1"]?.stringValue,
           let v2 = tls["v2"]?.stringValue, case .number(let port)? = tls["port"], let number = Int(port) {
            self.tls = (base, v1, v2, number)
        } else {
            self.tls = nil
        }
    }

    /// The fake serving https too, with the test certificate `certificate` (see
    /// ``TestCertificates``) and any further fake arguments.
    convenience init(accounts: [(String, String)], certificate: String, extraArguments: [String] = []) throws {
        let certs = try TestCertificates.shared()
        try self.init(accounts: accounts, extraArguments: ["--tls-cert", certs.cert(certificate), "--tls-key", certs.key(certificate)]
                      + extraArguments)
    }

    /// A number from `/_control/stats` that is not per org (e.g. `tlsConnections`).
    func stat(_ name: String) throws -> Int {
        guard case .number(let n)? = try control("stats")[name] else { return -1 }
        return Int(n) ?? -1
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// neon-auth arguments pointing at this fake.
    var neonAuthArguments: [String] { ["--v1-base-url", v1, "--v2-base-url", v2] }

    /// Sends a control request and returns the parsed JSON answer.
    @discardableResult
    func control(_ path: String, body: String? = nil) throws -> JSONValue {
        let (status, data) = try http(method: body == nil ? "GET" : "POST", url: base + "/_control/" + path, body: body)
        guard status == 200 else { throw HarnessError("control \(path): HTTP \(status)") }
        return try JSONReader.parse(data)
    }

    /// A counter from `/_control/stats` (e.g. `logins`, `logouts`) for `org`.
    func count(_ name: String, org: String) throws -> Int {
        let stats = try control("stats")
        guard case .number(let n)? = stats[name]?[org] else { return 0 }
        return Int(n) ?? -1
    }
}

/// A blocking HTTP request (tests only).
func http(method: String, url: String, headers: [String: String] = [:], body: String? = nil) throws -> (Int, [UInt8]) {
    var request = URLRequest(url: URL(string: url)!, timeoutInterval: 10)
    request.httpMethod = method
    for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
    if let body {
        request.httpBody = Data(body.utf8)
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
    }
    let result = Mutex<(Int, [UInt8])?>(nil)
    let done = DispatchSemaphore(value: 0)
    URLSession.shared.dataTask(with: request) { data, response, _ in
        result.withLock { $0 = ((response as? HTTPURLResponse)?.statusCode ?? 0, [UInt8](data ?? Data())) }
        done.signal()
    }.resume()
    guard done.wait(timeout: .now() + 15) == .success, let value = result.withLock({ $0 }) else {
        throw HarnessError("HTTP \(method) \(url) did not complete")
    }
    return value
}

/// The test CA and certificates of `scripts/tls_test_certs.py`, made once per test process in
/// a temporary directory (openssl CLI).
final class TestCertificates: Sendable {
    let directory: String
    private let paths: [String: String]

    private init() throws {
        directory = NSTemporaryDirectory() + "neon-auth-test-certs-\(getpid())"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", repositoryRoot.appendingPathComponent("scripts/tls_test_certs.py").path, directory]
        let out = Pipe()
        process.standardOutput = out
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0, case .object(let object) = try JSONReader.parse([UInt8](data)) else {
            throw HarnessError("scripts/tls_test_certs.py failed (is the openssl command installed?)")
        }
        // Removed when the test process exits (atexit takes no context: the name is the pid's).
        atexit { try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "neon-auth-test-certs-\(getpid())") }
        paths = Dictionary(uniqueKeysWithValues: object.members.compactMap { member in member.value.stringValue.map { (member.key, $0) } })
    }

    private static let made = Mutex<Result<TestCertificates, HarnessError>?>(nil)

    /// The certificates, made on first use.
    static func shared() throws -> TestCertificates {
        try made.withLock { made in
            if made == nil {
                do { made = .success(try TestCertificates()) } catch {
                    made = .failure(error as? HarnessError ?? HarnessError("\(error)"))
                }
            }
            return try made!.get()
        }
    }

    /// The test CA's certificate (what `--ca-file` points at).
    var ca: String { paths["ca"]! }
    /// A CA certificate nobody is told to trust.
    var otherCA: String { paths["other-ca"]! }
    /// An OpenSSL hashed directory holding the test CA (for SSL_CERT_DIR).
    var caDirectory: String { paths["ca-dir"]! }
    /// Certificate and key files of the leaf `name` (good, untrusted, self-signed, wrong-host,
    /// expired, not-yet-valid).
    func cert(_ name: String) throws -> String {
        guard let path = paths[name + ".cert"] else { throw HarnessError("no test certificate \(name)") }
        return path
    }
    func key(_ name: String) throws -> String {
        guard let path = paths[name + ".key"] else { throw HarnessError("no test key \(name)") }
        return path
    }
}
