import Foundation
import Testing
import JSONRPC

/// The shared objects mapped into process `pid` (paths from `/proc/<pid>/maps`), or `nil` if
/// they cannot be read. neon-auth is non-dumpable, so only root (CAP_SYS_PTRACE) may read them.
func mappedLibraries(pid: Int32) -> Set<String>? {
    // read(2) to the end: /proc files report size 0, so size-based readers may stop short.
    let fd = open("/proc/\(pid)/maps", O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { return nil }
        if n == 0 { break }
        bytes += chunk[0..<n]
    }
    let text = String(decoding: bytes, as: UTF8.self)
    guard !text.isEmpty else { return nil }
    return Set(text.split(separator: "\n").compactMap { line in
        line.split(separator: " ", omittingEmptySubsequences: true).last.flatMap { $0.hasPrefix("/") ? String($0) : nil }
    })
}

/// Libraries the front-end must never map: networking and every part of Foundation (the agent
/// makes every NeonCRM call; their loading is most of the start-up time they would add).
let agentOnlyLibraries = ["libFoundationNetworking.so", "libcurl", "libFoundation.so", "lib_FoundationICU.so",
                          "libFoundationEssentials.so", "libFoundationInternationalization.so"]

/// Shared libraries the front-end links statically instead (prefixes of mapped file names).
let frontEndStaticLibraries = ["libswift", "libdispatch.so", "libBlocksRuntime.so", "libstdc++.so", "libgcc_s.so"]

@Suite("End to end: the front-end signs alone and leaves HTTP to its agent", .serialized)
struct FrontEndTests {
    @Test("neon-auth without neon-auth-agent: openSession gets -32006 naming what is missing, sign still works")
    func missingAgent() throws {
        let dir = try TempDir()
        let binary = dir.path + "/neon-auth"
        try FileManager.default.copyItem(atPath: try neonAuthBinary(), toPath: binary)
        let key = "SENTINEL-agent-k:e+y/=%&é"
        for mode in ["private", "shared"] {
            let runtime = try RuntimeDirectory()
            let neon = try NeonAuthProcess(arguments: ["--v1-base-url", "http://127.0.0.1:9/neonws/services/api", "--log-level", "debug"],
                                           environment: ["NEON_AUTH_AGENT": mode, "XDG_RUNTIME_DIR": runtime.path], executable: binary)
            neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"\#(key)"}}"#)
            let failed = try neon.response()
            #expect(failed["id"] == 1)
            #expect(failed["error"]?["code"] == .number("-32006"), "\(failed)")
            let message = try #require(failed["error"]?["message"]?.stringValue)
            #expect(message.contains("neon-auth-agent was not found beside neon-auth"), "\(message)")
            #expect(failed["error"]?["data"]?["retryable"] == .bool(false))
            // The process keeps serving.
            neon.send(#"{"jsonrpc":"2.0","id":2,"method":"sign","params":{"orgId":"acme","apiKey":"\#(key)"}}"#)
            #expect(try neon.response()["result"]?["authorization"]?.stringValue == basic("acme", key))
            neon.closeInput()
            #expect(neon.waitForExit() == 0)
            let stderr = neon.stderr.text
            expectNoSecret(stderr, [key])
            for form in secretForms(org: "acme", key: key) { #expect(!stderr.contains(form)) }
        }
    }

    @Test("the front-end maps no networking or Foundation library, before or after openSession; its agent does the HTTP",
          .enabled(if: getuid() == 0, "reading a non-dumpable process's /proc/<pid>/maps needs root (CAP_SYS_PTRACE)"))
    func noFoundationInTheFrontEnd() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments)
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign","params":{"orgId":"acme","apiKey":"\#(acmeKey)"}}"#)
        #expect(try neon.response()["result"] != nil)
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"openSession","params":{"orgId":"acme","apiKey":"\#(acmeKey)"}}"#)
        #expect(try neon.response()["result"]?["reused"] == false)
        let maps = try #require(mappedLibraries(pid: neon.process.processIdentifier))
        #expect(maps.contains { $0.hasSuffix("/libc.so.6") }, "the maps were read")
        // Its Swift runtime, libstdc++ and libgcc are linked in (Package.swift): the dynamic
        // loader maps libc and libm only.
        for library in frontEndStaticLibraries {
            #expect(!maps.contains { $0.contains("/" + library) }, "\(library) is mapped in the front-end: it should be linked statically")
        }
        for library in agentOnlyLibraries {
            #expect(!maps.contains { $0.contains("/" + library) }, "\(library) is mapped in the front-end (after removing an import, an incremental debug build can keep a stale autolink entry: rm -rf .build)")
        }
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        #expect(try fake.count("logouts", org: "acme") == 1, "the private agent logged out at exit")
    }
}

extension FrontEndTests {
    @Test("after a sign, waiting for input, the front-end runs two threads: the reader and the signal thread (the output writer starts only when output backs up)",
          .enabled(if: getuid() == 0, "a non-dumpable process's /proc/<pid>/task needs root"))
    func threadsAtStartUp() throws {
        let neon = try NeonAuthProcess(arguments: [])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign","params":{"orgId":"acme","apiKey":"\#(acmeKey)"}}"#)
        #expect(try neon.response()["result"] != nil)
        // The signal thread starts once the reader has waited a few milliseconds for input.
        var tasks: [String] = []
        for _ in 0..<200 {
            tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(neon.process.processIdentifier)/task")
            if tasks.count >= 2 { break }
            usleep(10_000)
        }
        usleep(50_000)
        tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(neon.process.processIdentifier)/task")
        #expect(tasks.count == 2, "threads: \(tasks)")
        // Output the pipe cannot take at once still gets out (through the writer thread).
        let many = (2...400).map { #"{"jsonrpc":"2.0","id":\#($0),"method":"sign","params":{"orgId":"acme","apiKey":"\#(acmeKey)"}}"# }
        neon.write(many.joined(separator: "\n") + "\n")
        for _ in many { #expect(try neon.response()["result"] != nil) }
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("a request and end of input already waiting on stdin are answered without any thread but the reader (no signal thread to start and stop)",
          .enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/strace"), "strace of a non-dumpable process needs root"))
    func noThreadForAPipedRequest() throws {
        let dir = NSTemporaryDirectory() + "neon-auth-strace-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let input = dir + "/request.json"
        try (#"{"jsonrpc":"2.0","id":1,"method":"sign","params":{"orgId":"acme","apiKey":"\#(acmeKey)"}}"# + "\n").write(toFile: input, atomically: true, encoding: .utf8)
        // The signal thread also starts once the process has run for a few milliseconds, which
        // a loaded machine (and strace) can make it do: one run of three without is enough.
        var traces: [String] = []
        for attempt in 0..<3 {
            let trace = dir + "/trace-\(attempt)"
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/strace")
            process.arguments = ["-f", "-e", "trace=clone,clone3", "-o", trace, try neonAuthBinary()]
            process.standardInput = FileHandle(forReadingAtPath: input)
            let stdout = Pipe()
            process.standardOutput = stdout
            process.standardError = FileHandle.nullDevice
            let out = PipeCollector(stdout.fileHandleForReading)
            try process.run()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
            #expect(out.waitClosed(timeout: 5) && out.text.contains(#""authorization":"Basic "#), "\(out.text)")
            let calls = (try? String(contentsOfFile: trace, encoding: .utf8)) ?? ""
            if !calls.contains("clone") { return }
            traces.append(calls)
        }
        Issue.record("a thread was started in every run: \(traces)")
    }

    @Test("a SIGTERM at once after the first answer, before the process has waited for input, is still a graceful stop")
    func signalBeforeTheFirstWait() throws {
        for round in 0..<5 {
            let neon = try NeonAuthProcess(arguments: ["--log-level", "info"])
            neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign","params":{"orgId":"acme","apiKey":"\#(acmeKey)"}}"#)
            #expect(try neon.response()["result"] != nil)
            if round > 0 { usleep(useconds_t(round * 1_500)) }  // around the signal thread's start
            kill(neon.process.processIdentifier, SIGTERM)
            #expect(neon.waitForExit(timeout: 10) == 0, "round \(round)")
            #expect(neon.stderr.text.contains("shutting down (SIGTERM)"), "round \(round): \(neon.stderr.text)")
        }
    }
}

/// A runtime directory of a test's own (`XDG_RUNTIME_DIR`, mode 0700): its agents never meet a
/// user's or another test's. Every agent still serving there is stopped at deinit.
final class RuntimeDirectory {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "neon-auth-run-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        chmod(path, 0o700)
    }
    deinit {
        for pid in agentPids() { kill(pid, SIGKILL) }
        try? FileManager.default.removeItem(atPath: path)
    }

    /// The agent processes serving sockets in this directory (by their command line; zombies excluded).
    func agentPids() -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
                  let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
            let args = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            let state = stat.split(separator: ")").last?.split(separator: " ").first
            return state != "Z" && args.first?.hasSuffix("neon-auth-agent") == true && args.contains { $0.hasPrefix(path) }
        }
    }
}
