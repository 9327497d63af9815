import Foundation
import Testing
import JSONRPC

/// A temporary directory, removed at deinit.
final class TempDir {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "neon-auth-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes a credentials file with `profiles` (name → (org, key)) and the given mode.
    @discardableResult
    func writeCredentials(_ name: String = "credentials.json", profiles: [(String, String, String)], mode: Int = 0o600,
                          extra: [String: String] = [:]) throws -> String {
        let file = path + "/" + name
        let members = profiles.map { profile, org, key in
            var entry: JSONObject = ["orgId": .string(org), "apiKey": .string(key)]
            for (k, v) in extra { entry[k] = .string(v) }
            return (key: profile, value: JSONValue.object(entry))
        }
        let text = JSONWriter.string(["profiles": .object(JSONObject(members))])
        try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        // Write to a temp file and rename, as editors do, so readers never see half a file.
        let temp = file + ".tmp"
        _ = FileManager.default.createFile(atPath: temp, contents: Data(text.utf8), attributes: [.posixPermissions: mode])
        chmod(temp, mode_t(mode))
        _ = rename(temp, file)
        return file
    }
}

func basic(_ org: String, _ key: String) -> String { "Basic " + Data("\(org):\(key)".utf8).base64EncodedString() }

@Suite("End to end: credentials by profile", .serialized)
struct ProfileTests {
    @Test("sign and openSession by profile; no profile means default")
    func byProfile() throws {
        let dir = try TempDir()
        let file = try dir.writeCredentials(profiles: [("default", "acme", acmeKey), ("beta", "beta-org", "SENTINEL-beta-key")])
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey), ("beta-org", "SENTINEL-beta-key")])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--credentials", file, "--log-level", "debug"])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign","params":{"profile":"beta"}}"#)
        #expect(try neon.response()["result"]?["authorization"] == .string(basic("beta-org", "SENTINEL-beta-key")))
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"sign"}"#)
        #expect(try neon.response()["result"]?["authorization"] == .string(acmeBasic))
        neon.send(#"{"jsonrpc":"2.0","id":3,"method":"openSession","params":{"profile":"beta"}}"#)
        #expect(try neon.response()["result"]?["reused"] == false)
        #expect(try fake.count("logins", org: "beta-org") == 1)
        // An inline credential with the same org and key shares the profile's pooled session.
        neon.send(#"{"jsonrpc":"2.0","id":4,"method":"openSession","params":{"orgId":"beta-org","apiKey":"SENTINEL-beta-key"}}"#)
        #expect(try neon.response()["result"]?["reused"] == true)
        neon.send(#"{"jsonrpc":"2.0","id":5,"method":"sign","params":{"profile":"nope"}}"#)
        let unknown = try neon.response()
        #expect(unknown["error"]?["code"] == .number("-32022"))
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        expectNoSecret(neon.stderr.text, [acmeKey, "SENTINEL-beta-key"])
    }

    @Test("file location precedence: --credentials, then NEON_AUTH_CREDENTIALS, then XDG_CONFIG_HOME, then ~/.config")
    func precedence() throws {
        let dir = try TempDir()
        let flag = try dir.writeCredentials("flag.json", profiles: [("default", "from-flag", "k1")])
        let env = try dir.writeCredentials("env.json", profiles: [("default", "from-env", "k2")])
        try dir.writeCredentials("xdg/neon-auth/credentials.json", profiles: [("default", "from-xdg", "k3")])
        try dir.writeCredentials("home/.config/neon-auth/credentials.json", profiles: [("default", "from-home", "k4")])
        let cases: [([String], [String: String], String)] = [
            (["--credentials", flag], ["NEON_AUTH_CREDENTIALS": env, "XDG_CONFIG_HOME": dir.path + "/xdg", "HOME": dir.path + "/home"], "from-flag"),
            ([], ["NEON_AUTH_CREDENTIALS": env, "XDG_CONFIG_HOME": dir.path + "/xdg", "HOME": dir.path + "/home"], "from-env"),
            ([], ["XDG_CONFIG_HOME": dir.path + "/xdg", "HOME": dir.path + "/home"], "from-xdg"),
            ([], ["HOME": dir.path + "/home"], "from-home"),
            ([], ["NEON_ORG_ID": "from-vars", "NEON_API_KEY": "k5", "HOME": dir.path + "/home"], "from-vars"),
        ]
        for (arguments, environment, org) in cases {
            var env = environment
            if env["XDG_CONFIG_HOME"] == nil { env["XDG_CONFIG_HOME"] = "" }
            let neon = try NeonAuthProcess(arguments: arguments, environment: env)
            neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign"}"#)
            let auth = try neon.response()["result"]?["authorization"]?.stringValue ?? ""
            let decoded = String(decoding: Data(base64Encoded: String(auth.dropFirst(6))) ?? Data(), as: UTF8.self)
            #expect(decoded.hasPrefix(org + ":"), "expected \(org)")
            neon.closeInput()
            _ = neon.waitForExit()
        }
    }

    @Test("no credentials anywhere: -32020 says where it looked")
    func noCredentials() throws {
        let dir = try TempDir()
        let neon = try NeonAuthProcess(arguments: [], environment: ["HOME": dir.path, "XDG_CONFIG_HOME": ""])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession"}"#)
        let r = try neon.response()
        #expect(r["error"]?["code"] == .number("-32020"))
        #expect(r["error"]?["message"]?.stringValue?.contains("NEON_ORG_ID") == true)
        #expect(r["error"]?["message"]?.stringValue?.contains(dir.path + "/.config/neon-auth/credentials.json") == true)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
    }

    @Test("a file readable by others, or owned by another user, is refused with the fix named and no secret", arguments: [0o644, 0o640, 0o602, 0o620])
    func refusedPermissions(mode: Int) throws {
        let dir = try TempDir()
        let file = try dir.writeCredentials(profiles: [("default", "acme", "SENTINEL-perm-key")], mode: mode)
        let neon = try NeonAuthProcess(arguments: ["--credentials", file, "--log-level", "debug"])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign"}"#)
        let r = try neon.response()
        #expect(r["error"]?["code"] == .number("-32021"))
        #expect(r["error"]?["message"]?.stringValue?.contains("chmod 600 \(file)") == true)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        expectNoSecret(neon.stdout.text + neon.stderr.text, ["SENTINEL-perm-key"])
    }

    @Test("a file owned by another user is refused", .enabled(if: geteuid() == 0, "needs root to chown"))
    func refusedOwner() throws {
        let dir = try TempDir()
        let file = try dir.writeCredentials(profiles: [("default", "acme", "SENTINEL-owner-key")])
        #expect(chown(file, 65534, 65534) == 0)
        let neon = try NeonAuthProcess(arguments: ["--credentials", file])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign"}"#)
        let r = try neon.response()
        #expect(r["error"]?["code"] == .number("-32021"))
        #expect(r["error"]?["message"]?.stringValue?.contains("owned by another user") == true)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        expectNoSecret(neon.stdout.text + neon.stderr.text, ["SENTINEL-owner-key"])
    }

    @Test("file content problems are refused without quoting the file")
    func refusedContent() throws {
        let dir = try TempDir()
        let file = dir.path + "/bad.json"
        _ = FileManager.default.createFile(atPath: file, contents: Data(#"{"profiles": {"p": {"orgId": "acme", "apiKey": "SENTINEL-content"#.utf8),
                                       attributes: [.posixPermissions: 0o600])
        let neon = try NeonAuthProcess(arguments: ["--credentials", file])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"sign","params":{"profile":"p"}}"#)
        let r = try neon.response()
        #expect(r["error"]?["code"] == .number("-32021"))
        #expect(r["error"]?["data"]?["reason"] == "it is not valid JSON")
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        expectNoSecret(neon.stdout.text + neon.stderr.text, ["SENTINEL-content"])
    }

    @Test("a changed file is picked up without a restart; sessions of a key that changed are logged out")
    func reload() throws {
        let dir = try TempDir()
        let file = try dir.writeCredentials(profiles: [("default", "acme", acmeKey)])
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey), ("acme", "SENTINEL-rotated")])
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments + ["--credentials", file])
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession"}"#)
        let first = try #require(try neon.response()["result"]?["userSessionId"]?.stringValue)
        try dir.writeCredentials(profiles: [("default", "acme", "SENTINEL-rotated")])
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"sign"}"#)
        #expect(try neon.response()["result"]?["authorization"] == .string(basic("acme", "SENTINEL-rotated")))
        neon.send(#"{"jsonrpc":"2.0","id":3,"method":"openSession"}"#)
        let second = try neon.response()
        #expect(second["result"]?["reused"] == false)
        #expect(second["result"]?["userSessionId"] != .string(first))
        for _ in 0..<200 {
            if !(try fake.count("logouts", org: "acme") < 1) { break }
            usleep(10_000)
        }
        #expect(try fake.count("logouts", org: "acme") == 1)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        #expect(try fake.count("logouts", org: "acme") == 2)
    }
}
