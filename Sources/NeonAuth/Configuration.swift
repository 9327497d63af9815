#if canImport(Glibc)
import Glibc
#endif
import JSONRPC

/// neon-auth's start-up configuration, from flags and environment variables (flags win).
public struct Configuration: Sendable, Equatable {
    /// The environment requests use unless their profile names another.
    public var defaultEnvironment = NeonEnvironment.production
    /// Base URLs of the default environment (flags may point them elsewhere, e.g. a test fake).
    public var v1BaseURL = NeonEnvironment.production.v1BaseURL
    public var v2BaseURL = NeonEnvironment.production.v2BaseURL
    /// Whether the API v1 / API v2 base URL was given by flag or environment: then it holds for
    /// every profile, whatever its `environment` says (a test set-up never reaches NeonCRM's hosts).
    public var explicitV1BaseURL = false, explicitV2BaseURL = false
    /// `--credentials PATH`, if given.
    public var credentialsPath: String?
    public var apiVersion = NeonAPIVersion.pinned
    /// NeonCRM's idle window, seconds.
    public var idleTimeout: Double = 1800
    /// Seconds before the idle window ends at which a session is no longer handed out.
    public var idleMargin: Double = 60
    /// Total deadline of one `openSession`'s NeonCRM work (retries included), seconds.
    public var httpTimeout: Double = 10
    /// Seconds without progress (connecting included) after which one HTTP attempt is abandoned.
    public var connectTimeout: Double = 5
    /// Seconds before a session goes stale in which a background refresh starts.
    public var refreshAhead: Double = 120
    /// Seconds a rejected credential fails fast without contacting NeonCRM (0: never cached).
    public var rejectionCache: Double = 10
    /// Seconds allowed for logging out every session at exit.
    public var shutdownTimeout: Double = 3
    public var logLevel: LogLevel = .warn
    /// Which agent holds this process's sessions: the per-user shared one, or a private one.
    public var agentMode: AgentMode = .shared
    /// Seconds with no session and no connection after which a shared agent exits.
    public var agentIdleExit: Double = AgentSettings.defaultIdleExit
    /// What an agent this process starts is started with.
    public var agentSettings: AgentSettings { AgentSettings(configuration: self, idleExit: agentIdleExit) }
    /// The longest request line accepted, bytes.
    public var maxMessageBytes = 1 << 20
    /// The CAs NeonCRM's TLS connections trust (`--ca-file`, `NEON_AUTH_CA_FILE`,
    /// `SSL_CERT_FILE`, `SSL_CERT_DIR`); `nil`: the system's store. Resolved by the front-end
    /// and handed to its agent as flags (``AgentSettings/arguments``).
    public var trust: TrustSettings?

    /// The session pool's timing policy these settings describe.
    public var poolPolicy: SessionPool.Policy {
        var policy = SessionPool.Policy()
        policy.idleTimeout = idleTimeout
        policy.idleMargin = idleMargin
        policy.refreshAhead = refreshAhead
        policy.loginDeadline = httpTimeout
        policy.rejectionTTL = rejectionCache
        policy.sweepInterval = max(1, min(60, (idleTimeout - idleMargin) / 4))
        return policy
    }

    /// What the command line asked for.
    public enum Action: Sendable, Equatable {
        case serve(Configuration)
        case help
        case version
    }

    /// The program's version.
    public static let version = "0.1.0"

    /// One option: flag, environment variable, value placeholder, help text. (A struct, not a
    /// tuple: an array of tuples has its metadata built at run time, at every start-up.)
    struct Option {
        let flag: String, env: String, value: String?, help: String
        init(_ flag: String, _ env: String, _ value: String?, _ help: String) {
            (self.flag, self.env, self.value, self.help) = (flag, env, value, help)
        }
    }

    /// Each option: flag, environment variable, value placeholder, help text.
    static let options: [Option] = [
        Option("--v1-base-url", "NEON_AUTH_V1_BASE_URL", "URL", "API v1 base URL (default: production, \(NeonEnvironment.production.v1BaseURL))"),
        Option("--v2-base-url", "NEON_AUTH_V2_BASE_URL", "URL", "API v2 base URL returned by sign (default: production, \(NeonEnvironment.production.v2BaseURL))"),
        Option("--trial", "NEON_AUTH_TRIAL", nil, "use the trial instance hosts (env: 1, true, yes or on; 0, false, no or off)"),
        Option("--api-version", "NEON_AUTH_API_VERSION", "2.N", "NEON-API-VERSION sent by default (default: \(NeonAPIVersion.pinned))"),
        Option("--idle-timeout", "NEON_AUTH_IDLE_TIMEOUT", "SECONDS", "NeonCRM's session idle window (default: 1800)"),
        Option("--idle-margin", "NEON_AUTH_IDLE_MARGIN", "SECONDS", "stop handing out a session this long before its idle window ends (default: 60)"),
        Option("--credentials", "NEON_AUTH_CREDENTIALS", "PATH", "credentials file (default: $XDG_CONFIG_HOME/neon-auth/credentials.json, else ~/.config/neon-auth/credentials.json)"),
        Option("--ca-file", "NEON_AUTH_CA_FILE", "PATH", "CA certificates (PEM) trusted for NeonCRM instead of the system's (default: SSL_CERT_FILE, else the system store; verification is always on)"),
        Option("--http-timeout", "NEON_AUTH_HTTP_TIMEOUT", "SECONDS", "total deadline of one login, retries included (default: 10)"),
        Option("--connect-timeout", "NEON_AUTH_CONNECT_TIMEOUT", "SECONDS", "give up one HTTP attempt after this long without progress (default: 5)"),
        Option("--refresh-ahead", "NEON_AUTH_REFRESH_AHEAD", "SECONDS", "start a background login this long before a session goes stale (default: 120, at most a quarter of the window)"),
        Option("--rejection-cache", "NEON_AUTH_REJECTION_CACHE", "SECONDS", "fail fast this long after NeonCRM rejected a credential (default: 10; 0 = off)"),
        Option("--shutdown-timeout", "NEON_AUTH_SHUTDOWN_TIMEOUT", "SECONDS", "time allowed to log out every session at exit (default: 3)"),
        Option("--log-level", "NEON_AUTH_LOG_LEVEL", "LEVEL", "error, warn, info or debug (default: warn); logs go to stderr"),
        Option("--agent", "NEON_AUTH_AGENT", "shared|private", "the per-user agent shared by every neon-auth (default), or one of this process's own"),
        Option("--agent-idle-exit", "NEON_AUTH_AGENT_IDLE_EXIT", "SECONDS", "a shared agent exits after this long with no session and no connection (default: 60)"),
        Option("--max-message-bytes", "NEON_AUTH_MAX_MESSAGE_BYTES", "BYTES", "longest request accepted, 1024 to 1073741824 (default: 1048576)"),
    ]

    /// The `--help` text (no secrets: it never prints environment values).
    public static var helpText: String {
        var text = """
        neon-auth \(version): NeonCRM authentication as a JSON-RPC 2.0 service on stdin/stdout.

        Usage: neon-auth [OPTIONS]                       the JSON-RPC service on stdin/stdout
               neon-auth header [--profile NAME] [--api-version 2.N]   Authorization + NEON-API-VERSION lines
               neon-auth session [--profile NAME] [--replace ID]       a user session ID from the shared pool
               neon-auth agent status|stop                  the shared agent's pool, or end it

        Reads JSON-RPC 2.0 requests on stdin, one per line (or LSP Content-Length framing),
        and writes one response per line on stdout; logs go to stderr. Methods:
          sign           the Authorization and NEON-API-VERSION headers for NeonCRM API v2
          openSession    an API v1 user session ID from the pool; closeSession releases it
          status         the pool and counters (nothing secret)
          rpc.discover   the OpenRPC description of all of them
        Sessions live in neon-auth-agent, shared by every neon-auth of this user with the same
        settings (started on first need; it exits after a minute with nothing to do): at end of
        input neon-auth answers what is in flight and exits 0, and its sessions stay pooled for
        the next process. With --agent private they are this process's own, logged out at exit.

        Credentials (never on the command line: argv is visible to every user in ps):
          "orgId" and "apiKey" in the request's params; or "profile": "NAME" from the
          credentials file; or neither: profile "default", which NEON_ORG_ID and NEON_API_KEY
          define when both are set (else the file's "default" profile). The file (mode 600):
            {"profiles": {"NAME": {"orgId": "...", "apiKey": "...",
                                   "environment": "trial", "apiVersion": "2.N"}}}
          ("environment" and "apiVersion" are optional).

        Example, with NEON_ORG_ID and NEON_API_KEY exported:
          echo '{"jsonrpc":"2.0","id":1,"method":"sign"}' | neon-auth

        Options (each also read from the environment variable shown; flags win):

        """
        for option in options {
            let left = "  " + option.flag + (option.value.map { " " + $0 } ?? "")
            text += left + String(repeating: " ", count: max(2, 30 - left.count)) + option.help + "\n"
            text += String(repeating: " ", count: 30) + "[env: \(option.env)]\n"
        }
        text += "  --help                      show this help\n  --version                   show the version\n"
        return text
    }

    /// Whether `flag` (without an inline `=value`) takes a value as the next argument.
    public static func takesValue(_ flag: String) -> Bool {
        options.contains { $0.flag == flag && $0.value != nil }
    }

    /// Parses the command line and environment.
    /// - Parameters:
    ///   - arguments: the arguments after the program name.
    ///   - environment: the process environment.
    /// - Returns: what to do.
    /// - Throws: `ConfigurationError` naming the bad flag or variable (never echoing a secret:
    ///   no option takes one).
    public static func parse(arguments: [String], environment: EnvironmentVariables) throws -> Action {
        var values: [String: String] = [:]  // flag -> value
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if argument == "--help" || argument == "-h" { return .help }
            if argument == "--version" { return .version }
            let (flag, inline) = argument.split(separator: "=", maxSplits: 1).map(String.init).pairOrSingle
            guard let option = options.first(where: { $0.flag == flag }) else {
                throw ConfigurationError("unknown option '\(flag.prefix(60))' (see --help)")
            }
            if option.value == nil {
                if inline != nil { throw ConfigurationError("\(flag) takes no value") }
                values[flag] = "1"
            } else if let inline {
                values[flag] = inline
            } else {
                guard index < arguments.count else { throw ConfigurationError("\(flag) needs a value (\(option.value!))") }
                values[flag] = arguments[index]
                index += 1
            }
        }
        func value(_ flag: String) -> (String, String)? {
            if let v = values[flag] { return (v, flag) }
            let env = options.first { $0.flag == flag }!.env
            if let v = environment[env], !v.isEmpty { return (v, env) }
            return nil
        }
        var config = Configuration()
        if let (raw, source) = value("--trial") {
            switch raw.lowercased() {
            case "1", "true", "yes", "on":
                config.defaultEnvironment = .trial
                config.v1BaseURL = NeonEnvironment.trial.v1BaseURL
                config.v2BaseURL = NeonEnvironment.trial.v2BaseURL
            case "0", "false", "no", "off": break
            default: throw ConfigurationError("\(source): expected 1, true, yes or on (or 0, false, no, off)")
            }
        }
        if let (raw, source) = value("--v1-base-url") {
            config.v1BaseURL = try BaseURLPolicy.validate(raw, name: source)
            config.explicitV1BaseURL = true
        }
        if let (raw, source) = value("--v2-base-url") {
            config.v2BaseURL = try BaseURLPolicy.validate(raw, name: source)
            config.explicitV2BaseURL = true
        }
        if let (raw, source) = value("--api-version") {
            guard NeonAPIVersion.isWellFormed(raw) else { throw ConfigurationError("\(source): expected 2.N, e.g. \(NeonAPIVersion.pinned)") }
            config.apiVersion = raw
        }
        func seconds(_ flag: String, allowZero: Bool = false) throws -> Double? {
            guard let (raw, source) = value(flag) else { return nil }
            guard let s = Double(raw), s.isFinite, allowZero ? s >= 0 : s > 0, s <= 1e7 else {
                throw ConfigurationError("\(source): expected a \(allowZero ? "non-negative" : "positive") number of seconds")
            }
            return s
        }
        if let s = try seconds("--idle-timeout") { config.idleTimeout = s }
        if let s = try seconds("--idle-margin", allowZero: true) { config.idleMargin = s }
        if let s = try seconds("--http-timeout") { config.httpTimeout = s }
        if let s = try seconds("--shutdown-timeout") { config.shutdownTimeout = s }
        if let s = try seconds("--connect-timeout") { config.connectTimeout = s }
        if let s = try seconds("--refresh-ahead", allowZero: true) { config.refreshAhead = s }
        if let s = try seconds("--rejection-cache", allowZero: true) { config.rejectionCache = s }
        if let (raw, _) = value("--credentials") { config.credentialsPath = raw }
        config.trust = try TrustSettings.resolve(explicit: value("--ca-file").map { (value: $0.0, source: $0.1) },
                                                 environment: environment)
        if value("--idle-margin") == nil {  // not given (an empty variable counts as not given)
            config.idleMargin = min(config.idleMargin, config.idleTimeout / 10)
        }
        guard config.idleMargin < config.idleTimeout else {
            throw ConfigurationError("--idle-margin must be smaller than --idle-timeout")
        }
        let window = config.idleTimeout - config.idleMargin
        if value("--refresh-ahead") == nil {
            config.refreshAhead = min(config.refreshAhead, window / 4)
        } else if config.refreshAhead >= window {
            throw ConfigurationError("--refresh-ahead must be smaller than --idle-timeout minus --idle-margin (\(formatSeconds(window)) s)")
        }
        if let (raw, source) = value("--log-level") {
            guard let level = LogLevel(name: raw) else { throw ConfigurationError("\(source): expected error, warn, info or debug") }
            config.logLevel = level
        }
        if let (raw, source) = value("--agent") {
            guard let mode = AgentMode(rawValue: raw) else { throw ConfigurationError("\(source): expected shared or private") }
            config.agentMode = mode
        }
        if let s = try seconds("--agent-idle-exit", allowZero: true) { config.agentIdleExit = s }
        if let (raw, source) = value("--max-message-bytes") {
            guard let n = Int(raw), n >= 1024, n <= 1 << 30 else {
                throw ConfigurationError("\(source): expected a number of bytes from 1024 to 1073741824")
            }
            config.maxMessageBytes = n
        }
        return .serve(config)
    }
}

private extension Array where Element == String {
    var pairOrSingle: (String, String?) { (self.first ?? "", count > 1 ? self[1] : nil) }
}

extension Configuration {
    /// This process's environment variables (`environ`), all at once. Entries without `=` or
    /// not valid UTF-8 are skipped; the name ends at the first `=` byte and the first of
    /// duplicate names wins, as `getenv(3)` does. Start-up reads variables one at a time
    /// instead (``EnvironmentVariables/process``), with the same result for each name.
    public static func processEnvironment() -> [String: String] {
        var count = 0
        while environ[count] != nil { count += 1 }
        var result: [String: String] = [:]
        result.reserveCapacity(count)
        for index in 0..<count {
            guard let pointer = environ[index], let text = String(validatingCString: pointer),
                  let equals = text.utf8.firstIndex(of: UInt8(ascii: "=")) else { continue }
            let name = String(text[..<equals])
            if result[name] == nil { result[name] = String(text[text.utf8.index(after: equals)...]) }
        }
        return result
    }
}

/// Environment variables, read one name at a time: the process's own (``process``: `environ`,
/// scanned when a variable is read, so that start-up builds no dictionary of every variable),
/// or a fixed set (a dictionary literal: tests, the agent's empty one).
///
/// A name reads what ``Configuration/processEnvironment()`` would map it to: the first entry
/// of `environ` whose name equals it and that is valid UTF-8. (neon-auth never changes its
/// environment, so reading it late is reading it at start-up.)
public struct EnvironmentVariables: Sendable, ExpressibleByDictionaryLiteral {
    /// `nil`: the process's.
    private let fixed: [String: String]?

    /// This process's environment.
    public static let process = EnvironmentVariables(fixed: nil)

    private init(fixed: [String: String]?) { self.fixed = fixed }

    /// Exactly `variables`.
    public init(_ variables: [String: String]) { fixed = variables }

    public init(dictionaryLiteral elements: (String, String)...) {
        fixed = Dictionary(elements) { first, _ in first }
    }

    /// The value of `name`, if set.
    public subscript(name: String) -> String? {
        if let fixed { return fixed[name] }
        return Self.processValue(name)
    }

    /// Every variable (for the agent's environment); the process's are read when asked for.
    public var all: [String: String] { fixed ?? Configuration.processEnvironment() }

    /// `name`'s value in `environ`, as ``Configuration/processEnvironment()`` maps it.
    private static func processValue(_ name: String) -> String? {
        var name = name
        return name.withUTF8 { wanted -> String? in
            // All of neon-auth's names are ASCII without "=": most entries are then ruled out
            // by their first byte.
            let plain = wanted.allSatisfy { $0 < 0x80 && $0 != UInt8(ascii: "=") }
            var index = 0
            while let pointer = environ[index] {
                index += 1
                if let value = value(of: pointer, ifNamed: wanted, plain: plain) { return value }
            }
            return nil
        }
    }

    /// The value of the entry at `pointer` when its name equals `wanted` (as Strings: a
    /// name with non-ASCII bytes can equal an ASCII one, e.g. with U+212A KELVIN SIGN for K)
    /// and the whole entry is valid UTF-8; else `nil`.
    private static func value(of pointer: UnsafeMutablePointer<CChar>, ifNamed wanted: UnsafeBufferPointer<UInt8>,
                              plain: Bool) -> String? {
        let length = pointer.withMemoryRebound(to: UInt8.self, capacity: 1) { entry -> Int? in
            if plain {
                // An ASCII first byte that differs: the name cannot equal `wanted` (its first
                // Unicode scalar, composed or not, is not wanted's).
                let first = entry[0]
                if first < 0x80 && first != (wanted.isEmpty ? UInt8(ascii: "=") : wanted[0]) { return nil }
                // strncmp stops at the entry's end.
                if (wanted.isEmpty || strncmp(pointer, UnsafeRawPointer(wanted.baseAddress!).assumingMemoryBound(to: CChar.self),
                                             wanted.count) == 0) && entry[wanted.count] == UInt8(ascii: "=") {
                    return wanted.count
                }
            }
            // The name: the bytes before the first "=" (none: not a variable).
            var end = 0
            var ascii = true
            while entry[end] != UInt8(ascii: "=") {
                if entry[end] == 0 { return nil }
                if entry[end] >= 0x80 { ascii = false }
                end += 1
            }
            // Two ASCII strings are equal exactly when their bytes are.
            if plain && ascii { return nil }
            guard let entryName = String(validating: UnsafeBufferPointer(start: entry, count: end), as: UTF8.self),
                  entryName == String(decoding: wanted, as: UTF8.self) else { return nil }
            return end
        }
        // An entry that is not valid UTF-8 is skipped (a later one of the same name may follow).
        guard let length, let text = String(validatingCString: pointer) else { return nil }
        let utf8 = text.utf8
        return String(text[utf8.index(utf8.startIndex, offsetBy: length + 1)...])
    }
}
