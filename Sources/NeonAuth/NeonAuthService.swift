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
    /// Base URLs given by flag or environment: each serves every profile.
    public var pinnedV1: Bool, pinnedV2: Bool

    public init(defaultEnvironment: NeonEnvironment = .production, defaultEndpoints: Endpoints, apiVersion: String, httpTimeout: Double,
                pinnedV1: Bool = false, pinnedV2: Bool = false) {
        self.defaultEnvironment = defaultEnvironment
        self.defaultEndpoints = defaultEndpoints
        self.apiVersion = apiVersion
        self.httpTimeout = httpTimeout
        self.pinnedV1 = pinnedV1
        self.pinnedV2 = pinnedV2
    }

    /// Settings for the given configuration.
    public init(_ configuration: Configuration) {
        let env = configuration.defaultEnvironment
        let custom = configuration.v1BaseURL != env.v1BaseURL || configuration.v2BaseURL != env.v2BaseURL
        self.init(defaultEnvironment: env,
                  defaultEndpoints: Endpoints(v1BaseURL: configuration.v1BaseURL, v2BaseURL: configuration.v2BaseURL,
                                              environment: custom ? "custom" : env.rawValue),
                  apiVersion: configuration.apiVersion, httpTimeout: configuration.httpTimeout,
                  pinnedV1: configuration.explicitV1BaseURL, pinnedV2: configuration.explicitV2BaseURL)
    }

    /// The endpoints for a profile's environment (`nil`: the default environment). A base URL
    /// given explicitly serves every profile: no request and no `baseUrl` goes to NeonCRM's own
    /// hosts because a profile says `production` or `trial`; one not given follows the profile.
    public func endpoints(for environment: NeonEnvironment?) -> Endpoints {
        guard let environment, environment != defaultEnvironment, !(pinnedV1 && pinnedV2) else { return defaultEndpoints }
        return Endpoints(v1BaseURL: pinnedV1 ? defaultEndpoints.v1BaseURL : environment.v1BaseURL,
                         v2BaseURL: pinnedV2 ? defaultEndpoints.v2BaseURL : environment.v2BaseURL,
                         environment: pinnedV1 || pinnedV2 ? "custom" : environment.rawValue)
    }
}

/// Counters kept outside the pool: signs and JSON-RPC errors by code.
public final class ServiceCounters: Sendable {
    private let signs = Atomic<Int>(0)
    private let errors = Mutex([Int: Int]())
    public init() {}

    /// Records one answered call (for `Dispatcher`'s observer; once per `sign`, so lock-free then).
    public func record(method: String, error: ErrorCode?) {
        if let error {
            errors.withLock { $0[error.rawValue, default: 0] += 1 }
        } else if method == "sign" {
            signs.add(1, ordering: .relaxed)
        }
    }

    var snapshot: (signs: Int, errors: [Int: Int]) { (signs.load(ordering: .relaxed), errors.withLock { $0 }) }
}

/// neon-auth's JSON-RPC methods: `sign` (here, no network), `openSession`, `closeSession` and
/// `status` (the session methods and the pool part of `status` through ``AgentClient``).
public struct NeonAuthService: Sendable {
    public let settings: ServiceSettings
    public let agent: AgentClient
    public let credentials: CredentialStore?
    public let counters: ServiceCounters
    private let log: Logger?
    private let startedAt: Double

    public init(settings: ServiceSettings, agent: AgentClient, credentials: CredentialStore? = nil,
                counters: ServiceCounters = ServiceCounters(), log: Logger? = nil) {
        self.settings = settings
        self.agent = agent
        self.credentials = credentials
        self.counters = counters
        self.log = log
        startedAt = monotonicSeconds()
    }

    /// Fast paths (see `FastPath`): `sign` for inline ASCII credentials.
    public var fastPaths: [String: FastPath] {
        let sign = SignFastPath(settings: settings)
        return ["sign": { request, out in sign.answer(request, &out) }]
    }

    /// The method table: `sign` and `rpc.discover` need no network; the session methods are deferred.
    public var handlers: [String: MethodHandler] {
        [
            "sign": .immediate { try self.sign($0) },
            "openSession": .started { params, reply in self.openSession(params) { reply($0.mapError { $0 }) } },
            "closeSession": .started { params, reply in self.closeSession(params) { reply($0.mapError { $0 }) } },
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
        /// The pool's key for it (v1 base URL, credential): what a lease is held under.
        var poolKey: SessionPool.Key { SessionPool.Key(v1BaseURL: endpoints.v1BaseURL, credential: credential) }
        /// `org X (profile Y)`, for log lines.
        var who: String { "org \(credential.orgId)" + (profile.map { " (profile \($0))" } ?? "") }
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
    /// Started on the reading thread (the request reaches the agent in order); answered through
    /// `reply` with `{"userSessionId": string, "reused": bool}`, or an `RPCError`: -32602,
    /// -32020...-32022, -32001...-32006 when the agent or the login fails, -32023 when the key
    /// changed during the login.
    /// A profile whose key changes while its login is with NeonCRM is looked up once more and
    /// opened with the key the file holds now; a second change in that time, or inline
    /// credentials (which cannot be looked up again), get -32023.
    /// - Parameter lasting: the caller keeps no hold (`neon-auth session`): see ``AgentService``.
    public func openSession(_ params: JSONValue?, lasting: Bool = false, reply: @escaping @Sendable (Result<JSONValue, RPCError>) -> Void) {
        let p: Params
        let resolved: Resolved
        let replace: String?
        do throws(RPCError) {
            p = try Params(params, allowed: Self.openSessionMembers)
            resolved = try resolve(p)
            replace = try p.optionalString("replace")
        } catch {
            reply(.failure(error))
            return
        }
        if let replace {
            agent.noteForwardedClose(Secret(replace), logout: true)  // reported invalid: never handed out again from a lease
        } else if !lasting, let id = agent.openLeased(resolved.poolKey) {
            log?.debug("openSession: \(resolved.who): reused pooled session (lease)")
            reply(.success(["userSessionId": .string(id.exposedValue), "reused": true]))
            return
        }
        open(resolved, replace: replace, params: p, attempt: 1, flush: false, lasting: lasting, reply: reply)
    }

    /// - Parameter flush: `false` on the reading thread, which flushes the agent's queue once per read.
    private func open(_ resolved: Resolved, replace: String?, params p: Params, attempt: Int, flush: Bool, lasting: Bool = false,
                      reply: @escaping @Sendable (Result<JSONValue, RPCError>) -> Void) {
        let who = resolved.who
        var request: JSONObject = [
            "v1BaseUrl": .string(resolved.endpoints.v1BaseURL), "orgId": .string(resolved.credential.orgId),
            "apiKey": .string(resolved.credential.apiKey.exposedValue), "environment": .string(resolved.endpoints.environment),
        ]
        if let profile = resolved.profile { request["profile"] = .string(profile) }
        if let replace { request["replace"] = .string(replace) }
        if lasting { request["lasting"] = true }
        let key = resolved.poolKey
        let askedAt = bootTimeSeconds()
        agent.start("openSession", .object(request), flush: flush) { [self] result in
            switch result {
            case .success(let opened?):
                log?.debug("openSession: \(who): \(opened["reused"] == .bool(true) ? "reused pooled session" : "new login")")
                if !lasting { agent.noteOpened(key, opened, askedAt: askedAt) }
                // The client gets the documented members only (not the agent's lease).
                reply(.success(["userSessionId": opened["userSessionId"] ?? .null, "reused": opened["reused"] ?? .bool(false)]))
            case .success(nil):
                reply(.failure(AgentClient.unavailable("no agent runs", retryable: true)))
            case .failure(let error):
                if error.code == .credentialsChanged, attempt == 1, resolved.profile != nil,
                   let again = try? resolve(p), again.credential != resolved.credential {
                    log?.info("openSession: \(who): the profile's key changed during the login: opening with the new key")
                    open(again, replace: nil, params: p, attempt: 2, flush: true, lasting: lasting, reply: reply)
                    return
                }
                log?.info("openSession: \(who): \(error.message)")
                reply(.failure(error))
            }
        }
    }

    /// `closeSession` — params `{"userSessionId", "logout"?: bool}`. Started on the reading
    /// thread; answered with `{"closed": true, "loggedOut": bool}` or an `RPCError`: -32602,
    /// -32010 unknown session (not opened by this process, or no longer pooled), -32011 no hold
    /// of this process left, -32006 agent unavailable.
    public func closeSession(_ params: JSONValue?, reply: @escaping @Sendable (Result<JSONValue, RPCError>) -> Void) {
        let id: String, logout: Bool
        do throws(RPCError) {
            let p = try Params(params, allowed: Self.closeSessionMembers)
            id = try p.string("userSessionId")
            guard !id.isEmpty else { throw RPCError.invalidParams("Invalid params: userSessionId must not be empty", field: "userSessionId") }
            logout = try p.optionalBool("logout") ?? false
        } catch {
            reply(.failure(error))
            return
        }
        if !logout && agent.closeLeased(Secret(id)) {
            reply(.success(["closed": true, "loggedOut": false]))
            return
        }
        agent.noteForwardedClose(Secret(id), logout: logout)
        agent.start("closeSession", ["userSessionId": .string(id), "logout": .bool(logout)], spawn: false, flush: false) { result in
            switch result {
            case .success(let answer?): reply(.success(answer))
            case .success(nil): reply(.failure(AgentService.unknownSession))  // no agent: nothing this process opened is pooled
            case .failure(let error): reply(.failure(error))
            }
        }
    }

    /// Logs out every pooled session of keys retired from the credentials file (through the
    /// agent, if one is running; none is started for it).
    public func evict(_ retired: [Credential]) async {
        let list = JSONValue.array(retired.map { ["orgId": .string($0.orgId), "apiKey": .string($0.apiKey.exposedValue)] })
        _ = try? await agent.call("evict", ["credentials": list], spawn: false)
    }

    /// `status` — no params.
    /// - Returns: `{"uptimeSeconds", "sessions": [{"orgId", "profile", "environment", "holders",
    ///   "ageSeconds", "idleSeconds", "refreshing", "current"}], "counters": {...}}` — nothing in
    ///   it can be used to act as the user (no keys, no session IDs). Sessions and pool counters
    ///   are the agent's (every front-end's, for the shared agent; `profile` is null: the agent
    ///   shows org IDs only); no agent is started for it.
    public func status(_ params: JSONValue?) async throws(RPCError) -> JSONValue {
        _ = try Params(params, allowed: [])
        let pool: JSONValue? = try? await agent.call("status", .object(JSONObject()), spawn: false)
        let (signs, errors) = counters.snapshot
        var counterMembers: [(key: String, value: JSONValue)] = []
        for name in ["logins", "loginFailures", "loginRetries", "cachedRejections", "reuses", "replaces", "logouts", "logoutFailures"] {
            counterMembers.append((name, pool?["counters"]?[name] ?? .number("0")))
        }
        counterMembers.append(("signs", .number(String(signs))))
        counterMembers.append(("errors", .object(JSONObject(errors.sorted { $0.key > $1.key }.map { (key: String($0.key), value: .number(String($0.value))) }))))
        var sessions: [JSONValue] = []
        if case .array(let items)? = pool?["sessions"] {
            sessions = items.map { item in
                var entry = JSONObject()
                entry["orgId"] = item["orgId"] ?? .null
                entry["profile"] = item["profile"] ?? .null
                entry["environment"] = item["environment"] ?? .null
                for name in ["holders", "ageSeconds", "idleSeconds"] { entry[name] = item[name] ?? .number("0") }
                for name in ["refreshing", "current"] { entry[name] = item[name] ?? .bool(false) }
                return .object(entry)
            }
        }
        return [
            "uptimeSeconds": .number(format1(monotonicSeconds() - startedAt)),
            "sessions": .array(sessions),
            "counters": .object(JSONObject(counterMembers)),
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
