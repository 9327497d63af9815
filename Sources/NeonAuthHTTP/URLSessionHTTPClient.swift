// neon-auth-agent's HTTP client: URLSession (FoundationNetworking, libcurl underneath). The
// only code in the package that imports Foundation; only the agent links it, so the neon-auth
// front-end never loads Foundation, libcurl, its TLS stack or ICU.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Synchronization
import JSONRPC
import NeonAuth

/// `HTTPClient` over `URLSession`, configured for credentials: TLS certificates and host names
/// always verified (never disabled), against the system's CAs or the agent's CA file (see
/// ``TransferTrust``); no cookies, no cache, no redirects followed (a redirect could carry
/// credentials elsewhere), each attempt abandoned after `connectTimeout` without progress, and
/// a hard total deadline even if the transfer stalls.
///
/// A TLS failure is thrown as `HTTPFailure.tls` (with the URL's `host[:port]`) and logged once
/// per host and reason at `warn` (what the TLS stack said included); the stack's message for
/// other failures is logged at `debug`. Logs name `host[:port]` and libcurl's message only,
/// never a URL's path or a request's data.
public final class URLSessionHTTPClient: HTTPClient {
    private let session: URLSession
    private let trust: TransferTrust?
    private let log: Logger?
    /// (host, reason) pairs already warned about.
    private let warned = Mutex<Set<String>>([])

    /// - Parameters:
    ///   - connectTimeout: seconds one attempt may go without progress (connecting included).
    ///   - trust: how the configured CA file reaches libcurl, when one is configured (`nil`:
    ///     the system's store).
    ///   - log: where TLS failures (and, at `debug`, other failures) are reported.
    public init(connectTimeout: Double, trust: TransferTrust? = nil, log: Logger? = nil) {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.httpCookieStorage = nil
        configuration.httpShouldSetCookies = false
        configuration.urlCache = nil
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        configuration.timeoutIntervalForRequest = connectTimeout
        configuration.httpMaximumConnectionsPerHost = 64  // one NeonCRM host serves every org
        session = URLSession(configuration: configuration, delegate: NoRedirects(), delegateQueue: nil)
        self.trust = trust
        self.log = log
    }

    /// POSTs `form`. See ``HTTPClient/postForm(url:form:timeout:)``.
    /// - Throws: `HTTPFailure`: `.tls` (with the URL's host; `ca-file-unusable`, without sending
    ///   anything, when the configured CA file cannot reach libcurl), `.timedOut`,
    ///   `.unreachable`, or `.cancelled` when the task is cancelled.
    public func postForm(url: String, form: [(String, String)], timeout: Double) async throws(HTTPFailure) -> HTTPResponse {
        if let unusable = trust?.unusable {
            // Fail closed: never send credentials over a connection that would not use the CA file.
            throw report(.tls(TLSFailure(reason: .caFileUnusable, host: "", detail: unusable)), url: url, detail: nil)
        }
        guard let target = URL(string: url) else { throw .unreachable }
        var request = URLRequest(url: target, cachePolicy: .reloadIgnoringLocalCacheData,
                                 timeoutInterval: min(session.configuration.timeoutIntervalForRequest, timeout))
        request.httpMethod = "POST"
        request.setValue("application/x-www-form-urlencoded; charset=utf-8", forHTTPHeaderField: "Content-Type")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        request.setValue("neon-auth", forHTTPHeaderField: "User-Agent")
        request.httpBody = Self.wipedOnRelease(form)
        let exchange = Exchange(trust: trust)
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<HTTPResponse, any Error>) in
                    exchange.start(continuation, session: session, request: request, deadline: timeout)
                }
            } onCancel: {
                exchange.finish(.failure(.cancelled))
            }
        } catch let failure as HTTPFailure {
            throw report(failure, url: url, detail: exchange.detail)
        } catch {
            throw .unreachable
        }
    }

    /// The encoded form (it holds the API key or a session ID) in memory of ours that is zeroed
    /// when Foundation lets go of it (the request and its task, at the end of the exchange),
    /// instead of a `String` and a `Data` freed as they are. Foundation still copies the body
    /// once (into `DispatchData`) and libcurl once more (its upload buffer); those are freed
    /// unzeroed, out of our reach.
    static func wipedOnRelease(_ form: [(String, String)]) -> Data {
        var encoded = FormEncoding.encodedBytes(form)
        defer { encoded.withUnsafeMutableBytes { if let base = $0.baseAddress { explicit_bzero(base, $0.count) } } }
        guard !encoded.isEmpty else { return Data() }
        let copy = UnsafeMutableRawPointer.allocate(byteCount: encoded.count, alignment: 1)
        encoded.withUnsafeBytes { copy.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return Data(bytesNoCopy: copy, count: encoded.count, deallocator: .custom { pointer, count in
            explicit_bzero(pointer, count)  // glibc: a zeroing the compiler may not drop
            pointer.deallocate()
        })
    }

    /// `failure` with the URL's host filled in (for `.tls`), after logging it: a TLS failure
    /// at `warn` once per host and reason, the HTTP stack's message for the others at `debug`.
    private func report(_ failure: HTTPFailure, url: String, detail: String?) -> HTTPFailure {
        let host = TLSFailure.host(of: url)
        guard case .tls(var tls) = failure else {
            if let detail, failure != .cancelled { log?.debug("HTTP to \(host): \(detail)") }
            return failure
        }
        tls.host = host
        let first = warned.withLock { $0.insert(host + " " + tls.reason.rawValue).inserted }
        let line = "TLS connection to NeonCRM at \(host) failed: \(tls.reason.rawValue)"
            + (tls.detail.isEmpty ? "" : " (\(tls.detail))") + "; not retried (-32007)"
        if first { log?.warn(line) } else { log?.debug(line) }
        return .tls(tls)
    }

    /// One POST: resumes its continuation exactly once, whichever comes first of the response,
    /// an error, the hard deadline or cancellation, and then stops the transfer.
    private final class Exchange: Sendable {
        private struct State: @unchecked Sendable {
            var continuation: CheckedContinuation<HTTPResponse, any Error>?
            var task: URLSessionDataTask?
            var finished: Result<HTTPResponse, HTTPFailure>?
            /// What the HTTP stack said about a failure (already cleaned), for logs.
            var detail: String?
        }
        private let state = Mutex(State())
        private let trust: TransferTrust?

        init(trust: TransferTrust?) { self.trust = trust }

        /// What the HTTP stack said about the failure, if anything (set before the continuation resumes).
        var detail: String? { state.withLock { $0.detail } }

        func start(_ continuation: CheckedContinuation<HTTPResponse, any Error>, session: URLSession, request: URLRequest,
                   deadline: Double) {
            let task = session.dataTask(with: request) { [self] data, response, error in
                let code = (error as? URLError)?.code
                if code != .cancelled, let unapplied = trust?.unapplied() {
                    // A CA file was configured but did not reach libcurl: fail closed, whatever came back.
                    finish(.failure(.tls(TLSFailure(reason: .caFileUnusable, host: "", detail: unapplied))))
                    return
                }
                if let error {
                    let detail = FailureClassifier.clean(error.localizedDescription)
                    if !detail.isEmpty { state.withLock { $0.detail = detail } }
                    finish(.failure(FailureClassifier.classify(code: code, description: detail)))
                    return
                }
                let status = (response as? HTTPURLResponse)?.statusCode ?? 0
                finish(.success(HTTPResponse(status: status, body: data.map { [UInt8]($0) } ?? [])))
            }
            let early = state.withLock { s -> Result<HTTPResponse, HTTPFailure>? in
                if let finished = s.finished { return finished }  // cancelled before the start
                s.continuation = continuation
                s.task = task
                return nil
            }
            if let early {
                continuation.resume(with: early.mapError { $0 as any Error })
                return
            }
            task.resume()
            // The hard deadline: URLSession's own timeouts reset on progress.
            DispatchQueue.global().asyncAfter(deadline: .now() + deadline) { [weak self] in
                self?.finish(.failure(.timedOut))
            }
        }

        func finish(_ result: Result<HTTPResponse, HTTPFailure>) {
            let taken = state.withLock { s -> (CheckedContinuation<HTTPResponse, any Error>?, URLSessionDataTask?) in
                guard s.finished == nil else { return (nil, nil) }
                s.finished = result
                defer {
                    s.continuation = nil
                    s.task = nil
                }
                return (s.continuation, s.task)
            }
            taken.0?.resume(with: result.mapError { $0 as any Error })
            if case .failure = result { taken.1?.cancel() }
        }
    }

    private final class NoRedirects: NSObject, URLSessionTaskDelegate, @unchecked Sendable {
        func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                        newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
            completionHandler(nil)
        }
    }
}

/// How the configured CA file reaches libcurl's transfers. neon-auth-agent makes it from
/// CNeonCurlTrust (linked into the agent only), which puts the CA file on every transfer from
/// its own `curl_multi_add_handle`; the client fails closed with `ca-file-unusable` when it
/// cannot, instead of trusting the system's store.
public struct TransferTrust: Sendable {
    /// Why the CA file cannot reach libcurl in this process at all (then nothing is sent), or `nil`.
    public var unusable: String?
    /// After an exchange: why the CA file did not reach its transfer (the exchange then fails),
    /// or `nil` when it did.
    public var unapplied: @Sendable () -> String?

    public init(unusable: String?, unapplied: @escaping @Sendable () -> String? = { nil }) {
        self.unusable = unusable
        self.unapplied = unapplied
    }

    /// The check after an exchange, from CNeonCurlTrust's counters.
    /// - Parameters: configured: whether a CA file or directory was configured; applied and
    ///   failed: transfers whose settings were applied, and where setting one failed, so far.
    /// - Returns: `nil` when nothing was configured or it was applied to every transfer so far;
    ///   else why not.
    public static func unappliedReason(configured: Bool, applied: UInt, failed: UInt) -> String? {
        guard configured else { return nil }
        if failed > 0 { return "libcurl refused the configured CA file or directory for a transfer" }
        if applied == 0 { return "the configured CA file did not reach libcurl: its transfers do not pass through neon-auth-agent" }
        return nil
    }
}

/// Sorts a failed exchange out from what URLSession reports. On Linux, every libcurl failure
/// but a refused connection and a timeout arrives as `URLError.unknown`, its description being
/// libcurl's error buffer (e.g. "SSL certificate problem: certificate has expired",
/// "SSL: no alternative certificate subject name matches target host name '127.0.0.1'",
/// "OpenSSL/3.0.19: error:0A00010B:SSL routines::wrong version number"), so the description
/// is what tells a TLS failure, and which, from an outage.
public enum FailureClassifier {
    /// The failure for URLSession's error `code` and `description`.
    public static func classify(code: URLError.Code?, description: String) -> HTTPFailure {
        if code == .timedOut { return .timedOut }
        if code == .cancelled { return .cancelled }
        if code == .cannotConnectToHost || code == .cannotFindHost { return .unreachable }
        guard let reason = tlsReason(description) else { return .unreachable }
        // The host is filled in by postForm, which knows the URL.
        return .tls(TLSFailure(reason: reason, host: "", detail: description))
    }

    /// The reason libcurl's message names, or `nil` when it is no TLS failure (including a
    /// connection closed or reset in the middle of a handshake: transient).
    public static func tlsReason(_ description: String) -> TLSFailureReason? {
        let text = description.lowercased()
        func has(_ words: String...) -> Bool { words.contains { text.contains($0) } }
        // "SSL certificate problem: <OpenSSL's X509_verify_cert_error_string>" (libcurl, OpenSSL).
        if has("certificate problem") {
            if has("self-signed certificate in certificate chain", "self signed certificate in certificate chain") {
                return .untrustedIssuer  // the chain ends at a root nobody trusts
            }
            if has("self-signed certificate", "self signed certificate") { return .selfSigned }
            if has("unable to get local issuer", "unable to get issuer", "unable to verify the first certificate") {
                return .untrustedIssuer
            }
            if has("certificate has expired") { return .expired }
            if has("not yet valid") { return .notYetValid }
            if has("hostname mismatch", "ip address mismatch") { return .hostNameMismatch }
            return .certificateInvalid
        }
        // libcurl's own host name check (OpenSSL backend), and GnuTLS's wording.
        if has("no alternative certificate subject name matches", "does not match target host name",
               "unable to obtain common name from peer certificate", "certificate owner does not match hostname") {
            return .hostNameMismatch
        }
        if has("certificate is expired", "certificate has expired") { return .expired }  // GnuTLS
        if has("certificate is not yet activated") { return .notYetValid }            // GnuTLS
        if has("peer certificate cannot be authenticated", "server certificate verification failed",
               "ssl peer certificate or ssh remote key was not ok") {
            return .certificateInvalid
        }
        // The CA file or directory could not be read (libcurl's CURLE_SSL_CACERT_BADFILE).
        if has("error setting certificate", "problem with the ssl ca cert", "error reading ca cert") {
            return .caFileUnusable
        }
        // Something that is not TLS answered (plain http on an https URL, another protocol).
        if has("wrong version number", "packet length too long", "unexpected tls packet", "record layer failure",
               "unknown protocol") {
            return .notTLS
        }
        // The peer went away mid-handshake: like a reset connection, transient.
        if has("ssl_error_syscall", "unexpected eof", "connection reset", "connection was reset", "broken pipe") {
            return nil
        }
        // Any other TLS-layer failure: alerts, no shared protocol version or cipher...
        if has("ssl routines", "openssl", "ssl_connect", "ssl connect error", "gnutls", "handshake", "tlsv1 alert",
               "tlsv13 alert", "sslv3 alert", "ssl:", "tls:") {
            return .handshakeFailed
        }
        return nil
    }

    /// `description` without control characters, trimmed, at most 512 UTF-8 bytes (on a
    /// character boundary): fit for a log line.
    public static func clean(_ description: String) -> String {
        var out = ""
        var bytes = 0
        for scalar in description.unicodeScalars {
            let character: Unicode.Scalar = scalar.properties.generalCategory == .control ? " " : scalar
            let size = String(character).utf8.count
            if bytes + size > 512 { break }
            out.unicodeScalars.append(character)
            bytes += size
        }
        return out.trimmingCharacters(in: .whitespaces)
    }
}
