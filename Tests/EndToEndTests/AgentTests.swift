import Foundation
import Synchronization
import Testing
import JSONRPC

/// Runs `neon-auth ARGS` as a shell would, with `environment` merged into the test's (the
/// shared agent unless the environment says otherwise), stdin from `input`.
/// - Returns: exit status, stdout, stderr.
@discardableResult
func runNeonAuth(_ arguments: [String], environment: [String: String], input: String = "", timeout: Double = 30) throws -> (Int32, String, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try neonAuthBinary())
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("NEON_") }
    env["NEON_AUTH_AGENT"] = "shared"
    env.merge(environment) { $1 }
    process.environment = env
    let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
    process.standardInput = stdin
    process.standardOutput = stdout
    process.standardError = stderr
    try process.run()
    let out = PipeCollector(stdout.fileHandleForReading), err = PipeCollector(stderr.fileHandleForReading)
    stdin.fileHandleForWriting.write(Data(input.utf8))
    try? stdin.fileHandleForWriting.close()
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(5_000) }
    if process.isRunning {
        kill(process.processIdentifier, SIGKILL)
        throw HarnessError("neon-auth \(arguments.joined(separator: " ")) did not exit within \(timeout) s")
    }
    // Returning at once means nothing (the agent included) holds the pipes.
    #expect(out.waitClosed(timeout: 2) && err.waitClosed(timeout: 2), "stdout or stderr is still held open after exit")
    return (process.terminationStatus, out.text, err.text)
}

/// The shared agent: one pool for every front-end of a user, started on first need.
@Suite("End to end: the shared agent", .serialized)
struct AgentTests {
    let fake: FakeNeonCRM
    let runtime: RuntimeDirectory
    let credentials: [String: String]

    init() throws {
        fake = try FakeNeonCRM(accounts: [("acme", acmeKey)], extraArguments: ["--login-delay", "0.15"])
        runtime = try RuntimeDirectory()
        credentials = ["NEON_ORG_ID": "acme", "NEON_API_KEY": acmeKey, "XDG_RUNTIME_DIR": runtime.path]
    }

    var environment: [String: String] { credentials }
    var urls: [String] { fake.neonAuthArguments }

    func stopAgent() throws {
        let (status, out, _) = try runNeonAuth(["agent", "stop"] + urls, environment: environment)
        #expect(status == 0, "\(out)")
    }

    /// Whether the fake still accepts `id` (an API v1 call with it succeeds).
    func sessionWorks(_ id: String) throws -> Bool {
        let (status, body) = try http(method: "GET", url: fake.v1 + "/account/listAccounts?responseType=json&userSessionId=" + id)
        return status == 200 && String(decoding: body, as: UTF8.self).contains("SUCCESS")
    }

    @Test("20 pipelines one after another: 1 login; the first pipeline's id still works after all have exited")
    func sequentialPipelines() throws {
        var ids: [String] = []
        for _ in 0..<20 {
            let (status, out, err) = try runNeonAuth(["session"] + urls, environment: environment)
            #expect(status == 0, "\(err)")
            ids.append(out.trimmingCharacters(in: .newlines))
        }
        #expect(Set(ids).count == 1)
        #expect(try fake.count("logins", org: "acme") == 1)
        #expect(try sessionWorks(ids[0]), "the id printed by the first pipeline is still valid")
        // The stdio service shares the same pool: `echo openSession | neon-auth`.
        let (_, out, _) = try runNeonAuth(urls, environment: environment, input: #"{"jsonrpc":"2.0","id":1,"method":"openSession"}"# + "\n")
        #expect(out.contains(ids[0]) && out.contains(#""reused":true"#), "\(out)")
        #expect(runtime.agentPids().count == 1)
        try stopAgent()
        #expect(try fake.count("logouts", org: "acme") == 1)
        #expect(try !sessionWorks(ids[0]))
    }

    @Test("50 front-ends started at once: 1 agent process, 1 login, one id for all")
    func concurrentStart() throws {
        let group = DispatchGroup()
        let results = Mutex<[String]>([])
        let arguments = ["session"] + urls, env = environment
        for _ in 0..<50 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                if let (status, out, _) = try? runNeonAuth(arguments, environment: env, timeout: 60), status == 0 {
                    results.withLock { $0.append(out.trimmingCharacters(in: .newlines)) }
                }
            }
        }
        #expect(group.wait(timeout: .now() + 120) == .success)
        let ids = results.withLock { $0 }
        #expect(ids.count == 50)
        #expect(Set(ids).count == 1)
        #expect(try fake.count("logins", org: "acme") == 1)
        #expect(runtime.agentPids().count == 1)
        try stopAgent()
    }

    @Test("the agent's idle exit: logouts = logins at the fake, socket gone, no agent process left")
    func idleExit() throws {
        var env = environment
        env["NEON_AUTH_AGENT_IDLE_EXIT"] = "0.5"
        // Short windows: the session goes stale after 2 s, the agent exits 0.5 s after that.
        let timers = urls + ["--idle-timeout", "2", "--idle-margin", "0.5", "--refresh-ahead", "0"]
        let (status, out, _) = try runNeonAuth(["session"] + timers, environment: env)
        #expect(status == 0 && !out.isEmpty)
        #expect(runtime.agentPids().count == 1)
        let deadline = Date().addingTimeInterval(15)
        while !runtime.agentPids().isEmpty && Date() < deadline { usleep(100_000) }
        #expect(runtime.agentPids().isEmpty, "the agent exited on its own")
        #expect(try fake.count("logins", org: "acme") == 1)
        #expect(try fake.count("logouts", org: "acme") == 1)
        let sockets = (try? FileManager.default.contentsOfDirectory(atPath: runtime.path + "/neon-auth")) ?? []
        #expect(!sockets.contains { $0.hasSuffix(".sock") }, "\(sockets)")
    }

    @Test("kill -9 of the agent: the next command recovers (the stale socket file is handled)")
    func killedAgent() throws {
        let (_, first, _) = try runNeonAuth(["session"] + urls, environment: environment)
        let pids = runtime.agentPids()
        #expect(pids.count == 1)
        for pid in pids { kill(pid, SIGKILL) }
        usleep(200_000)
        let sockets = (try? FileManager.default.contentsOfDirectory(atPath: runtime.path + "/neon-auth")) ?? []
        #expect(sockets.contains { $0.hasSuffix(".sock") }, "a stale socket file is left behind")
        let (status, second, err) = try runNeonAuth(["session"] + urls, environment: environment)
        #expect(status == 0, "\(err)")
        #expect(!second.isEmpty && second != first, "a new agent logged in afresh")
        #expect(runtime.agentPids().count == 1)
        try stopAgent()
    }

    @Test("an agent killed while a front-end holds a connection: requests then get a retryable -32006, and the next one reconnects")
    func agentDiesMidSession() throws {
        let neon = try NeonAuthProcess(arguments: urls, environment: environment.merging(["NEON_AUTH_AGENT": "shared"]) { $1 })
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession"}"#)
        #expect(try neon.response(timeout: 20)["result"]?["reused"] == .bool(false))
        try fake.control("mode", body: #"{"login":"hang"}"#)
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"openSession","params":{"orgId":"acme","apiKey":"other-key"}}"#)
        usleep(300_000)
        for pid in runtime.agentPids() { kill(pid, SIGKILL) }
        let lost = try neon.response(timeout: 20)
        #expect(lost["error"]?["code"] == .number("-32006") && lost["error"]?["data"]?["retryable"] == .bool(true), "\(lost)")
        try fake.control("release", body: "{}")
        try fake.control("mode", body: #"{"login":"ok"}"#)
        neon.send(#"{"jsonrpc":"2.0","id":3,"method":"openSession"}"#)
        #expect(try neon.response(timeout: 20)["result"]?["userSessionId"] != nil)
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        try stopAgent()
    }

    @Test("an unsafe directory or a too-long path: a private agent, with one warning", arguments: ["mode", "owner", "long"])
    func unsafeDirectory(problem: String) throws {
        var env = environment
        let base = try TempDir()
        switch problem {
        case "mode":
            env["XDG_RUNTIME_DIR"] = "relative/ignored"  // not absolute: TMPDIR is used
            env["TMPDIR"] = base.path
            let dir = base.path + "/neon-auth-\(geteuid())"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            chmod(dir, 0o755)
        case "owner":
            env["XDG_RUNTIME_DIR"] = "relative/ignored"
            env["TMPDIR"] = base.path
            let dir = base.path + "/neon-auth-\(geteuid())"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            chmod(dir, 0o700)
            chown(dir, 65534, 65534)
        default:
            let long = base.path + "/" + String(repeating: "d", count: 100)
            try FileManager.default.createDirectory(atPath: long, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            chmod(long, 0o700)
            env["XDG_RUNTIME_DIR"] = long
        }
        let input = #"{"jsonrpc":"2.0","id":1,"method":"openSession"}"# + "\n"
        let (status, out, err) = try runNeonAuth(urls, environment: env, input: input)
        #expect(status == 0)
        #expect(out.contains(#""reused":false"#), "\(out)")
        #expect(err.components(separatedBy: "the shared agent cannot be used").count == 2, "one warning: \(err)")
        #expect(try fake.count("logouts", org: "acme") == 1, "the private agent logged out at exit")
        #expect(runtime.agentPids().isEmpty)
    }

    @Test("a client of another uid gets nothing from the user's agent",
          .enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), "needs root and setpriv"))
    func otherUid() throws {
        let (_, id, _) = try runNeonAuth(["session"] + urls, environment: environment)
        #expect(!id.isEmpty)
        let socket = try #require(((try? FileManager.default.contentsOfDirectory(atPath: runtime.path + "/neon-auth")) ?? [])
            .first { $0.hasSuffix(".sock") })
        // nobody cannot even enter the 0700 directory; with a copy of the path it still cannot connect.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect(sys.argv[1]); s.sendall(b'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}\\n'); print(s.recv(4096))\nexcept OSError as e:\n print('refused', e.errno)\n"
        process.arguments = ["--reuid", "65534", "--regid", "65534", "--clear-groups", "/usr/bin/env", "python3", "-c", script,
                             runtime.path + "/neon-auth/" + socket]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        process.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(text.hasPrefix("refused"), "\(text)")
        #expect(!text.contains(id.trimmingCharacters(in: .newlines)))
        try stopAgent()
    }

    @Test("`neon-auth session | head -1` and $(neon-auth session) return at once; the agent survives SIGINT to the pipeline's group and SIGHUP")
    func pipelinesAndSignals() throws {
        let binary = try neonAuthBinary()
        let script = """
            set -m
            id=$("$0" session "$@")
            "$0" session "$@" | head -1 > /dev/null
            # a pipeline in its own process group, interrupted as Ctrl-C would
            ( "$0" session "$@" > /dev/null; sleep 5 ) & pid=$!
            sleep 0.5; kill -INT -- -$pid 2>/dev/null; wait $pid 2>/dev/null
            echo "$id"
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", script, binary] + urls
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("NEON_") }
        env.merge(environment) { $1 }
        env["NEON_AUTH_AGENT"] = "shared"
        process.environment = env
        let out = Pipe()
        process.standardOutput = out
        let start = Date()
        try process.run()
        let collector = PipeCollector(out.fileHandleForReading)
        #expect(collector.waitClosed(timeout: 20), "the script's stdout stays open: something holds it")
        process.waitUntilExit()
        #expect(Date().timeIntervalSince(start) < 15)
        let id = collector.text.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!id.isEmpty)
        let pids = runtime.agentPids()
        #expect(pids.count == 1, "the agent survived the interrupted pipeline")
        for pid in pids { kill(pid, SIGHUP) }
        usleep(300_000)
        #expect(runtime.agentPids() == pids, "the agent survives SIGHUP")
        #expect(try sessionWorks(id))
        try stopAgent()
        #expect(try fake.count("logouts", org: "acme") == 1)
    }

    @Test("private mode: N processes make N logins and log out at exit")
    func privateMode() throws {
        var env = environment
        env["NEON_AUTH_AGENT"] = "private"
        for _ in 0..<3 {
            let (status, out, _) = try runNeonAuth(urls, environment: env, input: #"{"jsonrpc":"2.0","id":1,"method":"openSession"}"# + "\n")
            #expect(status == 0 && out.contains(#""reused":false"#))
        }
        #expect(try fake.count("logins", org: "acme") == 3)
        #expect(try fake.count("logouts", org: "acme") == 3)
        #expect(runtime.agentPids().isEmpty)
    }

    @Test("one-shot commands: header for curl -H @-, errors on stderr with status 1 and nothing on stdout, usage errors 2")
    func oneShotCommands() throws {
        let (status, out, _) = try runNeonAuth(["header", "--api-version", "2.10"], environment: environment)
        #expect(status == 0)
        #expect(out == "Authorization: \(basic("acme", acmeKey))\nNEON-API-VERSION: 2.10\n")
        let (failed, nothing, message) = try runNeonAuth(["session"] + urls, environment: ["XDG_RUNTIME_DIR": runtime.path,
                                                                                            "NEON_AUTH_CREDENTIALS": "/nonexistent/credentials.json"])
        #expect(failed == 1 && nothing.isEmpty)
        #expect(message.contains("No credentials"), "\(message)")
        let (usage, _, _) = try runNeonAuth(["agent", "restart"], environment: environment)
        #expect(usage == 2)
        let (stopped, text, _) = try runNeonAuth(["agent", "stop"] + urls, environment: environment)
        #expect(stopped == 0 && text.contains("no agent is running"))
        #expect(runtime.agentPids().isEmpty)
    }
}

/// Defects a fresh reviewer found in the agent, each pinned by a test.
@Suite("End to end: the shared agent, regressions", .serialized)
struct AgentRegressionTests {
    @Test("`neon-auth session` never prints an id a private agent is about to log out")
    func sessionNeedsTheSharedAgent() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let base = try TempDir()
        let unsafe = base.path + "/neon-auth-\(geteuid())"
        try FileManager.default.createDirectory(atPath: unsafe, withIntermediateDirectories: true)
        chmod(unsafe, 0o777)
        let env = ["NEON_ORG_ID": "acme", "NEON_API_KEY": acmeKey, "XDG_RUNTIME_DIR": "relative", "TMPDIR": base.path]
        let (status, out, err) = try runNeonAuth(["session"] + fake.neonAuthArguments, environment: env)
        #expect(status == 1 && out.isEmpty, "\(out) \(err)")
        let (usage, nothing, _) = try runNeonAuth(["session", "--agent", "private"] + fake.neonAuthArguments, environment: env)
        #expect(usage == 2 && nothing.isEmpty)
        let logins = try fake.count("logins", org: "acme"), logouts = try fake.count("logouts", org: "acme")
        #expect(logins == logouts)
    }

    @Test("a session started right after `agent stop` gets a new shared agent at once")
    func sessionRightAfterStop() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        try fake.control("mode", body: #"{"logoutDelay":1}"#)
        let runtime = try RuntimeDirectory()
        let env = ["NEON_ORG_ID": "acme", "NEON_API_KEY": acmeKey, "XDG_RUNTIME_DIR": runtime.path]
        let (_, first, _) = try runNeonAuth(["session"] + fake.neonAuthArguments, environment: env)
        // The old agent is still logging out (1 s) while the next command needs one.
        let stopArguments = ["agent", "stop"] + fake.neonAuthArguments
        let stopper = Thread { _ = try? runNeonAuth(stopArguments, environment: env) }
        stopper.start()
        usleep(300_000)
        let start = Date()
        let (status, second, err) = try runNeonAuth(["session"] + fake.neonAuthArguments, environment: env)
        #expect(status == 0, "\(err)")
        #expect(!second.isEmpty && second != first)
        #expect(Date().timeIntervalSince(start) < 4, "no wait for the old agent to finish")
        #expect(!err.contains("cannot be used"), "\(err)")
        usleep(1_500_000)
        _ = try runNeonAuth(["agent", "stop"] + fake.neonAuthArguments, environment: env)
    }

    @Test("--replace from another process leaves that process's holds alone")
    func replaceKeepsOthersHolds() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let runtime = try RuntimeDirectory()
        let env = ["NEON_ORG_ID": "acme", "NEON_API_KEY": acmeKey, "XDG_RUNTIME_DIR": runtime.path, "NEON_AUTH_AGENT": "shared"]
        let neon = try NeonAuthProcess(arguments: fake.neonAuthArguments, environment: env)
        neon.send(#"{"jsonrpc":"2.0","id":1,"method":"openSession"}"#)
        let id = try #require(try neon.response(timeout: 20)["result"]?["userSessionId"]?.stringValue)
        neon.send(#"{"jsonrpc":"2.0","id":2,"method":"openSession"}"#)
        _ = try neon.response()
        let (status, replacement, _) = try runNeonAuth(["session", "--replace", id] + fake.neonAuthArguments, environment: env)
        #expect(status == 0 && !replacement.isEmpty)
        // The first process still holds the old session twice: two releases, no logout yet.
        for n in 3...4 {
            neon.send(#"{"jsonrpc":"2.0","id":\#(n),"method":"closeSession","params":{"userSessionId":"\#(id)"}}"#)
            let closed = try neon.response()
            #expect(closed["result"]?["closed"] == .bool(true), "\(closed)")
        }
        neon.closeInput()
        #expect(neon.waitForExit() == 0)
        _ = try runNeonAuth(["agent", "stop"] + fake.neonAuthArguments, environment: env)
    }

    @Test("an id printed by `neon-auth session` in the refresh-ahead window is the refreshed one, valid after the command")
    func sessionInRefreshWindow() throws {
        let fake = try FakeNeonCRM(accounts: [("acme", acmeKey)])
        let runtime = try RuntimeDirectory()
        let env = ["NEON_ORG_ID": "acme", "NEON_API_KEY": acmeKey, "XDG_RUNTIME_DIR": runtime.path]
        // Stale after 19 idle seconds; refreshed ahead from 2 idle seconds on.
        let arguments = ["session"] + fake.neonAuthArguments + ["--idle-timeout", "20", "--idle-margin", "1", "--refresh-ahead", "17"]
        let (_, first, _) = try runNeonAuth(arguments, environment: env)
        Thread.sleep(forTimeInterval: 2.5)
        let (status, second, err) = try runNeonAuth(arguments, environment: env)
        #expect(status == 0, "\(err)")
        let id = second.trimmingCharacters(in: .newlines)
        #expect(!id.isEmpty && second != first, "the refreshed session, not the one about to be retired")
        usleep(300_000)
        let (code, body) = try http(method: "GET", url: fake.v1 + "/account/listAccounts?responseType=json&userSessionId=" + id)
        #expect(code == 200 && String(decoding: body, as: UTF8.self).contains("SUCCESS"), "the printed id still works")
        _ = try runNeonAuth(["agent", "stop"] + Array(arguments.dropFirst()), environment: env)
    }

    @Test("one-shot commands: a write error exits 74; `agent stop status` is a usage error")
    func oneShotEdges() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "exec \"$0\" header >/dev/full", try neonAuthBinary()]
        var env = ProcessInfo.processInfo.environment
        env["NEON_ORG_ID"] = "acme"
        env["NEON_API_KEY"] = acmeKey
        process.environment = env
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 74)
        let (usage, _, _) = try runNeonAuth(["agent", "stop", "status"], environment: [:])
        #expect(usage == 2)
        let (headerStatus, _, _) = try runNeonAuth(["header", "status"], environment: ["NEON_ORG_ID": "acme", "NEON_API_KEY": acmeKey])
        #expect(headerStatus == 2)
    }
}
