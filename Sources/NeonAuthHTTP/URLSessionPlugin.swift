// libNeonAuthHTTP.so: neon-auth's HTTP client over URLSession (FoundationNetworking), behind
// the C ABI of Sources/CNeonHTTP/include/neon_http_plugin.h. Nothing else in neon-auth imports
// Foundation or FoundationNetworking, so a process that never makes an API v1 call never
// loads them (nor libcurl, its TLS stack or ICU).
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import CNeonHTTP
import Synchronization

/// The plugin's entry point (`NEON_HTTP_PLUGIN_ENTRY_SYMBOL`).
/// - Returns: the function table (`abi_version` = `NEON_HTTP_PLUGIN_ABI_VERSION`), static for
///   the life of the process. Creates no network state.
@_cdecl("neon_auth_http_plugin_v1")
public func neonAuthHTTPPluginV1() -> UnsafePointer<neon_http_plugin> {
    UnsafePointer(pluginTable)
}

/// The one function table, allocated on first use and never freed.
// Written once (by the lazy initializer, which runs once), then only read.
nonisolated(unsafe) private let pluginTable: UnsafeMutablePointer<neon_http_plugin> = {
    let table = UnsafeMutablePointer<neon_http_plugin>.allocate(capacity: 1)
    table.initialize(to: neon_http_plugin(
        abi_version: UInt32(NEON_HTTP_PLUGIN_ABI_VERSION),
        size: UInt32(MemoryLayout<neon_http_plugin>.size),
        post_form: { url, body, bodyLength, connectTimeout, totalTimeout, context, completion in
            let exchange = Exchange(context: context, completion: completion)
            let handle = Unmanaged.passRetained(exchange).toOpaque()  // the caller's reference
            let target = url.map { String(cString: $0) } ?? ""
            let payload = body.map { Data(UnsafeBufferPointer(start: $0, count: bodyLength)) } ?? Data()
            URLSessionPoster.shared.post(exchange, url: target, body: payload, connectTimeout: connectTimeout, totalTimeout: totalTimeout)
            return OpaquePointer(handle)
        },
        cancel: { task in
            guard let task else { return }
            Unmanaged<Exchange>.fromOpaque(UnsafeRawPointer(task)).takeUnretainedValue().cancel()
        },
        release: { task in
            guard let task else { return }
            Unmanaged<Exchange>.fromOpaque(UnsafeRawPointer(task)).release()
        }))
    return table
}()

/// One exchange: reports its outcome to the C completion exactly once, whichever comes first
/// of the response, an error, the hard deadline or `cancel`.
final class Exchange: @unchecked Sendable {
    /// The C context and callback are the caller's; the lock below guards every access.
    private struct State: @unchecked Sendable {
        var context: UnsafeMutableRawPointer?
        var completion: neon_http_completion?
        var task: URLSessionDataTask?
        var cancelled = false
    }
    private let state: Mutex<State>

    init(context: UnsafeMutableRawPointer?, completion: neon_http_completion?) {
        state = Mutex(State(context: context, completion: completion))
    }

    /// Remembers the transfer so that `cancel` and the deadline can stop it.
    /// - Returns: `false` when the exchange has already ended (the transfer must not start).
    func attach(_ task: URLSessionDataTask) -> Bool {
        state.withLock { s -> Bool in
            s.task = task
            return s.completion != nil
        }
    }

    /// Calls the completion if nobody has yet (outside the lock: it may re-enter `cancel`).
    /// - Parameters: status is the HTTP status (0 on failure); failure is a `NEON_HTTP_FAILURE_*`.
    func finish(status: Int32, body: Data, failure: Int32) {
        let taken = state.withLock { s -> (neon_http_completion, UnsafeMutableRawPointer?)? in
            guard let completion = s.completion else { return nil }
            s.completion = nil
            defer { s.context = nil }
            return (completion, s.context)
        }
        guard let (completion, context) = taken else { return }
        if body.isEmpty {
            completion(context, status, nil, 0, failure)
        } else {
            body.withUnsafeBytes { bytes in
                completion(context, status, bytes.bindMemory(to: UInt8.self).baseAddress, bytes.count, failure)
            }
        }
    }

    /// Ends the exchange as `failure` (if it has not ended) and stops the transfer.
    func abandon(_ failure: Int32) {
        finish(status: 0, body: Data(), failure: failure)
        state.withLock { $0.task }?.cancel()
    }

    func cancel() { abandon(NEON_HTTP_FAILURE_CANCELLED) }
}

/// `URLSession` configured for credentials: TLS verification as the system does it (never
/// disabled), no cookies, no cache, no redirects followed (a redirect could carry credentials
/// elsewhere), and a hard deadline even if the transfer stalls.
final class URLSessionPoster: Sendable {
    static let shared = URLSessionPoster()

    /// Created on first use, with the connect timeout of that first request (neon-auth passes
    /// the same `--connect-timeout` on every call).
    private let sessionBox = Mutex<URLSession?>(nil)

    private func session(connectTimeout: Double) -> URLSession {
        sessionBox.withLock { box in
            if let session = box { return session }
            let configuration = URLSessionConfiguration.ephemeral
            configuration.httpCookieStorage = nil
            configuration.httpShouldSetCookies = false
            configuration.urlCache = nil
            configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
            configuration.timeoutIntervalForRequest = connectTimeout
            configuration.httpMaximumConnectionsPerHost = 64  // one NeonCRM host serves every org
            let session = URLSession(configuration: configuration, delegate: NoRedirects(), delegateQueue: nil)
            box = session
            return session
        }
    }

    /// Starts the POST; `exchange` hears the outcome exactly once.
    /// - Parameters: timeouts in seconds; an unparsable `url` ends the exchange as unreachable.
    func post(_ exchange: Exchange, url: String, body: Data, connectTimeout: Double, totalTimeout: Double) {
        guard let target = URL(string: url) else {
            exchange.finish(status: 0, body: Data(), failure: NEON_HTTP_FAILURE_UNREACHABLE)
            return
        }
        var request = URLRequest(url: target, cachePolicy: .reloadIgnoringLocalCacheData,
                                 timeoutInterval: min(connectTimeout, totalTimeout))
        request.httpMethod = "POST"
        request.setValue("application/x-www-form-urlencoded; charset=utf-8", forHTTPHeaderField: "Content-Type")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        request.setValue("neon-auth", forHTTPHeaderField: "User-Agent")
        request.httpBody = body
        let task = session(connectTimeout: connectTimeout).dataTask(with: request) { data, response, error in
            if let error {
                let code = (error as? URLError)?.code
                exchange.finish(status: 0, body: Data(), failure: code == .timedOut ? NEON_HTTP_FAILURE_TIMED_OUT
                                : code == .cancelled ? NEON_HTTP_FAILURE_CANCELLED : NEON_HTTP_FAILURE_UNREACHABLE)
                return
            }
            let status = (response as? HTTPURLResponse)?.statusCode ?? 0
            exchange.finish(status: Int32(clamping: status), body: data ?? Data(), failure: NEON_HTTP_FAILURE_NONE)
        }
        guard exchange.attach(task) else { return }
        task.resume()
        // The hard deadline: URLSession's own timeouts reset on progress.
        DispatchQueue.global().asyncAfter(deadline: .now() + totalTimeout) {
            exchange.abandon(NEON_HTTP_FAILURE_TIMED_OUT)
        }
    }

    private final class NoRedirects: NSObject, URLSessionTaskDelegate, @unchecked Sendable {
        func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                        newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
            completionHandler(nil)
        }
    }
}
