#if canImport(Glibc)
import Glibc
#endif
import JSONRPC
import Synchronization

/// The neon-auth agent's JSON-RPC methods, served to each front-end connection on its Unix
/// socket (or, for a private agent, on its one socketpair). The session pool lives here and
/// only here; front-ends resolve credentials and forward them.
///
/// Methods (params by name):
/// - `hello` `{"protocol": 1}` → `{"protocol": 1, "pid", "version"}`: the handshake.
/// - `openSession` `{"v1BaseUrl", "orgId", "apiKey", "profile"?, "environment"?, "replace"?,
///   "lasting"?}` → `{"userSessionId", "reused", "leaseSeconds"}`; the hold belongs to this
///   connection. With `lasting` (a one-shot `neon-auth session`), a session due for refresh is
///   not handed out: the caller gets the refreshed one (see
///   ``SessionPool/open(_:label:replace:releasingHold:lasting:)``). `leaseSeconds`: for that
///   long the front-end may hand the same session out again itself, telling the agent with
///   `holdSession` (see ``SessionPool/leaseWindow``), unless told `sessionRetired` first.
/// - `holdSession` `{"userSessionId"}` → `{"held": true, "leaseSeconds"}`: one more hold of this
///   connection on a session handed to it before (a front-end handed it out again from its
///   lease), marking it used; -32010 when it is not pooled any more, or stale.
/// - `closeSession` `{"userSessionId", "logout"?}` → `{"closed": true, "loggedOut"}`: only for
///   a session handed to this connection (else -32010), releasing one of its holds (-32011
///   when it holds none any more, unless `logout`).
/// - `evict` `{"credentials": [{"v1BaseUrl", "orgId", "apiKey"}]}` → `{"dropped"}`: logs out
///   every session of keys a front-end saw retired from its credentials file.
/// - `status` → `{"pid", "uptimeSeconds", "connections", "sessions": […], "counters": {…}}`:
///   org IDs and counters, nothing that can act as a user.
/// - `stop` → the accounting of every session (see ``SessionPool/Accounting``), after logging
///   every session out; the agent then exits.
///
/// Notification to the front-ends: `sessionRetired` `{"userSessionId"}`, to every connection the
/// session was handed to, when it leaves the hand-out slot (replaced, refreshed, stale, evicted,
/// logged out): from then on only the agent decides what `openSession` gets.
///
/// When a connection ends, every hold it still has is released: the sessions stay pooled under
/// the idle rules, so an id printed by one shell command stays valid for the next.
public final class AgentService: Sendable {
    public let pool: SessionPool
    private let settings: ServiceSettings
    private let startedAt = monotonicSeconds()
    private let stopHandler: @Sendable () async -> SessionPool.Accounting
    private let connectionCount = Atomic<Int>(0)
    /// Whether `status` shows the profile names sessions were opened with (a private agent's one
    /// front-end named them itself; the shared agent shows org IDs only).
    private let showsProfiles: Bool

    /// - Parameters:
    ///   - pool: the session pool.
    ///   - settings: the timeouts quoted in errors.
    ///   - stop: logs every session out and returns the accounting; the caller exits after
    ///     the answer is written (see `stop`).
    ///   - showsProfiles: whether `status` names profiles (private agents only).
    public init(pool: SessionPool, settings: ServiceSettings, showsProfiles: Bool = false,
                stop: @escaping @Sendable () async -> SessionPool.Accounting) {
        self.pool = pool
        self.showsProfiles = showsProfiles
        self.settings = settings
        self.stopHandler = stop
        pool.onRetire { [weak self] id in
            guard let self else { return }
            for connection in liveConnections.withLock({ Array($0.values) }) { connection.retired(id) }
        }
    }

    /// The connections being served, to tell of retired sessions.
    private let liveConnections = Mutex<[ObjectIdentifier: Connection]>([:])

    /// Connections open now.
    public var connections: Int { connectionCount.load(ordering: .relaxed) }

    /// One front-end's connection: the sessions handed to it and the holds it has.
    public final class Connection: Sendable {
        private let holds = Mutex<[Secret: Int]>([:])
        /// Where `sessionRetired` notifications go (set by ``attach(_:)``).
        private let notifications = Mutex<OutputSink?>(nil)
        fileprivate init() {}

        /// Sends this connection's notifications to `output` (the sink its answers go to);
        /// `nil` stops them (the sink is closing).
        public func attach(_ output: OutputSink?) { notifications.withLock { $0 = output } }

        /// Tells the front-end that `id`, if it was handed to this connection, is not handed
        /// out any more. Never blocks (the sink queues what the socket does not take).
        fileprivate func retired(_ id: Secret) {
            guard count(id) != nil, let output = notifications.withLock({ $0 }) else { return }
            output.send(["jsonrpc": "2.0", "method": "sessionRetired", "params": ["userSessionId": .string(id.exposedValue)]])
        }

        fileprivate func add(_ id: Secret) { holds.withLock { $0[id, default: 0] += 1 } }
        /// `nil`: never handed to this connection; else how many holds it has.
        fileprivate func count(_ id: Secret) -> Int? { holds.withLock { $0[id] } }
        fileprivate func remove(_ id: Secret, all: Bool) {
            holds.withLock { h in
                guard let n = h[id] else { return }
                h[id] = all ? 0 : max(0, n - 1)
            }
        }
        fileprivate func takeAll() -> [Secret: Int] {
            holds.withLock { h in
                defer { h = [:] }
                return h
            }
        }
    }

    /// Starts serving a connection.
    public func connect() -> Connection {
        connectionCount.add(1, ordering: .relaxed)
        let connection = Connection()
        liveConnections.withLock { $0[ObjectIdentifier(connection)] = connection }
        return connection
    }

    /// Ends a connection: releases every hold it still has.
    public func disconnect(_ connection: Connection) async {
        liveConnections.withLock { $0[ObjectIdentifier(connection)] = nil }
        for (id, count) in connection.takeAll() {
            for _ in 0..<count { _ = try? await pool.close(id, logout: false) }
        }
        connectionCount.subtract(1, ordering: .relaxed)
    }

    /// The method table for one connection.
    public func handlers(for connection: Connection) -> [String: MethodHandler] {
        [
            "hello": .immediate { params in
                let p = try Params(params, allowed: ["protocol", "version"])
                let version = try p.optionalString("protocol")
                guard version == String(AgentLocation.protocolVersion) else {
                    throw RPCError.invalidParams("Invalid params: this agent speaks protocol \(AgentLocation.protocolVersion)", field: "protocol")
                }
                return ["protocol": .string(String(AgentLocation.protocolVersion)), "pid": .number(String(getpid())),
                        "version": .string(Configuration.version)]
            },
            "openSession": .started { params, reply in self.startOpen(params, connection, reply) },
            "closeSession": .started { params, reply in self.startClose(params, connection, reply) },
            "holdSession": .immediate { params in try self.holdSession(params, connection) },
            "evict": .deferred { try await self.evict($0) },
            "status": .deferred { params in
                _ = try Params(params, allowed: [])
                return await self.status()
            },
            "stop": .deferred { params in
                _ = try Params(params, allowed: [])
                return Self.json(await self.stopHandler())
            },
        ]
    }

    /// The answer for a session this connection cannot name.
    public static let unknownSession = RPCError(.unknownSession, "Unknown session: not issued by this process or no longer pooled")
    static let notHeld = RPCError(.sessionNotHeld, "Session has no holder left to release (pass logout: true to log it out)")

    /// `openSession`, started in request order: a fresh pooled session is handed out at once
    /// (``SessionPool/openPooled(_:)``); anything else (a login, a refresh, `replace`) goes on
    /// in a task.
    private func startOpen(_ params: JSONValue?, _ connection: Connection, _ reply: @escaping @Sendable (Result<JSONValue, any Error>) -> Void) {
        if case .object(let object)? = params, object["replace"] == nil || object["replace"] == .null,
           object["lasting"] == nil || object["lasting"] == .bool(false),
           let p = try? Params(params, allowed: Self.openMembers), let key = try? key(p), let id = pool.openPooled(key) {
            connection.add(id)
            reply(.success(["userSessionId": .string(id.exposedValue), "reused": true, "leaseSeconds": leaseSeconds(id, pool.leaseWindow)]))
            return
        }
        Task {
            do { reply(.success(try await self.openSession(params, connection))) } catch { reply(.failure(error)) }
        }
    }

    /// `closeSession`, started in request order: releasing one of this connection's holds
    /// without a logout is done at once (``SessionPool/releasePooled(_:)``); anything else in a task.
    private func startClose(_ params: JSONValue?, _ connection: Connection, _ reply: @escaping @Sendable (Result<JSONValue, any Error>) -> Void) {
        if let p = try? Params(params, allowed: ["userSessionId", "logout"]), ((try? p.optionalBool("logout")) ?? false) == false,
           let raw = try? p.string("userSessionId") {
            let id = Secret(raw)
            if connection.count(id) ?? 0 > 0, pool.releasePooled(id) {
                connection.remove(id, all: false)
                reply(.success(["closed": true, "loggedOut": false]))
                return
            }
        }
        Task {
            do { reply(.success(try await self.closeSession(params, connection))) } catch { reply(.failure(error)) }
        }
    }

    static let openMembers: Set<String> = ["v1BaseUrl", "orgId", "apiKey", "profile", "environment", "replace", "lasting"]

    private func key(_ p: Params) throws(RPCError) -> SessionPool.Key {
        let base = try p.string("v1BaseUrl")
        do {
            _ = try BaseURLPolicy.validate(base, name: "v1BaseUrl")
        } catch {
            throw RPCError.invalidParams("Invalid params: v1BaseUrl is not an acceptable API v1 base URL", field: "v1BaseUrl")
        }
        return SessionPool.Key(v1BaseURL: base, credential: try Credential.validated(orgId: p.string("orgId"), apiKey: p.string("apiKey")))
    }

    private func openSession(_ params: JSONValue?, _ connection: Connection) async throws(RPCError) -> JSONValue {
        let p = try Params(params, allowed: Self.openMembers)
        let key = try key(p)
        let label = SessionPool.Label(profile: try p.optionalString("profile"), environment: try p.optionalString("environment") ?? "production")
        let replace = try p.optionalString("replace").map(Secret.init)
        let lasting = try p.optionalBool("lasting") ?? false
        // Only this connection's own hold on the replaced session is released.
        let held = replace.map { connection.count($0) ?? 0 > 0 } ?? false
        if let replace, held { connection.remove(replace, all: false) }
        do {
            let opened = try await pool.open(key, label: label, replace: replace, releasingHold: held, lasting: lasting)
            connection.add(opened.userSessionId)
            return ["userSessionId": .string(opened.userSessionId.exposedValue), "reused": .bool(opened.reused),
                    "leaseSeconds": leaseSeconds(opened.userSessionId, opened.leaseSeconds)]
        } catch {
            throw error.rpcError(timeout: settings.httpTimeout, redacting: key.credential)
        }
    }

    /// The lease for a session just handed to a connection (after ``Connection/add(_:)``): 0 if
    /// it left the hand-out slot before the connection could be told (a retirement is told
    /// only to connections it was handed to).
    private func leaseSeconds(_ id: Secret, _ seconds: Double) -> JSONValue {
        Self.seconds(pool.isCurrent(id) ? seconds : 0)
    }

    /// `holdSession`: see the type's documentation.
    private func holdSession(_ params: JSONValue?, _ connection: Connection) throws(RPCError) -> JSONValue {
        let p = try Params(params, allowed: ["userSessionId"])
        let id = Secret(try p.string("userSessionId"))
        guard connection.count(id) != nil, let lease = pool.holdPooled(id) else { throw Self.unknownSession }
        connection.add(id)
        return ["held": true, "leaseSeconds": Self.seconds(lease)]
    }

    /// `seconds` as a JSON number, in milliseconds' precision, rounded down (a lease is never
    /// longer than the pool's).
    static func seconds(_ seconds: Double) -> JSONValue {
        .number(formatSeconds((max(0, seconds) * 1000).rounded(.down) / 1000))
    }

    private func closeSession(_ params: JSONValue?, _ connection: Connection) async throws(RPCError) -> JSONValue {
        let p = try Params(params, allowed: ["userSessionId", "logout"])
        let id = Secret(try p.string("userSessionId"))
        let logout = try p.optionalBool("logout") ?? false
        guard let held = connection.count(id), pool.isPooled(id) else { throw Self.unknownSession }
        guard logout || held > 0 else { throw Self.notHeld }
        do {
            let loggedOut = try await pool.close(id, logout: logout)
            connection.remove(id, all: logout)
            return ["closed": true, "loggedOut": .bool(loggedOut)]
        } catch {
            connection.remove(id, all: true)
            switch error {
            case .unknownSession: throw Self.unknownSession
            case .notHeld: throw Self.notHeld
            }
        }
    }

    private func evict(_ params: JSONValue?) async throws(RPCError) -> JSONValue {
        let p = try Params(params, allowed: ["credentials"])
        guard case .array(let items)? = p.value("credentials") else {
            throw RPCError.invalidParams("Invalid params: credentials must be an array", field: "credentials")
        }
        var credentials: Set<Credential> = []
        for item in items {
            let member = try Params(item, allowed: ["orgId", "apiKey"])
            credentials.insert(try Credential.validated(orgId: member.string("orgId"), apiKey: member.string("apiKey")))
        }
        return ["dropped": .number(String(await pool.evict(credentials)))]
    }

    /// The pool's part of `status`: org IDs, ages and counters only.
    public func status() async -> JSONValue {
        let sessions = await pool.sessions()
        let c = await pool.counters
        func seconds(_ s: Double) -> JSONValue { .number(format1(s)) }
        return [
            "pid": .number(String(getpid())),
            "uptimeSeconds": seconds(monotonicSeconds() - startedAt),
            "connections": .number(String(connections)),
            "sessions": .array(sessions.map { info in
                [
                    "orgId": .string(info.orgId),
                    "profile": showsProfiles ? info.label.profile.map(JSONValue.string) ?? .null : .null,
                    "environment": .string(info.label.environment),
                    "holders": .number(String(info.holders)),
                    "ageSeconds": seconds(info.ageSeconds),
                    "idleSeconds": seconds(info.idleSeconds),
                    "refreshing": .bool(info.refreshing),
                    "current": .bool(info.current),
                ]
            }),
            "counters": [
                "logins": .number(String(c.logins)),
                "loginFailures": .number(String(c.loginFailures)),
                "loginRetries": .number(String(c.loginRetries)),
                "cachedRejections": .number(String(c.rejectionsServedFromCache)),
                "reuses": .number(String(c.reuses)),
                "replaces": .number(String(c.replaces)),
                "logouts": .number(String(c.logouts)),
                "logoutFailures": .number(String(c.logoutFailures)),
            ],
        ]
    }

    /// The accounting as the `stop` result: `{"obtained", "loggedOut", "abandoned": [orgId],
    /// "loggingOut", "unanswered": [orgId]}`.
    public static func json(_ a: SessionPool.Accounting) -> JSONValue {
        [
            "obtained": .number(String(a.obtained)),
            "loggedOut": .number(String(a.loggedOut)),
            "abandoned": .array(a.abandoned.map(JSONValue.string)),
            "loggingOut": .number(String(a.loggingOut)),
            "unanswered": .array(a.unanswered.map(JSONValue.string)),
        ]
    }

    /// The accounting read back from a `stop` result (see ``json(_:)``).
    public static func accounting(_ value: JSONValue) -> SessionPool.Accounting? {
        func int(_ name: String) -> Int? { value[name]?.numberValue.flatMap { Int($0) } }
        func strings(_ name: String) -> [String]? {
            guard case .array(let items)? = value[name] else { return nil }
            return items.compactMap(\.stringValue)
        }
        guard let obtained = int("obtained"), let loggedOut = int("loggedOut"), let abandoned = strings("abandoned") else { return nil }
        var a = SessionPool.Accounting()
        a.obtained = obtained
        a.loggedOut = loggedOut
        a.abandoned = abandoned
        a.loggingOut = int("loggingOut") ?? 0
        a.unanswered = strings("unanswered") ?? []
        return a
    }
}
