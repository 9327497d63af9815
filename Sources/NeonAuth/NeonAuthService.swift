import JSONRPC

/// The settings the methods need.
public struct ServiceSettings: Sendable {
    /// API v1 base URL (validated, no trailing slash).
    public var v1BaseURL: String
    /// API v2 base URL returned by `sign` (validated, no trailing slash).
    public var v2BaseURL: String
    /// `NEON-API-VERSION` sent when a request names none.
    public var apiVersion: String
    /// Total deadline of one NeonCRM call, in seconds (quoted in timeout errors).
    public var httpTimeout: Double

    public init(v1BaseURL: String, v2BaseURL: String, apiVersion: String, httpTimeout: Double) {
        self.v1BaseURL = v1BaseURL
        self.v2BaseURL = v2BaseURL
        self.apiVersion = apiVersion
        self.httpTimeout = httpTimeout
    }
}

/// neon-auth's JSON-RPC methods: `sign`, `openSession` and `closeSession`.
public struct NeonAuthService: Sendable {
    public let settings: ServiceSettings
    public let pool: SessionPool
    private let log: Logger?

    public init(settings: ServiceSettings, pool: SessionPool, log: Logger? = nil) {
        self.settings = settings
        self.pool = pool
        self.log = log
    }

    /// The method table: `sign` is immediate (no I/O), the session methods deferred.
    public var handlers: [String: MethodHandler] {
        [
            "sign": .immediate { try self.sign($0) },
            "openSession": .deferred { try await self.openSession($0) },
            "closeSession": .deferred { try await self.closeSession($0) },
        ]
    }

    /// `sign` — params `{"orgId", "apiKey", "apiVersion"?}`.
    /// - Returns: `{"authorization": "Basic …", "headers": {"Authorization", "NEON-API-VERSION"}, "baseUrl"}`.
    /// - Throws: `RPCError` -32602 for missing or invalid params. No network.
    public func sign(_ params: JSONValue?) throws(RPCError) -> JSONValue {
        let p = try Params(params, allowed: ["orgId", "apiKey", "apiVersion"])
        let credential = try Credential.validated(orgId: p.string("orgId"), apiKey: p.string("apiKey"))
        let version = try p.optionalString("apiVersion") ?? settings.apiVersion
        guard NeonAPIVersion.isWellFormed(version) else {
            throw .invalidParams("Invalid params: apiVersion must look like 2.N (e.g. \(NeonAPIVersion.pinned))", field: "apiVersion")
        }
        let authorization = BasicAuth.authorization(for: credential)
        return [
            "authorization": .string(authorization),
            "headers": ["Authorization": .string(authorization), "NEON-API-VERSION": .string(version)],
            "baseUrl": .string(settings.v2BaseURL),
        ]
    }

    /// `openSession` — params `{"orgId", "apiKey", "replace"?}`.
    /// - Returns: `{"userSessionId": string, "reused": bool}`.
    /// - Throws: `RPCError`: -32602, or -32001...-32005 when the login fails.
    public func openSession(_ params: JSONValue?) async throws(RPCError) -> JSONValue {
        let p = try Params(params, allowed: ["orgId", "apiKey", "replace"])
        let credential = try Credential.validated(orgId: p.string("orgId"), apiKey: p.string("apiKey"))
        let replace = try p.optionalString("replace").map(Secret.init)
        let key = SessionPool.Key(v1BaseURL: settings.v1BaseURL, credential: credential)
        do {
            let opened = try await pool.open(key, replace: replace)
            log?.debug("openSession: org \(credential.orgId): \(opened.reused ? "reused pooled session" : "new login")")
            return ["userSessionId": .string(opened.userSessionId.exposedValue), "reused": .bool(opened.reused)]
        } catch {
            let rpcError = error.rpcError(timeout: settings.httpTimeout, redacting: [credential.apiKey])
            log?.info("openSession: org \(credential.orgId): login failed: \(rpcError.message)")
            throw rpcError
        }
    }

    /// `closeSession` — params `{"userSessionId", "logout"?: bool}`.
    /// - Returns: `{"closed": true, "loggedOut": bool}`.
    /// - Throws: `RPCError` -32602, -32010 unknown session, -32011 no holder left.
    public func closeSession(_ params: JSONValue?) async throws(RPCError) -> JSONValue {
        let p = try Params(params, allowed: ["userSessionId", "logout"])
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
}
