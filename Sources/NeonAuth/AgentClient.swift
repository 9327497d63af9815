#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization
import CNeonSystem
import JSONRPC

extension ErrorCode {
    /// -32006: neon-auth's agent (`neon-auth-agent`, which holds the session pool and makes every
    /// NeonCRM call) could not be started or reached, or ended while the call was in flight.
    /// `data`: `{"retryable", "reason"}`.
    public static let agentUnavailable = ErrorCode(rawValue: -32006)
}

/// Which agent a front-end uses.
public enum AgentMode: String, Sendable, Equatable {
    /// The per-user agent shared by every front-end with the same settings (the default).
    case shared
    /// An agent of this process's own, a child over a socketpair that logs out at exit.
    case `private`
}

/// A front-end's one connection to its agent, made on first need: the shared agent (started if
/// none runs, under a spawn lock) or, when sharing is off or impossible, a private one.
///
/// Nothing here ever blocks `sign`: it is used only by the session methods, from tasks, and
/// every blocking step (connect, spawn, handshake) runs on a thread of its own with a bound.
public final class AgentClient: Sendable {
    private let settings: AgentSettings
    private let requested: AgentMode
    private let environment: EnvironmentVariables
    /// The `executable` given to init (`nil`: found when first needed, see ``executable``).
    private let explicitExecutable: String?
    private let log: Logger?
    private struct State {
        var connection: AgentConnection?
        /// Set once sharing failed: the process then uses a private agent for good.
        var sharingFailed = false
        var closed = false
    }
    private let state = Mutex(State())
    /// Serializes connecting, so that concurrent first calls make one connection.
    private let connecting = Mutex(())
    /// Calls not yet written, in the order they were started; one sender thread writes them.
    private struct Outbound: @unchecked Sendable {
        var queue: [(method: String, params: JSONValue, spawn: Bool, completion: @Sendable (Result<JSONValue?, RPCError>) -> Void)] = []
        var senderRunning = false
        /// The sender thread holds calls taken from the queue that it has not written yet.
        var senderBusy = false
    }
    private let outbound = Mutex(Outbound())
    private let outboundReady = DispatchSemaphore(value: 0)

    /// - Parameters:
    ///   - settings: what the agent is started with (and what names the shared one).
    ///   - mode: `--agent`.
    ///   - environment: the process environment (`XDG_RUNTIME_DIR`, `TMPDIR`, and what the
    ///     agent inherits, less `NEON_ORG_ID`/`NEON_API_KEY`).
    ///   - executable: the `neon-auth-agent` binary (default: ``defaultExecutable(environment:)``).
    ///   - log: where a fallback to a private agent is reported (once, at `warn`).
    public init(settings: AgentSettings, mode: AgentMode, environment: EnvironmentVariables, executable: String? = nil, log: Logger?) {
        self.settings = settings
        self.requested = mode
        self.environment = environment
        explicitExecutable = executable
        self.log = log
    }

    /// The agent binary, looked up only when an agent is to be started (not at start-up:
    /// `realpath` of /proc/self/exe costs a `readlink` per path component).
    private var executable: String? { explicitExecutable ?? Self.defaultExecutable(environment: environment) }

    /// `$NEON_AUTH_AGENT_BIN`, else `neon-auth-agent` beside this executable
    /// (`realpath(/proc/self/exe)`); `nil` when neither exists.
    public static func defaultExecutable(environment: EnvironmentVariables) -> String? {
        if let explicit = environment["NEON_AUTH_AGENT_BIN"], !explicit.isEmpty { return explicit }
        guard let resolved = realpath("/proc/self/exe", nil) else { return nil }
        defer { free(resolved) }
        let exe = String(cString: resolved)
        guard let slash = exe.lastIndex(of: "/") else { return nil }
        let candidate = String(exe[..<slash]) + "/neon-auth-agent"
        return access(candidate, X_OK) == 0 ? candidate : nil
    }

    /// The error for calls that could not reach an agent.
    static func unavailable(_ reason: String, retryable: Bool) -> RPCError {
        RPCError(.agentUnavailable, "neon-auth's agent is unavailable: \(reason)",
                 data: ["retryable": .bool(retryable), "reason": .string(reason)])
    }

    /// Calls `method` on the agent, connecting (and starting one) first if needed.
    /// - Parameter spawn: whether a missing agent may be started (`status` and `evict` do not
    ///   start one: with no agent there is nothing to show or drop).
    /// - Returns: the result, or `nil` when `spawn` is false and no agent runs.
    /// - Throws: the agent's `RPCError` as it answered it, or -32006.
    public func call(_ method: String, _ params: JSONValue, spawn: Bool = true) async throws(RPCError) -> JSONValue? {
        try await withCheckedContinuation { continuation in
            start(method, params, spawn: spawn) { continuation.resume(returning: $0) }
        }.get()
    }

    /// Starts a call without waiting: calls reach the agent in the order they were started
    /// (a client's pipelined open and close of one session stay in order). Never blocks: one
    /// sender thread connects (starting an agent if needed) and writes.
    /// - Parameter completion: the result (`nil`: no agent runs and `spawn` was false), called
    ///   once, from another thread.
    /// - Parameter flush: `false` leaves the call queued until ``flush()`` (the reading thread
    ///   flushes once per read, so that pipelined calls go out in one write).
    public func start(_ method: String, _ params: JSONValue, spawn: Bool = true, flush: Bool = true,
                      completion: @escaping @Sendable (Result<JSONValue?, RPCError>) -> Void) {
        let startSender = outbound.withLock { o -> Bool in
            o.queue.append((method, params, spawn, completion))
            if o.senderRunning { return false }
            o.senderRunning = true
            return true
        }
        if startSender { DetachedThread.start { [self] in sendQueued() } }
        if flush { outboundReady.signal() }
    }

    /// `openSession` answered by this front-end itself: `key`'s pooled session while the lease
    /// the agent gave with it runs (the agent's `leaseSeconds`: until a refresh could be due,
    /// ``SessionPool/leaseWindow``) and the agent has not said `sessionRetired`; the agent is
    /// told (`holdSession`, queued like any call: flushed after the read's answers), so its
    /// holds, last use and `status` stay exact. A client's round trip then needs no agent hop.
    /// - Returns: the session ID (one more hold), or `nil` when the agent must be asked
    ///   (no live connection, no lease, or it ran out).
    public func openLeased(_ key: SessionPool.Key) -> Secret? {
        guard let connection = state.withLock({ $0.connection }), connection.isOpen else { return nil }
        let now = bootTimeSeconds()
        guard let id = connection.takeLease(key, now: now) else { return nil }
        start("holdSession", ["userSessionId": .string(id.exposedValue)], spawn: false, flush: false) { [weak connection] result in
            switch result {
            case .success(let held?):
                if let seconds = held["leaseSeconds"]?.numberValue.flatMap(Double.init) {
                    connection?.renewed(key, id, seconds: seconds, askedAt: now)
                }
            case .success(nil), .failure:
                // Not pooled any more (or the agent is gone): the agent decides the next open.
                connection?.revoke(id)
            }
        }
        return id
    }

    /// `closeSession` without `logout` answered by this front-end itself: releases one hold on
    /// a leased session while its lease runs and a hold of this front-end is known (the agent
    /// is told, queued like any call).
    /// - Returns: `true` when released (`loggedOut: false`); `false` (nothing changed) when the
    ///   agent must answer.
    public func closeLeased(_ id: Secret) -> Bool {
        guard let connection = state.withLock({ $0.connection }), connection.isOpen,
              connection.releaseLease(id, now: bootTimeSeconds()) else { return false }
        start("closeSession", ["userSessionId": .string(id.exposedValue), "logout": false], spawn: false, flush: false) { _ in }
        return true
    }

    /// Records what the agent's answer to `openSession` for `key` grants: one more hold, and a
    /// lease of its `leaseSeconds` counted from `askedAt` (``bootTimeSeconds()`` when the
    /// request was made).
    public func noteOpened(_ key: SessionPool.Key, _ answer: JSONValue, askedAt: Double) {
        guard let raw = answer["userSessionId"]?.stringValue, let seconds = answer["leaseSeconds"]?.numberValue.flatMap(Double.init),
              let connection = state.withLock({ $0.connection }) else { return }
        connection.granted(key, Secret(raw), seconds: seconds, askedAt: askedAt)
    }

    /// A `closeSession` of `id` goes to the agent (or an `openSession` replaces it, `logout`
    /// `true`): the lease's count of holds follows, and with `logout` the lease ends.
    public func noteForwardedClose(_ id: Secret, logout: Bool) {
        state.withLock { $0.connection }?.forwardingClose(id, logout: logout)
    }

    /// Sends every call queued with `flush: false`. With a live connection and the sender
    /// thread idle, the calling thread (the one reading requests) writes them itself as far as
    /// the socket takes them without waiting (a thread hand-off less per round trip); the
    /// sender thread writes the rest, or connects first.
    public func flush() {
        let handOver = outbound.withLock { o -> Bool in
            guard !o.queue.isEmpty else { return false }
            guard !o.senderBusy, let connection = state.withLock({ $0.connection }), connection.isOpen else { return true }
            // Under the queue's lock: calls queued later (by any thread) are written after these.
            switch connection.sendNow(o.queue.map { item in
                let completion = item.completion
                return (item.method, item.params, { @Sendable (result: Result<JSONValue, RPCError>) in completion(result.map { $0 }) })
            }) {
            case .sent: o.queue.removeAll(keepingCapacity: true); return false
            case .backlog: o.queue.removeAll(keepingCapacity: true); return true
            case .closed: return true  // still queued: the sender thread connects again
            }
        }
        if handOver { outboundReady.signal() }
    }

    /// The sender thread (one, for the life of the process): writes queued calls in order, all
    /// that are waiting in one write, connecting first when needed.
    private func sendQueued() {
        while true {
            outboundReady.wait()
            // What the reading thread left unwritten goes first.
            if let connection = state.withLock({ $0.connection }) { connection.writeBacklog() }
            let items = outbound.withLock { o -> [(method: String, params: JSONValue, spawn: Bool, completion: @Sendable (Result<JSONValue?, RPCError>) -> Void)] in
                defer { o.queue.removeAll(keepingCapacity: true) }
                o.senderBusy = !o.queue.isEmpty
                return o.queue
            }
            defer { outbound.withLock { $0.senderBusy = false } }
            var index = 0
            while index < items.count {
                // With a live connection every call goes out in one write; without one, a run of
                // calls with the same `spawn` shares one attempt to connect.
                var end = index + 1
                let live = state.withLock { $0.connection?.isOpen ?? false }
                while end < items.count && (live || items[end].spawn == items[index].spawn) { end += 1 }
                let run = items[index..<end]
                switch connectBlocking(spawn: items[index].spawn) {
                case .success(let connection?):
                    connection.send(run.map { item in
                        let completion = item.completion
                        return (item.method, item.params, { @Sendable (result: Result<JSONValue, RPCError>) in completion(result.map { $0 }) })
                    })
                case .success(nil): for item in run { item.completion(.success(nil)) }
                case .failure(let error): for item in run { item.completion(.failure(error)) }
                }
                index = end
            }
        }
    }

    private func connectBlocking(spawn: Bool) -> Result<AgentConnection?, RPCError> {
        connecting.withLock { _ in
            if let live = state.withLock({ $0.connection }), live.isOpen { return .success(live) }
            if state.withLock({ $0.closed }) { return .failure(Self.unavailable("neon-auth is shutting down", retryable: true)) }
            let result: Result<AgentConnection?, RPCError>
            if requested == .shared && !state.withLock({ $0.sharingFailed }) {
                switch connectShared(spawn: spawn) {
                case .success(let connection): result = .success(connection)
                case .failure(let problem):
                    state.withLock { $0.sharingFailed = true }
                    log?.warn("the shared agent cannot be used (\(problem.description)): using a private agent for this process")
                    result = spawn ? connectPrivate().map { $0 } : .success(nil)
                }
            } else {
                result = spawn ? connectPrivate().map { $0 } : .success(nil)
            }
            if case .success(let connection?) = result { state.withLock { $0.connection = connection } }
            return result
        }
    }

    /// Connects to the shared agent, starting it once if none runs.
    /// - Returns: the connection, or `nil` when none runs and `spawn` is false.
    private func connectShared(spawn: Bool) -> Result<AgentConnection?, AgentLocation.Unusable> {
        let location: AgentLocation
        do {
            location = try AgentLocation.resolve(environment: environment, digest: settings.digest)
        } catch {
            return .failure(error)
        }
        switch attach(location.socketPath) {
        case .connected(let connection): return .success(connection)
        case .refused(let problem): return .failure(problem)
        case .absent: break
        }
        guard spawn else { return .success(nil) }
        guard let executable, access(executable, X_OK) == 0 else {
            return .failure(.init("neon-auth-agent was not found beside neon-auth"))
        }
        // One front-end starts the agent; the others wait for its lock, then find the agent.
        let lock = open(location.spawnLockPath, O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard lock >= 0 else { return .failure(.init("cannot open \(location.spawnLockPath): \(String(cString: strerror(errno)))")) }
        defer { close(lock) }
        let lockDeadline = monotonicSeconds() + 12
        while flock(lock, LOCK_EX | LOCK_NB) != 0 {
            guard errno == EWOULDBLOCK || errno == EINTR, monotonicSeconds() < lockDeadline else {
                return .failure(.init("another neon-auth held the agent's spawn lock for too long"))
            }
            usleep(10_000)
        }
        defer { flock(lock, LOCK_UN) }
        switch attach(location.socketPath) {
        case .connected(let connection): return .success(connection)
        case .refused(let problem): return .failure(problem)
        case .absent: break
        }
        let logFD = open(location.logPath, O_CREAT | O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o600)
        let argv = [executable, "--shared", location.directory, "--name", location.name] + settings.arguments
        let spawned = withCStrings(argv) { argv in
            withCStrings(agentEnvironment) { envp in neon_auth_spawn_detached(executable, argv, envp, logFD) }
        }
        if logFD >= 0 { close(logFD) }
        guard spawned == 0 else { return .failure(.init("could not start \(executable): \(String(cString: strerror(errno)))")) }
        // The agent renames its socket into place once it listens.
        var pause: useconds_t = 2_000
        let readyDeadline = monotonicSeconds() + 10
        while monotonicSeconds() < readyDeadline {
            switch attach(location.socketPath) {
            case .connected(let connection): return .success(connection)
            case .refused(let problem): return .failure(problem)
            case .absent:
                usleep(pause)
                pause = min(pause * 2, 100_000)
            }
        }
        return .failure(.init("the agent it started did not answer within 10 s (its log: \(location.logPath))"))
    }

    private enum Attach {
        case connected(AgentConnection)
        /// Nothing listens there (no file, or a stale one).
        case absent
        case refused(AgentLocation.Unusable)
    }

    /// Connects to the socket at `path`, checks the peer's uid and shakes hands.
    private func attach(_ path: String) -> Attach {
        let fd = neon_auth_unix_connect(path)
        if fd < 0 {
            if errno == ENOENT || errno == ECONNREFUSED { return .absent }
            return .refused(.init("cannot connect to \(path): \(String(cString: strerror(errno)))"))
        }
        var peer: UInt32 = 0
        guard neon_auth_peer_uid(fd, &peer, nil) == 0, peer == geteuid() else {
            close(fd)
            return .refused(.init("the socket \(path) is served by uid \(peer), not \(geteuid())"))
        }
        let connection = AgentConnection(fd: fd, childPid: nil)
        switch connection.handshake(timeout: 2) {
        case nil: return .connected(connection)
        case let problem?:
            connection.close()
            return .refused(.init("the agent at \(path) \(problem)"))
        }
    }

    /// Starts a private agent over a socketpair.
    private func connectPrivate() -> Result<AgentConnection, RPCError> {
        guard let executable, access(executable, X_OK) == 0 else {
            return .failure(Self.unavailable("neon-auth-agent was not found beside neon-auth (install it with scripts/install)", retryable: false))
        }
        var pair: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            return .failure(Self.unavailable("socketpair failed: \(String(cString: strerror(errno)))", retryable: true))
        }
        // Its stderr is a pipe this process relays to its own: the agent never holds this
        // process's stderr (a pipeline reading it would wait for the agent's end).
        var logPipe: [Int32] = [-1, -1]
        if pipe(&logPipe) == 0 {
            for fd in logPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        } else {
            logPipe = [-1, -1]
        }
        let argv = [executable, "--stdio"] + settings.arguments
        let pid = withCStrings(argv) { argv in
            withCStrings(agentEnvironment) { envp in neon_auth_spawn_child(executable, argv, envp, pair[1], logPipe[1]) }
        }
        close(pair[1])
        if logPipe[1] >= 0 { close(logPipe[1]) }
        if logPipe[0] >= 0 {
            let source = logPipe[0]
            let log = self.log
            DetachedThread.start { Self.relay(source, to: log) }
        }
        guard pid > 0 else {
            close(pair[0])
            return .failure(Self.unavailable("could not start \(executable): \(String(cString: strerror(errno)))", retryable: false))
        }
        let connection = AgentConnection(fd: pair[0], childPid: pid)
        if let problem = connection.handshake(timeout: 5) {
            connection.close()
            return .failure(Self.unavailable("the private agent \(problem)", retryable: true))
        }
        return .success(connection)
    }

    /// Copies a private agent's log lines to this process's stderr until the agent ends: whole
    /// lines, through `log` when there is one (which knows whether stderr is the protocol's
    /// own pipe, see ``Logger/route(through:)``).
    private static func relay(_ source: Int32, to log: Logger?) {
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        var partial: [UInt8] = []
        func emit(_ lines: [UInt8]) {
            if let log { log.emit(lines: lines) } else { _ = lines.withUnsafeBytes { write(2, $0.baseAddress, $0.count) } }
        }
        while true {
            let n = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            partial.append(contentsOf: buffer[0..<n])
            if let end = partial.lastIndex(of: 0x0A) {
                emit(Array(partial[...end]))
                partial.removeSubrange(...end)
            } else if partial.count > 64 * 1024 {
                partial.append(0x0A)  // a line that long is cut rather than held
                emit(partial)
                partial = []
            }
        }
        if !partial.isEmpty {
            partial.append(0x0A)
            emit(partial)
        }
        close(source)
    }

    /// The environment the agent gets: this process's, without the API key variables (the
    /// agent never needs them: front-ends send credentials with each call).
    private var agentEnvironment: [String] {
        environment.all.filter { $0.key != "NEON_API_KEY" && $0.key != "NEON_ORG_ID" }.map { "\($0.key)=\($0.value)" }
    }

    /// Ends this process's use of its agent. A shared agent just loses this connection (its
    /// holds are released; sessions stay pooled). A private agent is asked to log every session
    /// out (`stop`), within `deadline` seconds, and reaped.
    /// - Returns: the private agent's accounting (`nil` for a shared agent or none at all).
    public func finish(deadline: Double) -> SessionPool.Accounting? {
        let connection = state.withLock { s -> AgentConnection? in
            s.closed = true
            return s.connection
        }
        guard let connection else { return nil }
        guard connection.childPid != nil else {
            connection.close()
            return nil
        }
        let result = connection.callBlocking("stop", .object(JSONObject()), timeout: deadline)
        connection.close()
        connection.reap(timeout: 1)
        if case .success(let value) = result { return AgentService.accounting(value) }
        return nil
    }

    /// ``finish(deadline:)`` when this process never connected to an agent (nothing can block):
    /// marks the client finished and returns `true`; `false`, doing nothing, when it has a
    /// connection (then call ``finish(deadline:)``, which may wait for a private agent's logouts).
    public func finishIfUnconnected() -> Bool {
        state.withLock { s in
            guard s.connection == nil else { return false }
            s.closed = true
            return true
        }
    }

    /// Whether this process has an agent connection (and it is a shared one).
    public var usesSharedAgent: Bool { state.withLock { $0.connection.map { $0.childPid == nil && $0.isOpen } ?? false } }
}

/// One open connection to an agent: newline-delimited JSON-RPC, requests matched to answers by
/// id on a reading thread of its own.
final class AgentConnection: Sendable {
    let fd: Int32
    /// The private agent's pid (to reap at exit); `nil` for the shared agent.
    let childPid: Int32?
    private struct State {
        var open = true
        var nextId = 0
        var waiting: [Int: @Sendable (Result<JSONValue, RPCError>) -> Void] = [:]
    }
    private let state = Mutex(State())
    /// Bytes accepted for the socket but not written yet, and whether a blocking write of them
    /// is under way (writes keep the order of ``send(_:blocking:)`` calls).
    private struct Writes {
        var backlog: [UInt8] = []
        var writing = false
    }
    private let writes = Mutex(Writes())

    /// A pooled session this front-end may hand out again itself: the agent's current session
    /// for its key until `deadline` (``bootTimeSeconds()``), and the holds this front-end's
    /// clients have on it as far as it knows (never more than the agent counts for this
    /// connection, so a close answered from it is one the agent accepts).
    struct Lease {
        var id: Secret
        var deadline: Double
        var holds: Int
    }
    /// The leases, by key (one per key: the session the agent hands out for it), and the
    /// sessions the agent said were retired (a retired session never comes back; the notice can
    /// overtake the answer that handed it out, which must then grant no lease). The most
    /// recent `retiredLimit` are kept: older ones are long out of any answer's way.
    private struct Leases {
        var byKey: [SessionPool.Key: Lease] = [:]
        var retired: Set<Secret> = []
        var retiredOrder: [Secret] = []
    }
    private let leases = Mutex(Leases())
    private static let retiredLimit = 1024

    init(fd: Int32, childPid: Int32?) {
        self.fd = fd
        self.childPid = childPid
        DetachedThread.start { [self] in readLoop() }
    }

    var isOpen: Bool { state.withLock { $0.open } }

    /// Sends `method` and waits (blocking the calling thread) at most `timeout` seconds.
    func callBlocking(_ method: String, _ params: JSONValue, timeout: Double) -> Result<JSONValue, RPCError> {
        let result = Mutex<Result<JSONValue, RPCError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        send(method, params) { answer in
            result.withLock { $0 = answer }
            done.signal()
        }
        if done.wait(timeout: .now() + timeout) == .timedOut {
            return .failure(AgentClient.unavailable("the agent did not answer \(method) within \(formatSeconds(timeout)) s", retryable: true))
        }
        return result.withLock { $0! }
    }

    /// The handshake: `nil` when the agent answered `hello` for this protocol, else what went wrong.
    func handshake(timeout: Double) -> String? {
        switch callBlocking("hello", ["protocol": .string(String(AgentLocation.protocolVersion))], timeout: timeout) {
        case .success(let value) where value["protocol"]?.stringValue == String(AgentLocation.protocolVersion): return nil
        case .success: return "answered the handshake for another protocol"
        case .failure(let error): return "did not complete the handshake (\(error.message))"
        }
    }

    /// Writes one request; `completion` gets its answer (or the loss of the connection).
    func send(_ method: String, _ params: JSONValue, _ completion: @escaping @Sendable (Result<JSONValue, RPCError>) -> Void) {
        send([(method, params, completion)])
    }

    /// Writes requests in order, in one write; each completion gets its answer (or the loss of
    /// the connection).
    func send(_ requests: [(String, JSONValue, @Sendable (Result<JSONValue, RPCError>) -> Void)]) {
        _ = send(requests, blocking: true)
    }

    /// What ``sendNow(_:)`` did.
    enum SendOutcome { case sent, backlog, closed }

    /// ``send(_:)`` for the reading thread: writes what the socket takes now and keeps the rest,
    /// in order, for ``writeBacklog()``. Calls no completion (it runs under the client's lock):
    /// `.closed` means nothing was sent.
    func sendNow(_ requests: [(String, JSONValue, @Sendable (Result<JSONValue, RPCError>) -> Void)]) -> SendOutcome {
        guard isOpen else { return .closed }
        return send(requests, blocking: false) ? .backlog : .sent
    }

    /// - Parameter blocking: `false`: see ``sendNow(_:)`` (a failed write then only shuts the
    ///   socket down: its reading thread reports the loss).
    /// - Returns: whether bytes are left for ``writeBacklog()``.
    private func send(_ requests: [(String, JSONValue, @Sendable (Result<JSONValue, RPCError>) -> Void)], blocking: Bool) -> Bool {
        let ids: [Int]? = state.withLock { s in
            guard s.open else { return nil }
            return requests.map { request in
                s.nextId += 1
                s.waiting[s.nextId] = request.2
                return s.nextId
            }
        }
        guard let ids else {
            let error = AgentClient.unavailable("the connection to the agent was lost", retryable: true)
            if blocking {
                for request in requests { request.2(.failure(error)) }
            } else {
                // Lost since sendNow looked (under the client's lock): answered from another thread.
                DetachedThread.start { for request in requests { request.2(.failure(error)) } }
            }
            return false
        }
        var line: [UInt8] = []
        for (request, id) in zip(requests, ids) {
            JSONWriter.write(["jsonrpc": "2.0", "id": .number(String(id)), "method": .string(request.0), "params": request.1], into: &line)
            line.append(0x0A)
        }
        let (left, failed) = writes.withLock { w -> (Bool, Bool) in
            if w.writing || !w.backlog.isEmpty {
                w.backlog.append(contentsOf: line)
                return (true, false)
            }
            let (written, failed) = line.withUnsafeBytes { Self.sendAtOnce($0, fd: fd) }
            if written < line.count { w.backlog.append(contentsOf: line[written...]) }
            return (written < line.count && !failed, failed)
        }
        if failed {
            if blocking { lost() } else { shutdown(fd, Int32(SHUT_RDWR)) }
            return false
        }
        if blocking && left { writeBacklog() }
        return left
    }

    /// Writes what ``send(_:blocking:)`` left, in order, with blocking writes (never under the lock
    /// the reading thread takes).
    func writeBacklog() {
        while true {
            let chunk = writes.withLock { w -> [UInt8]? in
                guard !w.writing, !w.backlog.isEmpty else { return nil }
                w.writing = true
                defer { w.backlog = [] }
                return w.backlog
            }
            guard let chunk else { return }
            let ok = chunk.withUnsafeBytes { raw -> Bool in
                var offset = 0
                while offset < raw.count {
                    let n = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                    if n > 0 { offset += n } else if n < 0 && errno == EINTR { continue } else { return false }
                }
                return true
            }
            writes.withLock { $0.writing = false }
            if !ok {
                lost()
                return
            }
        }
    }

    /// One `send` with `MSG_DONTWAIT`: the bytes the socket took, and whether it failed (other
    /// than being full).
    private static func sendAtOnce(_ raw: UnsafeRawBufferPointer, fd: Int32) -> (Int, Bool) {
        var offset = 0
        while offset < raw.count {
            let n = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
            if n > 0 { offset += n } else if n < 0 && errno == EINTR { continue }
            else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return (offset, false) }
            else { return (offset, true) }
        }
        return (offset, false)
    }

    private func readLoop() {
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            pending.append(contentsOf: buffer[0..<n])
            // The answers of one read reach the client in one write.
            OutputSink.coalescing {
                var start = 0
                while let newline = pending[start...].firstIndex(of: 0x0A) {
                    deliver(Array(pending[start..<newline]))
                    start = newline + 1
                }
                pending.removeSubrange(..<start)
            }
        }
        lost()
        Glibc.close(fd)
    }

    private func deliver(_ line: [UInt8]) {
        guard let message = try? JSONReader.parse(line) else { return }
        if message["id"] == nil, message["method"]?.stringValue == "sessionRetired",
           let id = message["params"]?["userSessionId"]?.stringValue {
            revoke(Secret(id), retired: true)
            return
        }
        guard let idText = message["id"]?.numberValue, let id = Int(idText) else { return }
        guard let completion = state.withLock({ $0.waiting.removeValue(forKey: id) }) else { return }
        if let result = message["result"] {
            completion(.success(result))
        } else if let error = message["error"], let codeText = error["code"]?.numberValue, let code = Int(codeText) {
            completion(.failure(RPCError(ErrorCode(rawValue: code), error["message"]?.stringValue ?? "Agent error", data: error["data"])))
        } else {
            completion(.failure(RPCError(.internalError, "Internal error")))
        }
    }

    // MARK: Leases (see AgentClient.openLeased)

    /// Takes one hold on `key`'s leased session if the lease runs at `now`.
    func takeLease(_ key: SessionPool.Key, now: Double) -> Secret? {
        leases.withLock { l in
            guard var lease = l.byKey[key], now < lease.deadline else { return nil }
            lease.holds += 1
            l.byKey[key] = lease
            return lease.id
        }
    }

    /// Releases one hold on the leased session `id` if its lease runs at `now` and a hold of
    /// this front-end is known; `false` (nothing changed) otherwise.
    func releaseLease(_ id: Secret, now: Double) -> Bool {
        leases.withLock { l in
            guard let (key, lease) = l.byKey.first(where: { $0.value.id == id }), now < lease.deadline, lease.holds > 0 else { return false }
            l.byKey[key]!.holds -= 1
            return true
        }
    }

    /// The agent handed `id` out for `key` (one more hold) with a lease of `seconds` from
    /// `askedAt`; none for a session it already said was retired.
    func granted(_ key: SessionPool.Key, _ id: Secret, seconds: Double, askedAt: Double) {
        leases.withLock { l in
            if l.retired.contains(id) {
                if l.byKey[key]?.id == id { l.byKey[key] = nil }
                return
            }
            if var lease = l.byKey[key], lease.id == id {
                lease.holds += 1
                lease.deadline = askedAt + seconds
                l.byKey[key] = lease
            } else {
                l.byKey[key] = Lease(id: id, deadline: askedAt + seconds, holds: 1)
            }
        }
    }

    /// The agent confirmed a hold taken from the lease, with a new lease of `seconds` from `askedAt`.
    func renewed(_ key: SessionPool.Key, _ id: Secret, seconds: Double, askedAt: Double) {
        leases.withLock { l in
            guard l.byKey[key]?.id == id, !l.retired.contains(id) else { return }
            l.byKey[key]!.deadline = askedAt + seconds
        }
    }

    /// A close of `id` goes to the agent: one hold less; with `logout` (or a `replace` of it)
    /// the lease ends and none is granted for `id` again (an answer the agent gives before it
    /// acts on the logout may still name it).
    func forwardingClose(_ id: Secret, logout: Bool) {
        if logout {
            revoke(id, retired: true)
            return
        }
        leases.withLock { l in
            guard let key = l.byKey.first(where: { $0.value.id == id })?.key else { return }
            l.byKey[key]!.holds = max(0, l.byKey[key]!.holds - 1)
        }
    }

    /// `id` is not to be handed out from a lease any more (the lease is dropped; with
    /// `retired`, no later answer grants one for it).
    func revoke(_ id: Secret, retired: Bool = false) {
        leases.withLock { l in
            if let key = l.byKey.first(where: { $0.value.id == id })?.key { l.byKey[key] = nil }
            guard retired, l.retired.insert(id).inserted else { return }
            l.retiredOrder.append(id)
            if l.retiredOrder.count > Self.retiredLimit {
                l.retired.remove(l.retiredOrder.removeFirst())
            }
        }
    }

    /// The connection ended: every call still waiting fails (retryable; the next call connects
    /// again, starting a new agent if needed).
    private func lost() {
        leases.withLock { $0.byKey = [:] }
        let waiting = state.withLock { s -> [@Sendable (Result<JSONValue, RPCError>) -> Void] in
            s.open = false
            defer { s.waiting = [:] }
            return Array(s.waiting.values)
        }
        let error = AgentClient.unavailable("the agent ended while this request was in flight; retry (a new agent is started)", retryable: true)
        for completion in waiting { completion(.failure(error)) }
    }

    /// Closes the connection (the reading thread then ends it).
    func close() {
        shutdown(fd, Int32(SHUT_RDWR))
    }

    /// Waits up to `timeout` seconds for a private agent to exit.
    func reap(timeout: Double) {
        guard let pid = childPid else { return }
        let deadline = monotonicSeconds() + timeout
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 && monotonicSeconds() < deadline { usleep(5_000) }
    }
}

/// Runs `body` with `strings` as a NULL-terminated C array.
func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for pointer in pointers { free(pointer) } }
    return body(pointers)
}
