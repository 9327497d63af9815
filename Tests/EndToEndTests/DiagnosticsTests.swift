import Foundation
import Testing
import JSONRPC

/// Errors that say what is wrong: configuration, the credentials file, the interface.
@Suite("End to end: diagnostics", .serialized)
struct DiagnosticsTests {
    @Test("HOME unset or relative: the password database's home is used, never a path relative to the working directory")
    func homeFallback() throws {
        let dir = try TempDir()
        // A trap: a file where a literal "~" or a relative HOME would lead.
        try dir.writeCredentials("~/.config/neon-auth/credentials.json", profiles: [("default", "trap", "trap-key")])
        try dir.writeCredentials("rel/.config/neon-auth/credentials.json", profiles: [("default", "trap", "trap-key")])
        var entry = passwd(), found: UnsafeMutablePointer<passwd>? = nil
        var buffer = [CChar](repeating: 0, count: 16384)
        getpwuid_r(geteuid(), &entry, &buffer, buffer.count, &found)
        let home = String(cString: try #require(entry.pw_dir))
        let expected = home + "/.config/neon-auth/credentials.json"
        #expect(!FileManager.default.fileExists(atPath: expected), "this test needs no credentials file in the real home")
        for (unset, environment) in [(["HOME", "XDG_CONFIG_HOME"], [String: String]()), (["XDG_CONFIG_HOME"], ["HOME": "rel"]),
                                     (["XDG_CONFIG_HOME"], ["HOME": ""])] {
            let neon = try NeonAuthProcess(arguments: [], environment: environment, unset: unset + ["NEON_AUTH_CREDENTIALS"], directory: dir.path)
            neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign"}"#)
            let answer = try neon.response()
            #expect(answer["error"]?["code"] == .number("-32020"), "\(answer)")
            #expect(answer["error"]?["data"]?["searched"] == .array(["environment: NEON_ORG_ID, NEON_API_KEY", .string(expected)]),
                    "\(answer)")
            neon.closeInput()
            #expect(neon.waitForExit() == 0)
        }
    }

    /// The password database's entry for `uid`: its home directory, or `nil` when it has none.
    static func passwordHome(_ uid: uid_t) -> String? {
        var entry = passwd(), found: UnsafeMutablePointer<passwd>? = nil
        var buffer = [CChar](repeating: 0, count: 16384)
        guard getpwuid_r(uid, &entry, &buffer, buffer.count, &found) == 0, found != nil, let dir = entry.pw_dir else { return nil }
        return String(cString: dir)
    }

    @Test("HOME unset, as another user: that user's home from the password database; a uid it does not list gets a clear error, not a crash",
          .enabled(if: geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), "needs root and setpriv"))
    func homeFromPasswordDatabaseAsAnotherUser() throws {
        // A copy any user can run (the build folder may not be open to other users).
        let dir = try TempDir()
        chmod(dir.path, 0o755)
        let binary = dir.path + "/neon-auth"
        try FileManager.default.copyItem(atPath: try neonAuthBinary(), toPath: binary)
        chmod(binary, 0o755)
        // nobody, and a uid the password database does not know (with "files systemd" in
        // nsswitch.conf, looking it up loads an NSS module: a static glibc crashed there).
        let nobody: uid_t = 65534
        let unknown = try #require((40_000..<60_000).lazy.map { uid_t($0) }.first { Self.passwordHome($0) == nil })
        for uid in [nobody, unknown] {
            let home = Self.passwordHome(uid)
            if uid == nobody && home == nil { continue }  // no nobody on this system
            let neon = try NeonAuthProcess(arguments: ["--reuid", "\(uid)", "--regid", "\(uid)", "--clear-groups", binary],
                                           unset: ["HOME", "XDG_CONFIG_HOME", "NEON_AUTH_CREDENTIALS"], directory: "/",
                                           executable: "/usr/bin/setpriv")
            neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign"}"#)
            let answer = try neon.response()
            #expect(answer["error"]?["code"] == .number("-32020"), "uid \(uid): \(answer)")
            if let home {
                #expect(answer["error"]?["data"]?["searched"]
                            == .array(["environment: NEON_ORG_ID, NEON_API_KEY", .string(home + "/.config/neon-auth/credentials.json")]),
                        "uid \(uid): \(answer)")
            } else {
                let message = answer["error"]?["message"]?.stringValue ?? ""
                #expect(message.contains("the password database has no home directory for uid \(uid)"), "\(answer)")
            }
            neon.closeInput()
            #expect(neon.waitForExit() == 0, "uid \(uid): \(neon.stderr.text)")
        }
    }

    @Test("explicit base URLs hold for every profile, whatever its environment says")
    func explicitBaseURLsHold() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", "k1")])
        let dir = try TempDir()
        let file = try dir.writeCredentials(profiles: [("t", "acme", "k1"), ("p", "acme", "k1")])
        // Both environments, by rewriting one profile each way.
        let text = try String(contentsOfFile: file, encoding: .utf8)
            .replacingOccurrences(of: #""t":{"orgId":"acme","apiKey":"k1"}"#, with: #""t":{"orgId":"acme","apiKey":"k1","environment":"trial"}"#)
            .replacingOccurrences(of: #""p":{"orgId":"acme","apiKey":"k1"}"#, with: #""p":{"orgId":"acme","apiKey":"k1","environment":"production"}"#)
        try Data(text.utf8).write(to: URL(fileURLWithPath: file))
        chmod(file, 0o600)
        for extra in [[], ["--trial"]] {
            let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + extra + ["--credentials", file])
            for profile in ["t", "p"] {
                neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign","params":{"profile":"\#(profile)"}}"#)
                #expect(try neon.response()["result"]?["baseUrl"]?.stringValue == fake.v2)
                neon.send(#"{"jsonrpc":"2.0","id":2,"method":"openSession","params":{"profile":"\#(profile)"}}"#)
                let opened = try neon.response(timeout: 20)
                #expect(opened["result"]?["userSessionId"] != nil, "\(opened)")
            }
            neon.closeInput()
            #expect(neon.waitForExit() == 0)
        }
        #expect(try fake.count("logins", org: "acme") == 2, "every login went to the base URL given")
        // Only one given: it holds, and the other follows the profile's environment.
        let neon = try NeonAuthProcess(arguments: ["--v1-base-url", fake.v1, "--credentials", file])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign","params":{"profile":"t"}}"#)
        #expect(try neon.response()["result"]?["baseUrl"]?.stringValue == "https://trial.neoncrm.com/v2")
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"openSession","params":{"profile":"t"}}"#)
        #expect(try neon.response(timeout: 20)["result"]?["userSessionId"] != nil)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        #expect(try fake.count("logins", org: "acme") == 3)
    }

    @Test("the credentials file is strict: an unknown member or a duplicate profile is refused, naming it and the fix",
          arguments: [
            (#"{"profiles":{"p":{"orgId":"acme","apiKey":"k","enviroment":"trial"}}}"#, "profile 'p' has an unknown member 'enviroment'"),
            (#"{"profiles":{"p":{"orgId":"acme","apiKey":"k"},"p":{"orgId":"acme","apiKey":"k2"}}}"#, "profile 'p' is defined twice"),
            (#"{"profile":{"p":{"orgId":"acme","apiKey":"k"}}}"#, "unknown top-level member 'profile'"),
            (#"{"profiles":{"p":{"orgId":"acme","apiKey":"k","apiKey":"k2"}}}"#, "profile 'p' has 'apiKey' twice"),
          ])
    func strictFile(content: String, complaint: String) throws {
        let dir = try TempDir()
        let file = dir.path + "/credentials.json"
        _ = FileManager.default.createFile(atPath: file, contents: Data(content.utf8), attributes: [.posixPermissions: 0o600])
        let neon = try NeonAuthProcess(arguments: ["--credentials", file])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign","params":{"profile":"p"}}"#)
        let answer = try neon.response()
        #expect(answer["error"]?["code"] == .number("-32021"), "\(answer)")
        let message = answer["error"]?["message"]?.stringValue ?? ""
        #expect(message.contains(complaint), "\(message)")
        #expect(!message.contains("\"k\"") && !message.contains("k2"), "never quotes a value")
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("bad values at start-up are named: a version with a leading zero, a flag without its value")
    func startupErrors() throws {
        for (arguments, complaint) in [(["--api-version", "2.011"], "--api-version: expected 2.N"),
                                       (["--v1-base-url"], "--v1-base-url needs a value (URL)")] {
            let neon = try NeonAuthProcess(arguments: arguments)
            #expect(neon.waitForExit() == 2)
            #expect(neon.stderr.text.contains(complaint), "\(neon.stderr.text)")
        }
    }

    @Test("a word typed where a request belongs gets a parse error that shows what a request looks like")
    func typedWord() throws {
        let neon = try NeonAuthProcess(arguments: [])
        neon.send("help")
        let answer = try neon.response()
        #expect(answer["error"]?["code"] == .number("-32700"))
        #expect(answer["error"]?["message"]?.stringValue?.contains(#"{"jsonrpc":"2.0","id":1,"method":"sign"}"#) == true)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }
}
