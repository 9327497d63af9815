import JSONRPC
import Synchronization

/// Where one environment's APIs live.
public struct Endpoints: Sendable, Equatable {
    /// API v1 base URL (validated, no trailing slash).
    public var v1BaseURL: String
    /// API v2 base URL returned by `sign` (validated, no trailing slash).
    public var v2BaseURL: String
    /// `production`, `trial`, or `custom` when flags point elsewhere (e.g. a test fake).
    public var environment: String

    public init(v1BaseURL: String, v2BaseURL: String, environment: String) {
        self.v1BaseURL = v1BaseURL
        self.v2BaseURL = v2BaseURL
        self.environment = environment
    }
}

/// The settings the methods need.
public struct ServiceSettings: Sendable {
    /// The environment used unless a profile names another.
    public var defaultEnvironment: NeonEnvironment
    /// Its endpoints (flags may override the built-in hosts).
    public var defaultEndpoints: Endpoints
    /// `NEON-API-VERSION` sent when neither the request nor the profile names one.
    public var apiVersion: String
    /// Total deadline of one login, seconds (quoted in timeout errors).
    public var httpTimeout: Double
    /// Base URLs given by flag or environment: `defaultEndpoints` serve every profile.
    public var pinnedEndpoints: Bool

    public init(defaultEnvironment: NeonEnvironment = .production, defaultEndpoints: Endpoints, apiVersion: String, httpTimeout: Double,
                pinnedEndpoints: Bool = false) {
        self.defaultEnvironment = defaultEnvironment
        self.defaultEndpoints = defaultEndpoints
        self.apiVersion = apiVersion
        self.httpTimeout = httpTimeout
        self.pinnedEndpoints = pinnedEndpoints
    }

    /// Settings for the given configuration.
    public init(_ configuration: Configuration) {
        let env = configuration.defaultEnvironment
        let custom = configuration.v1BaseURL != env.v1BaseURL || configuration.v2BaseURL != env.v2BaseURL
        self.init(defaultEnvironment: env,
                  defaultEndpoints: Endpoints(v1BaseURL: configuration.v1BaseURL, v2BaseURL: configuration.v2BaseURL,
                                              environment: custom ? "custom" : env.rawValue),
                  apiVersion: configuration.apiVersion, httpTimeout: configuration.httpTimeout,
                  pinnedEndpoints: configuration.explicitBaseURLs)
    }

    /// The endpoints for a profile's environment (`nil`: the default environment). When base
    /// URLs were given explicitly they serve every profile: no request and no `baseUrl` goes to
    /// NeonCRM's own hosts because a profile says `production` or `trial`.
    public func endpoints(for environment: NeonEnvironment?) -> Endpoints {
        guard !pinnedEndpoints, let environment, environment != defaultEnvironment else { return defaultEndpoints }
        return Endpoints(v1BaseURL: environment.v1BaseURL, v2BaseURL: environment.v2BaseURL, environment: environment.rawValue)
    }
}

/// Counters kept outside the pool: signs and JSON-RPC errors by code.
public final class ServiceCounters: Sendable {
    private struct State {
        var signs = 0
        var errors: [Int: Int] = [:]
    }
    private let state = Mutex(State())
    public init() {}

    /// Records one answered call (for `Dispatcher`'s observer).
    public func record(method: String, error: ErrorCode?) {
        state.withLock { s in
            if let error { s.errors[error.rawValue, default: 0] += 1 } else if method == "sign" { s.signs += 1 }
        }
    }

    var snapshot: (signs: Int, errors: [Int: Int]) { state.withLock { ($0.signs, $0.errors) } }
}

/// neon-auth's JSON-RPC methods: `sign`, `openSession`, `closeSession` and `status`.
public struct NeonAuthService: Sendable {
    public let settings: ServiceSettings
    public let pool: SessionPool
    public let credentials: CredentialStore?
    public let counters: ServiceCounters
    private let log: Logger?
    private let startedAt: Double

    public init(settings: ServiceSettings, pool: SessionPool, credentials: CredentialStore? = nil,
                counters: ServiceCounters = ServiceCounters(), log: Logger? = nil) {
        self.settings = settings
        self.pool = pool
        self.credentials = credentials
        self.counters = counters
        self.log = log
        startedAt = monotonicSeconds()
    }

    /// Fast paths (see `FastPath`): `sign` for inline ASCII credentials; `openSession` handing
    /// out a fresh pooled session for inline ASCII credentials and `closeSession` releasing a
    /// hold (see ``SessionFastPaths``). `openSession`'s is left out at debug level, where the
    /// general path logs each call.
    public var fastPaths: [String: FastPath] {
        let sign = SignFastPath(settings: settings)
        let sessions = SessionFastPaths(pool: pool, v1BaseURL: settings.defaultEndpoints.v1BaseURL)
        var paths: [String: FastPath] = [
            "sign": { request, out in sign.answer(request, &out) },
            "closeSession": { request, out in sessions.close(request, &out) },
        ]
        if log?.enabled(.debug) != true {
            paths["openSession"] = { request, out in sessions.open(request, &out) }
        }
        return paths
    }

    /// The method table: `sign` and `status` need no network; the session methods are deferred.
    public var handlers: [String: MethodHandler] {
        [
            "sign": .immediate { try self.sign($0) },
            "openSession": .deferred { try await self.openSession($0) },
            "closeSession": .deferred { try await self.closeSession($0) },
            "status": .deferred { try await self.status($0) },
            "rpc.discover": .immediate { params in
                _ = try Params(params, allowed: [])
                return OpenRPCDocument.value
            },
        ]
    }

    static let signMembers: Set<String> = ["orgId", "apiKey", "profile", "apiVersion"]
    static let openSessionMembers: Set<String> = ["orgId", "apiKey", "profile", "replace"]
    static let closeSessionMembers: Set<String> = ["userSessionId", "logout"]

    /// A request's credential, resolved from inline `orgId`/`apiKey` or a profile.
    struct Resolved {
        var credential: Credential
        var endpoints: Endpoints
        var apiVersion: String?
        var profile: String?
    }

    /// Inline `orgId` + `apiKey`, or `profile`, or neither (profile `default`).
    func resolve(_ p: Params) throws(RPCError) -> Resolved {
        let profileName = try p.optionalString("profile")
        let hasInline = p.has("orgId") || p.has("apiKey")
        if profileName != nil, hasInline {
            throw .invalidParams("Invalid params: give either profile or orgId and apiKey, not both", field: "profile")
        }
        if hasInline {
            let credential = try Credential.validated(orgId: p.string("orgId"), apiKey: p.string("apiKey"))
            return Resolved(credential: credential, endpoints: settings.defaultEndpoints, apiVersion: nil, profile: nil)
        }
        let name = profileName ?? "default"
        guard !name.isEmpty else { throw .invalidParams("Invalid params: profile must not be empty", field: "profile") }
        guard let credentials else {
            throw RPCError(.noCredentials, "No credentials: give orgId and apiKey", data: ["searched": []])
        }
        let profile = try credentials.profile(named: name)
        return Resolved(credential: profile.credential, endpoints: settings.endpoints(for: profile.environment),
                        apiVersion: profile.apiVersion, profile: profile.name)
    }

    /// `sign` — params `{"orgId", "apiKey"} | {"profile"} | {}`, plus `"apiVersion"?`.
    /// - Returns: `{"authorization": "Basic …", "headers": {"Authorization", "NEON-API-VERSION"}, "baseUrl"}`.
    /// - Throws: `RPCError` -32602 for invalid params, -32020...-32022 for profile problems. No network.
    public func sign(_ params: JSONValue?) throws(RPCError) -> JSONValue {
        let p = try Params(params, allowed: Self.signMembers)
        let resolved = try resolve(p)
        let version = try p.optionalString("apiVersion") ?? resolved.apiVersion ?? settings.apiVersion
        guard NeonAPIVersion.isWellFormed(version) else {
            throw .invalidParams("Invalid params: apiVersion must look like 2.N (e.g. \(NeonAPIVersion.pinned))", field: "apiVersion")
        }
        let authorization = BasicAuth.authorization(for: resolved.credential)
        return [
            "authorization": .string(authorization),
            "headers": ["Authorization": .string(authorization), "NEON-API-VERSION": .string(version)],
            "baseUrl": .string(resolved.endpoints.v2BaseURL),
        ]
    }

    /// `openSession` — params `{"orgId", "apiKey"} | {"profile"} | {}`, plus `"replace"?`.
    /// - Returns: `{"userSessionId": string, "reused": bool}`.
    /// - Throws: `RPCError`: -32602, -32020...-32022, or -32001...-32005 when the login fails.
    /// A profile whose key changes while its login is with NeonCRM is looked up once more and
    /// opened with the key the file holds now; a second change in that time, or inline
    /// credentials (which cannot be looked up again), get -32023.
    public func openSession(_ params: JSONValue?) async throws(RPCError) -> JSONValue {
        let p = try Params(params, allowed: Self.openSessionMembers)
        var resolved = try resolve(p)
        let replace = try p.optionalString("replace").map(Secret.init)
        var attempt = 0
        while true {
            attempt += 1
            let key = SessionPool.Key(v1BaseURL: resolved.endpoints.v1BaseURL, credential: resolved.credential)
            let who = "org \(resolved.credential.orgId)" + (resolved.profile.map { " (profile \($0))" } ?? "")
            do {
                let opened = try await pool.open(key, label: SessionPool.Label(profile: resolved.profile, environment: resolved.endpoints.environment),
                                                 replace: attempt == 1 ? replace : nil)
                log?.debug("openSession: \(who): \(opened.reused ? "reused pooled session" : "new login")")
                return ["userSessionId": .string(opened.userSessionId.exposedValue), "reused": .bool(opened.reused)]
            } catch {
                if error == .credentialsChanged, attempt == 1, resolved.profile != nil {
                    let again = try resolve(p)
                    if again.credential != resolved.credential {
                        log?.info("openSession: \(who): the profile's key changed during the login: opening with the new key")
                        resolved = again
                        continue
                    }
                }
                let rpcError = error.rpcError(timeout: settings.httpTimeout, redacting: resolved.credential)
                log?.info("openSession: \(who): \(rpcError.message)")
                throw rpcError
            }
        }
    }

    /// `closeSession` — params `{"userSessionId", "logout"?: bool}`.
    /// - Returns: `{"closed": true, "loggedOut": bool}`.
    /// - Throws: `RPCError` -32602, -32010 unknown session, -32011 no holder left.
    public func closeSession(_ params: JSONValue?) async throws(RPCError) -> JSONValue {
        let p = try Params(params, allowed: Self.closeSessionMembers)
        let id = try p.string("userSessionId")
        guard !id.isEmpty else { throw .invalidParams("Invalid params: userSessionId must not be empty", field: "userSessionId") }
        let logout = try p.optionalBool("logout") ?? false
        do {
            let loggedOut = try await pool.close(Secret(id), logout: logout)
            return ["closed": true, "loggedOut": .bool(loggedOut)]
        } catch {
            switch error {
            case .unknownSession:
                throw RPCError(.unknownSession, "Unknown session: not issued by this process or no longer pooled")
            case .notHeld:
                throw RPCError(.sessionNotHeld, "Session has no holder left to release (pass logout: true to log it out)")
            }
        }
    }

    /// `status` — no params.
    /// - Returns: `{"uptimeSeconds", "sessions": [{"orgId", "profile", "environment", "holders",
    ///   "ageSeconds", "idleSeconds", "refreshing", "current"}], "counters": {...}}` — nothing in
    ///   it can be used to act as the user (no keys, no session IDs).
    public func status(_ params: JSONValue?) async throws(RPCError) -> JSONValue {
        _ = try Params(params, allowed: [])
        let sessions = await pool.sessions()
        let poolCounters = await pool.counters
        let (signs, errors) = counters.snapshot
        func seconds(_ s: Double) -> JSONValue { .number(String(format1(s))) }
        return [
            "uptimeSeconds": seconds(monotonicSeconds() - startedAt),
            "sessions": .array(sessions.map { info in
                [
                    "orgId": .string(info.orgId),
                    "profile": info.label.profile.map(JSONValue.string) ?? .null,
                    "environment": .string(info.label.environment),
                    "holders": .number(String(info.holders)),
                    "ageSeconds": seconds(info.ageSeconds),
                    "idleSeconds": seconds(info.idleSeconds),
                    "refreshing": .bool(info.refreshing),
                    "current": .bool(info.current),
                ]
            }),
            "counters": [
                "logins": .number(String(poolCounters.logins)),
                "loginFailures": .number(String(poolCounters.loginFailures)),
                "loginRetries": .number(String(poolCounters.loginRetries)),
                "cachedRejections": .number(String(poolCounters.rejectionsServedFromCache)),
                "reuses": .number(String(poolCounters.reuses)),
                "replaces": .number(String(poolCounters.replaces)),
                "logouts": .number(String(poolCounters.logouts)),
                "logoutFailures": .number(String(poolCounters.logoutFailures)),
                "signs": .number(String(signs)),
                "errors": .object(JSONObject(errors.sorted { $0.key > $1.key }.map { (key: String($0.key), value: .number(String($0.value))) })),
            ],
        ]
    }
}

extension OpenRPCDocument {
    /// The document as a JSON value, parsed once (it is embedded from schemas/openrpc.json,
    /// which a test keeps valid and identical).
    static let value: JSONValue = (try? JSONReader.parse(text)) ?? .object(JSONObject())
}

/// `seconds` with one decimal, as a JSON number lexeme (`12.3`, `0.0`).
func format1(_ seconds: Double) -> String {
    let tenths = Int((max(0, seconds) * 10).rounded())
    return "\(tenths / 10).\(tenths % 10)"
}
