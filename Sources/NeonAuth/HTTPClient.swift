import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Synchronization

/// An HTTP response: status code and body bytes.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var body: [UInt8]
    public init(status: Int, body: [UInt8]) {
        self.status = status
        self.body = body
    }
}

/// Why an HTTP exchange produced no response.
public enum HTTPFailure: Error, Sendable, Equatable {
    /// The deadline passed before a whole response arrived.
    case timedOut
    /// No connection could be made or it broke (refused, reset, DNS, TLS).
    case unreachable
    /// The exchange was cancelled (shutdown).
    case cancelled
}

/// Sends form-encoded POST requests. The seam that tests replace.
public protocol HTTPClient: Sendable {
    /// POSTs `form` as `application/x-www-form-urlencoded` to `url`.
    /// - Parameters:
    ///   - url: an absolute http(s) URL (no secrets in it).
    ///   - form: name/value pairs, percent-encoded by the client.
    ///   - timeout: the total deadline in seconds, connection included.
    /// - Throws: `HTTPFailure`.
    func postForm(url: String, form: [(String, String)], timeout: Double) async throws(HTTPFailure) -> HTTPResponse
}

/// Form encoding (`application/x-www-form-urlencoded`) with strict percent-encoding: every
/// byte outside RFC 3986's unreserved set is escaped, so keys holding `+`, `&`, `=`, `%`,
/// `:` or non-ASCII arrive intact.
public enum FormEncoding {
    private static let unreserved = CharacterSet(charactersIn:
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    /// `name=value&...`, each part percent-encoded as UTF-8.
    public static func encode(_ form: [(String, String)]) -> String {
        form.map { escape($0.0) + "=" + escape($0.1) }.joined(separator: "&")
    }

    /// One percent-encoded component.
    public static func escape(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? ""
    }
}

/// `HTTPClient` over URLSession (FoundationNetworking): TLS verification as the system does
/// it (never disabled), no cookies, no cache, no redirects followed (a redirect could carry
/// credentials elsewhere), and a hard deadline even if the transfer stalls.
public final class URLSessionHTTPClient: HTTPClient {
    private let connectTimeout: Double
    /// Created on first use, so that `sign`-only sessions never pay for networking set-up.
    private let sessionBox = Mutex<URLSession?>(nil)

    /// - Parameter connectTimeout: seconds one attempt may go without progress (connecting included).
    public init(connectTimeout: Double) {
        self.connectTimeout = connectTimeout
    }

    private var session: URLSession {
        sessionBox.withLock { box in
            if let session = box { return session }
            let configuration = URLSessionConfiguration.ephemeral
            configuration.httpCookieStorage = nil
            configuration.httpShouldSetCookies = false
            configuration.urlCache = nil
            configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
            configuration.timeoutIntervalForRequest = connectTimeout
            configuration.httpMaximumConnectionsPerHost = 8
            let session = URLSession(configuration: configuration, delegate: NoRedirects(), delegateQueue: nil)
            box = session
            return session
        }
    }

    public func postForm(url: String, form: [(String, String)], timeout: Double) async throws(HTTPFailure) -> HTTPResponse {
        guard let target = URL(string: url) else { throw .unreachable }
        var request = URLRequest(url: target, cachePolicy: .reloadIgnoringLocalCacheData,
                                 timeoutInterval: min(connectTimeout, timeout))
        request.httpMethod = "POST"
        request.setValue("application/x-www-form-urlencoded; charset=utf-8", forHTTPHeaderField: "Content-Type")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        request.setValue("neon-auth", forHTTPHeaderField: "User-Agent")
        request.httpBody = Data(FormEncoding.encode(form).utf8)

        let box = Mutex<CheckedContinuation<HTTPResponse, any Error>?>(nil)
        let taskBox = Mutex<URLSessionDataTask?>(nil)
        @Sendable func finish(_ result: Result<HTTPResponse, HTTPFailure>) {
            guard let continuation = box.withLock({ c -> CheckedContinuation<HTTPResponse, any Error>? in
                defer { c = nil }
                return c
            }) else { return }
            continuation.resume(with: result.mapError { $0 as any Error })
        }
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<HTTPResponse, any Error>) in
                    box.withLock { $0 = continuation }
                    let task = self.session.dataTask(with: request) { data, response, error in
                        if let error {
                            let code = (error as? URLError)?.code
                            finish(.failure(code == .timedOut ? .timedOut : code == .cancelled ? .cancelled : .unreachable))
                            return
                        }
                        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
                        finish(.success(HTTPResponse(status: status, body: [UInt8](data ?? Data()))))
                    }
                    taskBox.withLock { $0 = task }
                    task.resume()
                    // The hard deadline: URLSession's own timeouts reset on progress.
                    DispatchQueue.global().asyncAfter(deadline: .now() + timeout) {
                        finish(.failure(.timedOut))
                        taskBox.withLock { $0?.cancel() }
                    }
                }
            } onCancel: {
                finish(.failure(.cancelled))
                taskBox.withLock { $0?.cancel() }
            }
        } catch let failure as HTTPFailure {
            throw failure
        } catch {
            throw .unreachable
        }
    }

    private final class NoRedirects: NSObject, URLSessionTaskDelegate, @unchecked Sendable {
        func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                        newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
            completionHandler(nil)
        }
    }
}
