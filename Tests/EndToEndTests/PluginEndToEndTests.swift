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

/// The libraries whose loading the HTTP plugin defers.
/// Libraries a process that has not yet made an API v1 call must not have mapped: networking,
/// and every part of Foundation (their loading is most of the start-up time they would add).
let deferredLibraries = ["libFoundationNetworking.so", "libcurl", "libNeonAuthHTTP.so", "libFoundation.so", "lib_FoundationICU.so",
                           "libFoundationEssentials.so", "libFoundationInternationalization.so"]

@Suite("End to end: the HTTP plugin is loaded on the first openSession only", .serialized)
struct PluginEndToEndTests {
    @Test("the binary alone (no plugin): openSession gets -32006 naming the paths searched, a start-up warning, sign still works")
    func missingPlugin() throws {
        let dir = try TempDir()
        // bin/ in a directory of its own, so that ../lib/neon-auth/ is ours too (and empty).
        let bin = dir.path + "/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        let binary = bin + "/neon-auth"
        try FileManager.default.copyItem(atPath: try neonAuthBinary(), toPath: binary)
        let real = URL(fileURLWithPath: dir.path).resolvingSymlinksInPath().path
        let searched = [real + "/bin/libNeonAuthHTTP.so", real + "/lib/neon-auth/libNeonAuthHTTP.so"]

        let key = "SENTINEL-plugin-k:e+y/=%&é"
        let neon = try NeonAuthProcess(arguments: ["--v1-base-url", "http://127.0.0.1:9/neonws/services/api", "--log-level", "debug"],
                                       executable: binary)
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession","params":{"orgId":"acme","apiKey":"\#(key)"}}"#)
        let failed = try neon.response()
        #expect(failed["id"] == 1)
        #expect(failed["error"]?["code"] == .number("-32006"))
        let message = try #require(failed["error"]?["message"]?.stringValue)
        #expect(message.contains("HTTP plugin libNeonAuthHTTP.so was not found"))
        for path in searched { #expect(message.contains(path)) }
        #expect(failed["error"]?["data"] == ["retryable": false, "searched": .array(searched.map(JSONValue.string)), "reason": "was not found"])

        // The process keeps serving: sign, and openSession again (the same answer, no crash).
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"sign","params":{"orgId":"acme","apiKey":"\#(key)"}}"#)
        let signed = try neon.response()
        #expect(signed["result"]?["authorization"]?.stringValue == basic("acme", key))
        neon.send(#"{"jsonrpc":"2.0","id":3,"method":"openSession","params":{"orgId":"acme","apiKey":"\#(key)"}}"#)
        #expect(try neon.response()["error"]?["code"] == .number("-32006"))
        neon.send(#"{"jsonrpc":"2.0","id":4,"method":"status"}"#)
        let status = try neon.response()
        #expect(status["result"]?["counters"]?["errors"]?["-32006"] == 2)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)

        let stderr = neon.stderr.text
        #expect(stderr.contains("warn: HTTP plugin libNeonAuthHTTP.so not found (searched: \(searched.joined(separator: ", ")))"))
        expectNoSecret(stderr, [key])
        let stdout = neon.stdout.text.split(separator: "\n").map { strippedOfAllowedFields(String($0)) }.joined(separator: "\n")
        for form in secretForms(org: "acme", key: key) {
            #expect(!stderr.contains(form))
            #expect(!stdout.contains(form))
        }
    }

    @Test("a sign-only process maps no networking or Foundation library; the first openSession loads the plugin, and it works",
          .enabled(if: getuid() == 0, "reading a non-dumpable process's /proc/<pid>/maps needs root (CAP_SYS_PTRACE)"))
    func lazyLoading() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments)
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign","params":{"orgId":"acme","apiKey":"\#(acmeKey)"}}"#)
        #expect(try neon.response()["result"] != nil)
        let before = try #require(mappedLibraries(pid: neon.process.processIdentifier))
        #expect(before.contains { $0.hasSuffix("/libswiftCore.so") }, "the maps were read")
        for library in deferredLibraries {
            #expect(!before.contains { $0.contains("/" + library) }, "\(library) is mapped before any openSession (after removing an import, an incremental debug build can keep a stale autolink entry: rm -rf .build)")
        }

        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"openSession","params":{"orgId":"acme","apiKey":"\#(acmeKey)"}}"#)
        let opened = try neon.response()
        #expect(opened["result"]?["reused"] == false)
        let after = try #require(mappedLibraries(pid: neon.process.processIdentifier))
        for library in ["libNeonAuthHTTP.so", "libFoundationNetworking.so", "libcurl"] {
            #expect(after.contains { $0.contains("/" + library) }, "\(library) is not mapped after openSession")
        }
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        #expect(try fake.count("logouts", org: "acme") == 1, "the logout at exit went through the plugin too")
    }
}
