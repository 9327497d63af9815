/// How a method is served.
public enum MethodHandler: Sendable {
    /// Runs at once on the reading thread: for methods that never block (no I/O, no waiting).
    case immediate(@Sendable (JSONValue?) throws -> JSONValue)
    /// Runs concurrently as a task: for methods that may wait (network, locks held by others).
    case deferred(@Sendable (JSONValue?) async throws -> JSONValue)
    /// Started at once on the reading thread, in the order requests arrive (so that a client's
    /// pipelined requests reach what serves them in order), answering later through `reply`,
    /// exactly once, from any thread. The body must not block.
    case started(@Sendable (_ params: JSONValue?, _ reply: @escaping @Sendable (Result<JSONValue, any Error>) -> Void) -> Void)
}

/// Routes requests to method handlers and turns their outcome into response objects.
///
/// Handlers throw `RPCError` for failures the client should see; any other error becomes
/// -32603 with a generic message, so that no internal detail (or secret) reaches the client.
public final class Dispatcher: Sendable {
    private let handlers: [String: MethodHandler]
    private let fastPaths: [(name: [UInt8], method: String, path: FastPath)]
    private let observer: (@Sendable (String, ErrorCode?) -> Void)?

    /// - Parameters:
    ///   - handlers: method name → handler.
    ///   - observer: called once per answered call with the method name and the error code,
    ///     or `nil` on success (for counters); must be cheap and thread-safe.
    ///   - fastPaths: optional fast paths by method name (see ``FastPath``); the general
    ///     handler stays the reference and answers whatever a fast path declines.
    public init(handlers: [String: MethodHandler], fastPaths: [String: FastPath] = [:],
                observer: (@Sendable (String, ErrorCode?) -> Void)? = nil) {
        self.handlers = handlers
        self.fastPaths = fastPaths.map { (name: Array($0.key.utf8), method: $0.key, path: $0.value) }
        self.observer = observer
    }

    /// Tries the fast path for a message: appends the response object's bytes to `out`.
    /// - Returns: `true` when answered; `false` leaves `out` unchanged for the general path.
    public func answerFast(_ bytes: UnsafeBufferPointer<UInt8>, into out: inout OutputBuffer) -> Bool {
        guard !fastPaths.isEmpty else { return false }
        var request = FlatRequest(over: bytes)
        guard FlatRequest.scan(bytes, into: &request) else { return false }
        for entry in fastPaths where request.methodIs(entry.name) {
            let mark = out.count
            if entry.path(request, &out) {
                observer?(entry.method, nil)
                return true
            }
            out.truncate(to: mark)
            return false
        }
        return false
    }

    /// The names of all methods served.
    public var methodNames: [String] { handlers.keys.sorted() }

    /// The handler for `method`, if any.
    public func handler(for method: String) -> MethodHandler? { handlers[method] }

    /// Answers a call synchronously when its handler is immediate.
    /// - Returns: `.done(response)` (`nil` response for a notification), or `.needsTask`
    ///   when the handler is deferred and must be run with ``answer(_:)``.
    public func answerImmediately(_ call: IncomingCall) -> ImmediateOutcome {
        switch call {
        case .invalid(let id, let error):
            observer?("", error.code)
            return .done(ResponseWriter.failure(id: id, error: error))
        case .request(let request):
            guard let handler = handlers[request.method] else {
                return .done(finish(request, .failure(RPCError(.methodNotFound, "Method not found"))))
            }
            switch handler {
            case .immediate(let body):
                return .done(finish(request, Result { try body(request.params) }))
            case .deferred, .started:
                return .needsTask
            }
        }
    }

    /// Answers a call that ``answerImmediately(_:)`` left (`.needsTask`): a `.started` handler is
    /// started here, on the calling thread; a `.deferred` one in a new task.
    /// - Parameter reply: receives the response (`nil` for a notification), exactly once.
    public func start(_ call: IncomingCall, reply: @escaping @Sendable (JSONValue?) -> Void) {
        guard case .request(let request) = call, case .started(let body)? = handlers[request.method] else {
            Task { reply(await answer(call)) }
            return
        }
        body(request.params) { [self] result in reply(finish(request, result)) }
    }

    /// Answers a call, running a deferred handler to completion.
    /// - Returns: the response object, or `nil` for a notification.
    public func answer(_ call: IncomingCall) async -> JSONValue? {
        if case .done(let response) = answerImmediately(call) { return response }
        guard case .request(let request) = call else { return nil }
        switch handlers[request.method] {
        case .deferred(let body)?:
            let result: Result<JSONValue, Error>
            do { result = .success(try await body(request.params)) } catch { result = .failure(error) }
            return finish(request, result)
        case .started(let body)?:
            let result = await withCheckedContinuation { continuation in body(request.params) { continuation.resume(returning: $0) } }
            return finish(request, result)
        default:
            return nil
        }
    }

    private func finish(_ request: Request, _ result: Result<JSONValue, Error>) -> JSONValue? {
        switch result {
        case .success(let value):
            observer?(request.method, nil)
            guard let id = request.id else { return nil }
            return ResponseWriter.success(id: id, result: value)
        case .failure(let error):
            let rpcError = (error as? RPCError) ?? RPCError(.internalError, "Internal error")
            observer?(request.method, rpcError.code)
            guard let id = request.id else { return nil }
            return ResponseWriter.failure(id: id, error: rpcError)
        }
    }

    /// The outcome of ``answerImmediately(_:)``.
    public enum ImmediateOutcome: Sendable {
        case done(JSONValue?)
        case needsTask
    }
}
