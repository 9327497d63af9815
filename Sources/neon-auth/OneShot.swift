#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization
import JSONRPC
import NeonAuth

/// The one-shot commands for shells: one answer on stdout, status 0 on success; 1 on an error,
/// with its message on stderr and nothing on stdout; 2 on a usage error. Credentials come from
/// the profile, the environment and the credentials file as for requests, never from arguments
/// (argv is visible in `ps`).
///
/// - `neon-auth header [--profile NAME] [--api-version 2.N]`: two lines, `Authorization: Basic …`
///   and `NEON-API-VERSION: 2.N`, ready for `curl -H @-`.
/// - `neon-auth session [--profile NAME] [--replace ID]`: a user session ID from the shared
///   pool (with `--replace`, the one that replaces an ID NeonCRM answered error 4 for). It stays
///   valid after the command exits, under the pool's idle rules.
/// - `neon-auth agent status`: `status`'s result as JSON (no agent is started for it).
/// - `neon-auth agent stop`: ends the shared agent, which logs out every session, and prints
///   how many it logged out.
/// Other flags (`--credentials`, base URLs, timeouts…) are those of the service.
enum OneShot {
    static let commands: Set<String> = ["header", "session", "agent"]

    static let usage = """
        usage: neon-auth header [--profile NAME] [--api-version 2.N] [OPTIONS]
               neon-auth session [--profile NAME] [--replace ID] [OPTIONS]
               neon-auth agent status|stop [OPTIONS]
        (credentials come from NEON_ORG_ID/NEON_API_KEY or the credentials file, never from arguments;
        see neon-auth --help for OPTIONS)
        """

    /// Runs `command` and returns the exit status.
    static func run(_ command: String, _ arguments: [String], environment: EnvironmentVariables) -> Int32 {
        var rest: [String] = []
        var profile: String? = nil, apiVersion: String? = nil, replace: String? = nil, action: String? = nil
        var index = 0
        func next() -> String? {
            guard index < arguments.count else { return nil }
            defer { index += 1 }
            return arguments[index]
        }
        while let argument = next() {
            switch argument {
            case "--profile", "--api-version", "--replace":
                guard let value = next() else { return usageError("\(argument) needs a value") }
                switch argument {
                case "--profile" where command != "agent": profile = value
                case "--api-version" where command == "header": apiVersion = value
                case "--replace" where command == "session": replace = value
                default: return usageError("neon-auth \(command) takes no \(argument)")
                }
            case "status" where command == "agent" && action == nil, "stop" where command == "agent" && action == nil:
                action = argument
            case "-h", "--help":
                printOut(usage + "\n")
                return 0
            default:
                if !argument.hasPrefix("-") { return usageError("unexpected argument for neon-auth \(command)") }
                rest.append(argument)
                if Configuration.takesValue(argument), let value = next() { rest.append(value) }
            }
        }
        if command == "agent" && action == nil { return usageError("neon-auth agent needs status or stop") }
        let configuration: Configuration
        do {
            guard case .serve(let parsed) = try Configuration.parse(arguments: rest, environment: environment) else {
                printOut(Configuration.helpText)
                return 0
            }
            configuration = parsed
        } catch {
            return usageError("\(error)")
        }
        let log = Logger(level: configuration.logLevel)
        let agent = AgentClient(settings: configuration.agentSettings, mode: configuration.agentMode, environment: environment, log: log)
        let credentials = CredentialStore(flagPath: configuration.credentialsPath, environment: environment)
        let service = NeonAuthService(settings: ServiceSettings(configuration), agent: agent, credentials: credentials, log: log)
        var params = JSONObject()
        if let profile { params["profile"] = .string(profile) }
        switch command {
        case "header":
            if let apiVersion { params["apiVersion"] = .string(apiVersion) }
            do {
                let signed = try service.sign(.object(params))
                let headers = signed["headers"]
                printOut("Authorization: \(headers?["Authorization"]?.stringValue ?? "")\nNEON-API-VERSION: \(headers?["NEON-API-VERSION"]?.stringValue ?? "")\n")
                return 0
            } catch {
                return failure(error.message)
            }
        case "session":
            if configuration.agentMode == .private {
                return usageError("neon-auth session needs the shared agent: a private agent logs its sessions out as the command exits")
            }
            if let replace { params["replace"] = .string(replace) }
            let result = wait { reply in
                service.openSession(.object(params), lasting: true, reply: reply)
                agent.flush()
            }
            let shared = agent.usesSharedAgent
            _ = agent.finish(deadline: configuration.shutdownTimeout + 0.5)
            if case .success = result, !shared {
                // A private agent's session is logged out as this command exits: never print it.
                return failure("the shared agent cannot be used (see the warning above), and a session from a private agent would be logged out as this command exits")
            }
            switch result {
            case .success(let opened):
                guard let id = opened["userSessionId"]?.stringValue else { return failure("the agent answered without a session id") }
                printOut(id + "\n")
                return 0
            case .failure(let error):
                return failure(error.message)
            }
        default:  // agent status | stop
            let result: Result<JSONValue?, RPCError> = wait { reply in
                agent.start(action == "stop" ? "stop" : "status", .object(JSONObject()), spawn: false, completion: reply)
            }
            switch result {
            case .success(nil):
                if action == "stop" {
                    printOut("no agent is running for these settings\n")
                } else {
                    printOut(#"{"running":false}"# + "\n")
                }
                return 0
            case .success(let value?):
                if action == "stop" {
                    let a = AgentService.accounting(value) ?? SessionPool.Accounting()
                    printOut("agent stopped: \(a.loggedOut) session(s) logged out, \(a.abandoned.count) abandoned\n")
                } else {
                    printOut(JSONWriter.string(value) + "\n")
                }
                return 0
            case .failure(let error):
                return failure(error.message)
            }
        }
    }

    /// Starts `body` and blocks until it delivers its one result.
    private static func wait<Value: Sendable>(_ body: (@escaping @Sendable (Result<Value, RPCError>) -> Void) -> Void) -> Result<Value, RPCError> {
        let result = Mutex<Result<Value, RPCError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        body { answer in
            result.withLock { $0 = answer }
            done.signal()
        }
        done.wait()
        return result.withLock { $0! }
    }

    /// Writes `text` to stdout; a write error ends the command with status 74 (`EX_IOERR`), as it
    /// ends the service (a reader that went away, EPIPE, too: the answer was not delivered).
    private static func printOut(_ text: String) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                let message = Array("neon-auth: cannot write to stdout: \(String(cString: strerror(n < 0 ? errno : EIO)))\n".utf8)
                _ = message.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
                exit(74)
            }
            offset += n
        }
    }

    private static func failure(_ message: String) -> Int32 {
        let bytes = Array("neon-auth: \(message)\n".utf8)
        _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        return 1
    }

    private static func usageError(_ message: String) -> Int32 {
        let bytes = Array("neon-auth: \(message)\n\(usage)\n".utf8)
        _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        return 2
    }
}
