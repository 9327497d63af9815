#if canImport(Glibc)
import Glibc
#endif
import CNeonHTTP
import JSONRPC
import Synchronization

/// `HTTPClient` over neon-auth's HTTP plugin, `libNeonAuthHTTP.so` (URLSession, see
/// Sources/CNeonHTTP/include/neon_http_plugin.h for the C ABI and its lifetimes).
///
/// The plugin is loaded with `dlopen(RTLD_NOW | RTLD_LOCAL)` on the first `postForm`, not
/// before, and only once (thread-safely; a failure is remembered too, so a restart is needed
/// after installing the plugin). Until then the process has not loaded Foundation,
/// FoundationNetworking, libcurl or ICU. Search order: `explicitPath` if given, then
/// `<directory of the executable>/libNeonAuthHTTP.so`, then
/// `<parent of that directory>/lib/neon-auth/libNeonAuthHTTP.so` (the executable's path is
/// `realpath("/proc/self/exe")`). The first path that exists is the one loaded.
///
/// Behaviour of the plugin: TLS verification as the system does it (never disabled), no
/// cookies, no cache, no redirects followed (a redirect could carry credentials elsewhere),
/// each attempt gives up after `connectTimeout` without progress, and the total deadline holds
/// even if the transfer stalls.
public final class PluginHTTPClient: HTTPClient {
    private let connectTimeout: Double
    /// Where the plugin is looked for, in order.
    public let candidates: [String]
    private let log: Logger?
    private let state = Mutex<LoadState>(.notLoaded)

    private enum LoadState {
        case notLoaded
        case loaded(PluginTable)
        case failed(HTTPPluginFailure)
    }

    /// Creates the client; loads nothing.
    /// - Parameters:
    ///   - connectTimeout: seconds one attempt may go without progress (connecting included).
    ///   - explicitPath: a plugin path tried before the default locations (tests).
    ///   - searchDefaultLocations: whether to look beside the executable and in
    ///     `../lib/neon-auth/` (tests turn it off to see a missing plugin).
    ///   - log: where a failure to load the plugin is reported (once, at `error`).
    public init(connectTimeout: Double, explicitPath: String? = nil, searchDefaultLocations: Bool = true, log: Logger? = nil) {
        self.connectTimeout = connectTimeout
        self.candidates = (explicitPath.map { [$0] } ?? []) + (searchDefaultLocations ? Self.defaultLocations() : [])
        self.log = log
    }

    /// Makes the process environment safe for the HTTP plugin's libcurl. Call once at start-up,
    /// before any thread exists (`setenv` is not thread-safe):
    /// - loopback hosts are added to `no_proxy`/`NO_PROXY`, so plain http (allowed only to
    ///   loopback, for tests) never goes through a proxy named by `http_proxy`/`ALL_PROXY` in
    ///   clear text (https through a proxy stays end-to-end TLS and is left alone);
    /// - `URLSessionDebugLibcurl` and `URLSessionDebug` are removed: they make Foundation print
    ///   request and response bodies (the API key, session IDs) to stderr.
    public static func prepareProcessEnvironment() {
        // libcurl reads `no_proxy` first, then `NO_PROXY`; `*` (the whole value) bypasses every
        // proxy already. Both variables get the loopback hosts plus the value libcurl would use.
        let loopback = "localhost,127.0.0.0/8,::1"
        func variable(_ name: String) -> String { getenv(name).map { String(cString: $0) } ?? "" }
        let effective = variable("no_proxy").isEmpty ? variable("NO_PROXY") : variable("no_proxy")
        if effective.trimmingSpaces != "*" {
            let value = effective.isEmpty ? loopback : loopback + "," + effective
            setenv("no_proxy", value, 1)
            setenv("NO_PROXY", value, 1)
        }
        unsetenv("URLSessionDebugLibcurl")
        unsetenv("URLSessionDebug")
    }

    /// The default plugin locations: beside the executable, then `../lib/neon-auth/`.
    /// - Returns: absolute paths (empty if `/proc/self/exe` cannot be resolved).
    public static func defaultLocations() -> [String] {
        guard let resolved = realpath("/proc/self/exe", nil) else { return [] }
        let exe = String(cString: resolved)
        free(resolved)
        let directory = parent(of: exe)
        let prefix = parent(of: directory)
        return [join(directory, NEON_HTTP_PLUGIN_FILE_NAME),
                join(join(prefix, "lib/neon-auth"), NEON_HTTP_PLUGIN_FILE_NAME)]
    }

    /// A warning for the start-up log when no plugin file exists where it is looked for
    /// (`access(2)` only: nothing is loaded).
    /// - Returns: the warning (paths only), or `nil` when one of the candidates exists.
    public func missingPluginWarning() -> String? {
        if candidates.contains(where: { access($0, F_OK) == 0 }) { return nil }
        return "HTTP plugin libNeonAuthHTTP.so not found (searched: \(candidates.joined(separator: ", "))): "
            + "openSession will fail until it is installed; sign is unaffected"
    }

    /// POSTs `form` through the plugin, loading it first if this is the first call.
    /// - Parameters: see ``HTTPClient/postForm(url:form:timeout:)``; `timeout` is the total deadline in seconds.
    /// - Returns: the status and body of whatever NeonCRM answered (redirects are not followed).
    /// - Throws: `HTTPFailure`: `.pluginUnavailable` when the plugin cannot be loaded (no
    ///   request is sent), `.timedOut`, `.unreachable`, or `.cancelled` when the task is cancelled.
    public func postForm(url: String, form: [(String, String)], timeout: Double) async throws(HTTPFailure) -> HTTPResponse {
        let table: PluginTable
        switch plugin() {
        case .success(let loaded): table = loaded
        case .failure(let failure): throw .pluginUnavailable(failure)
        }
        let exchange = PluginExchange(table: table)
        defer { exchange.release() }
        let body = Array(FormEncoding.encode(form).utf8)
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<HTTPResponse, any Error>) in
                    exchange.start(continuation, url: url, body: body, connectTimeout: connectTimeout, totalTimeout: timeout)
                }
            } onCancel: {
                exchange.cancel()
            }
        } catch let failure as HTTPFailure {
            throw failure
        } catch {
            throw .unreachable
        }
    }

    /// The plugin's function table, loading it on the first call.
    private func plugin() -> Result<PluginTable, HTTPPluginFailure> {
        state.withLock { state in
            switch state {
            case .loaded(let table): return .success(table)
            case .failed(let failure): return .failure(failure)
            case .notLoaded:
                let result = Self.load(candidates)
                switch result {
                case .success(let table): state = .loaded(table)
                case .failure(let failure):
                    state = .failed(failure)
                    log?.error(failure.message)
                }
                return result
            }
        }
    }

    /// Loads the first candidate that exists and checks its function table.
    private static func load(_ candidates: [String]) -> Result<PluginTable, HTTPPluginFailure> {
        var searched: [String] = []
        for path in candidates {
            searched.append(path)
            guard access(path, F_OK) == 0 else { continue }
            func failure(_ reason: String) -> Result<PluginTable, HTTPPluginFailure> {
                .failure(HTTPPluginFailure(searched: searched, reason: reason))
            }
            // Never dlclose()d, even after a failed check: Swift libraries cannot be unloaded safely.
            guard let library = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
                return failure("could not be loaded from \(path): \(loaderMessage())")
            }
            guard let symbol = dlsym(library, NEON_HTTP_PLUGIN_ENTRY_SYMBOL) else {
                return failure("at \(path) has no entry point \(NEON_HTTP_PLUGIN_ENTRY_SYMBOL)")
            }
            let entry = unsafeBitCast(symbol, to: neon_http_plugin_entry.self)
            guard let table = entry() else { return failure("at \(path) returned no function table") }
            let version = table.pointee.abi_version
            guard version == UInt32(NEON_HTTP_PLUGIN_ABI_VERSION) else {
                return failure("at \(path) has ABI version \(version); this neon-auth needs version \(NEON_HTTP_PLUGIN_ABI_VERSION)")
            }
            guard table.pointee.size >= UInt32(MemoryLayout<neon_http_plugin>.size), let post = table.pointee.post_form,
                  let cancel = table.pointee.cancel, let release = table.pointee.release else {
                return failure("at \(path) has an incomplete function table")
            }
            return .success(PluginTable(postForm: post, cancel: cancel, release: release))
        }
        return .failure(HTTPPluginFailure(searched: searched, reason: "was not found"))
    }

    /// `dlerror()`'s message, capped (it names files and symbols, never data).
    private static func loaderMessage() -> String {
        guard let message = dlerror() else { return "unknown error" }
        return String(String(cString: message).prefix(400))
    }

    private static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    private static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }
}

/// The plugin's functions, checked non-NULL. Plain C function pointers into a library that is
/// never unloaded.
private struct PluginTable: @unchecked Sendable {
    let postForm: @convention(c) (UnsafePointer<CChar>?, UnsafePointer<UInt8>?, Int, Double, Double,
                                  UnsafeMutableRawPointer?, neon_http_completion?) -> OpaquePointer?
    let cancel: @convention(c) (OpaquePointer?) -> Void
    let release: @convention(c) (OpaquePointer?) -> Void
}

/// One POST through the plugin, from `start` to `release`: resumes its continuation exactly
/// once, forwards task cancellation, and gives the plugin's handle back exactly once.
private final class PluginExchange: Sendable {
    private struct Handle: @unchecked Sendable {
        var task: OpaquePointer?
        var cancelRequested = false
        var released = false
    }

    private let table: PluginTable
    /// Guards the plugin's handle. The plugin may call the completion from inside `cancel`, so
    /// the completion never takes this lock.
    private let handle = Mutex(Handle())
    private let continuation = Mutex<CheckedContinuation<HTTPResponse, any Error>?>(nil)

    init(table: PluginTable) {
        self.table = table
    }

    /// Starts the POST; the outcome resumes `continuation`.
    func start(_ continuation: CheckedContinuation<HTTPResponse, any Error>, url: String, body: [UInt8],
               connectTimeout: Double, totalTimeout: Double) {
        self.continuation.withLock { $0 = continuation }
        if handle.withLock({ $0.cancelRequested }) {
            complete(.failure(.cancelled))
            return
        }
        // The plugin holds this retain until it calls the completion, exactly once.
        let context = Unmanaged.passRetained(self).toOpaque()
        let task = url.withCString { url in
            body.withUnsafeBufferPointer { body in
                table.postForm(url, body.baseAddress, body.count, connectTimeout, totalTimeout, context, pluginCompletion)
            }
        }
        guard let task else { return }
        handle.withLock { h in
            if h.released {
                table.release(task)  // the completion already ran and the caller has moved on
            } else {
                h.task = task
                if h.cancelRequested { table.cancel(task) }
            }
        }
    }

    /// Forwards task cancellation to the plugin (or prevents the start).
    func cancel() {
        handle.withLock { h in
            h.cancelRequested = true
            if let task = h.task { table.cancel(task) }
        }
    }

    /// Gives the plugin's handle back; after the continuation has resumed.
    func release() {
        handle.withLock { h in
            h.released = true
            if let task = h.task {
                h.task = nil
                table.release(task)
            }
        }
    }

    /// Resumes the continuation if nobody has yet.
    func complete(_ result: Result<HTTPResponse, HTTPFailure>) {
        let taken = continuation.withLock { c -> CheckedContinuation<HTTPResponse, any Error>? in
            defer { c = nil }
            return c
        }
        taken?.resume(with: result.mapError { $0 as any Error })
    }
}

/// The C completion: balances the retain taken in `PluginExchange.start` and copies the body.
private let pluginCompletion: neon_http_completion = { context, status, body, length, failure in
    guard let context else { return }
    let exchange = Unmanaged<PluginExchange>.fromOpaque(context).takeRetainedValue()
    switch failure {
    case NEON_HTTP_FAILURE_NONE:
        let bytes = body.map { Array(UnsafeBufferPointer(start: $0, count: length)) } ?? []
        exchange.complete(.success(HTTPResponse(status: Int(status), body: bytes)))
    case NEON_HTTP_FAILURE_TIMED_OUT:
        exchange.complete(.failure(.timedOut))
    case NEON_HTTP_FAILURE_CANCELLED:
        exchange.complete(.failure(.cancelled))
    default:
        exchange.complete(.failure(.unreachable))
    }
}

private extension String {
    /// Without leading and trailing spaces.
    var trimmingSpaces: Substring {
        var text = Substring(self)
        while text.first == " " { text.removeFirst() }
        while text.last == " " { text.removeLast() }
        return text
    }
}
